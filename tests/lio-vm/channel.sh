#!/bin/sh
# The guest side of the lio-vm command channel (docs/testing-lio-vm.md): serves the host
# harness over the virtio-serial port named "isctl.cmd", one request line in, a framed
# reply out, until the port closes.
#
#   request:  <id> <base64 of a shell script>\n
#   reply:    @@BEGIN <id>\n <base64 of stdout> @@STDERR <id>\n <base64 of stderr>
#             @@END <id> <exit status>\n
#
# Base64 lines never start with "@", so the markers cannot be forged by command output.
# Plain POSIX sh with base64/cat/mkdir: it runs under busybox as the VM's /init, and under
# the host's own dash and coreutils when systemd is PID 1 (lio-vm-channel.service).

say() { echo "lio-vm: $*"; }

port=""
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = isctl.cmd ] && port=/dev/${p##*/}
done
if [ -z "$port" ]; then
  say "FAILED: no virtio-serial port named isctl.cmd"
  exit 1
fi

exec 3<>"$port"
say "serving commands on $port"
echo "@@READY $(uname -r)" >&3

mkdir -p /run/cmd
while read -r id script <&3; do
  echo "$script" | base64 -d > /run/cmd/script.sh
  (cd / && exec sh /run/cmd/script.sh) </dev/null >/run/cmd/out 2>/run/cmd/err
  status=$?
  {
    echo "@@BEGIN $id"
    base64 /run/cmd/out
    echo "@@STDERR $id"
    base64 /run/cmd/err
    echo "@@END $id $status"
  } >&3
done
say "command channel closed"
