#!/usr/bin/env bash
# Runs isctl's real-kernel (LIO in a QEMU VM) tests and prints their total wall time.
#
#   tests/lio-vm/run.sh                      # all of them
#   tests/lio-vm/run.sh readonly             # those whose name contains "readonly"
#   LIO_VM_KEEP=1 tests/lio-vm/run.sh ...    # keep every VM's console log and share
#
# Needs: qemu-system-x86 busybox-static kmod dpkg apt (to fetch the kernel package once),
# libiscsi-bin qemu-utils qemu-block-extra, and the Rust target x86_64-unknown-linux-gnu.
# See docs/testing-lio-vm.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo test --quiet --manifest-path tests/lio-vm/vmtool/Cargo.toml --target-dir target/lio-vm/cargo
rc=$?
if [ $rc -eq 0 ]; then
  # --release like tests/run.sh, so both share one build of the test crate.
  cargo test --release --test lio_vm -- --include-ignored "$@"
  rc=$?
fi
echo "lio-vm: real-kernel tests finished in $(( $(date +%s) - start )) s (exit $rc)"
exit $rc
