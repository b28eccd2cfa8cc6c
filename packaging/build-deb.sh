#!/usr/bin/env bash
# Build the Debian package: target/debian/isctl_<version>_<arch>.deb
# Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb" >&2; exit 1; }
cargo build --release --locked
rm -rf target/packaging
./target/release/isctl generate-docs target/packaging
cargo deb --no-build
