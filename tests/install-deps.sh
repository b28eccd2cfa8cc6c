#!/usr/bin/env bash
# Install the system packages isctl's tests need, on a fresh Debian 12 machine.
# Idempotent: packages already present are left alone. Needs root (or sudo).
#
#   qemu-system-x86            boots the real LIO kernel for the VM tests
#   qemu-utils, qemu-block-extra  qemu-img/qemu-io with QEMU's iscsi:// driver
#   busybox-static, kmod, cpio   the VM's userland, module dependencies, initramfs
#   libiscsi-bin               iscsi-ls/-inq/-readcapacity16/-perf and iscsi-test-cu
#   tgt                        the peer target for the engine benchmark
#   open-iscsi, fio            the Linux initiator's userspace and fio, run in the VM from the
#                              host's root (tests/kernel_initiator.rs) and by the benchmark
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to apt-get install" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

PKGS=(qemu-system-x86 qemu-block-extra busybox-static kmod cpio libiscsi-bin tgt systemd open-iscsi fio targetcli-fb dbus-daemon python3-prometheus-client)
missing=()
for p in "${PKGS[@]}" qemu-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# qemu-block-extra (the iscsi:// driver) must match qemu-utils' version exactly. Debian 12
# machines may carry a newer qemu-utils from backports, which bookworm's qemu-block-extra
# conflicts with; apt then removes it, and qemu-utils is reinstalled from bookworm below.
if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
  missing+=(qemu-block-extra)
fi
# The real-kernel VM tests (tests/lio_vm.rs) fetch Debian's kernel package once with
# `apt-get download` (cached under target/lio-vm/kernel/), which needs the package lists
# that a fresh machine or container may not have yet.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  echo "install-deps: no Debian package lists (the VM tests download their kernel): apt-get update"
  $SUDO apt-get update -q
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -q
# Step 1: everything but qemu-utils (this may remove a backports qemu-utils).
$SUDO apt-get install -y -q "${PKGS[@]}"
# Step 2: qemu-utils from the same release as qemu-block-extra.
want=$(dpkg-query -W -f='${Version}' qemu-block-extra)
$SUDO apt-get install -y -q --allow-downgrades "qemu-utils=$want"
qemu-img --version | head -1
