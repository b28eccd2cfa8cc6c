#!/bin/busybox sh
# /init of isctl's real-kernel test VM (docs/testing-lio-vm.md).
#
# Brings up a Debian kernel with LIO under QEMU, then serves the host harness over a
# virtio-serial port named "isctl.cmd": one request line in, a framed reply out.
#
#   request:  <id> <base64 of a shell script>\n
#   reply:    @@BEGIN <id>\n <base64 of stdout> @@STDERR <id>\n <base64 of stderr>
#             @@END <id> <exit status>\n
#
# Base64 lines never start with "@", so the markers cannot be forged by command output.
# The serial console (ttyS0) carries the kernel log and this script's own messages; the
# harness keeps it in console.log.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /run /srv /var/target/pr
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /run
# Backing files of file extents (sparse: only written blocks use memory).
mount -t tmpfs -o size=75% tmpfs /srv
dmesg -n 1

say() { echo "lio-vm: $*"; }

# Module order matters only where modprobe cannot infer it: crc32c_generic must be present
# before the first iSCSI login (no SSE4.2 under TCG, so crc32c-intel cannot load).
for m in $(cat /etc/lio-vm/modules); do
  modprobe "$m" || say "FAILED modprobe $m"
done
# RAM block devices for block extents: /dev/ram0../dev/ram3, 64 MiB each.
modprobe brd rd_nr=4 rd_size=65536 || say "FAILED modprobe brd"

mount -t configfs none /sys/kernel/config || say "FAILED mount configfs"
# The host's share (a per-VM directory: models in, dumps and transcripts out).
mkdir -p /mnt/host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/host || say "FAILED mount 9p share"
mount -t tracefs nodev /sys/kernel/tracing || say "FAILED mount tracefs"

# The host's root, when the harness shares it (VmOptions::share_host_root): read-only 9p at
# /host.ro, made writable for the host's tools by an overlay with a tmpfs upper layer at
# /host (nothing reaches the host). `in-host CMD...` runs a host command chrooted there,
# with this VM's /proc, /sys (configfs), /dev, /tmp, /srv and the share bound in.
if grep -qx hostroot /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null; then
  mkdir -p /host.ro /host /run/hostrw
  if mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot /host.ro; then
    modprobe overlay || say "FAILED modprobe overlay"
    mount -t tmpfs -o mode=755 tmpfs /run/hostrw
    mkdir -p /run/hostrw/upper /run/hostrw/work
    mount -t overlay -o lowerdir=/host.ro,upperdir=/run/hostrw/upper,workdir=/run/hostrw/work overlay /host \
      || say "FAILED mount overlay on the host root"
    mount -t proc proc /host/proc
    mount -t sysfs sys /host/sys
    mount -t configfs none /host/sys/kernel/config
    mount -t devtmpfs dev /host/dev
    mkdir -p /host/dev/pts /host/dev/shm
    mount -t devpts devpts /host/dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
    mount --bind /tmp /host/tmp
    mount -t tmpfs -o mode=755 tmpfs /host/run
    mkdir -p /host/run/lock /host/srv /host/mnt/host
    mount --bind /srv /host/srv
    mount --bind /mnt/host /host/mnt/host
    cat > /bin/in-host <<'EOS'
#!/bin/busybox sh
exec chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
EOS
    chmod 755 /bin/in-host
    say "host root shared at /host (in-host CMD runs host tools)"
  else
    say "FAILED mount 9p hostroot"
  fi
fi

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

[ -d /sys/kernel/config/target ] || say "FAILED: /sys/kernel/config/target is missing"

port=""
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = isctl.cmd ] && port=/dev/${p##*/}
done
if [ -z "$port" ]; then
  say "FAILED: no virtio-serial port named isctl.cmd"
  poweroff -f
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
poweroff -f
