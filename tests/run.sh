#!/usr/bin/env bash
# isctl's test command (README.md "Run the tests"): everything, on a fresh Debian 12 machine.
#
# 1. installs the system packages the tests drive (tests/install-deps.sh: QEMU, libiscsi's
#    initiators and conformance suite, busybox, tgt);
# 2. runs every test, including the ones marked #[ignore = "needs …"]: real initiators
#    against the userspace engine, libiscsi's conformance suite, and the real-kernel LIO
#    tests in QEMU VMs. A missing tool makes those tests fail, never skip.
#
# Extra arguments go to the test binaries (e.g. `bash tests/run.sh lio_vm`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-deps.sh

start=$(date +%s)
# Release build: the engine moves real data for the initiators and the conformance suite.
cargo test --release --locked --no-fail-fast -- --include-ignored "$@"
echo "tests/run.sh: all tests passed in $(( $(date +%s) - start )) s"
