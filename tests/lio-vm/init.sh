#!/bin/busybox sh
# /init of isctl's real-kernel test VM (docs/testing-lio-vm.md).
#
# Brings up a Debian kernel with LIO under QEMU, then serves the host harness over a
# virtio-serial port named "isctl.cmd" (the protocol: /etc/lio-vm/channel.sh, from
# tests/lio-vm/channel.sh). With `lio_vm.init=systemd` on the kernel command line it
# instead boots the host's systemd as PID 1 on the shared host root (see boot_systemd).
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

# systemd as PID 1 (VmOptions::systemd_setup): the overlay on the host's root at /host
# becomes the root, so the guest runs the host's own systemd, journald and systemctl.
# Everything staged here lands in the overlay's tmpfs upper layer (nothing reaches the
# host): isctl and vmtool under /usr/local/lib/lio-vm (not on the default PATH: a test
# installs isctl where a user would), the command channel as lio-vm-channel.service (early,
# so the harness can watch the boot). What the host's administrator enabled is disabled:
# those are the host's services (tgt, targetcli's restore, iscsid...) and would fight the
# tests for configfs and port 3260; the gettys are masked (console=ttyS0 is the log, not a
# login). Then the test's setup script (/mnt/host/.lio-vm-setup.sh) runs chrooted there,
# as an administrator installs and enables units before a reboot.
boot_systemd() {
  if [ ! -x /bin/in-host ]; then
    say "FAILED: booting systemd needs the host root (VmOptions::share_host_root)"
    return 1
  fi
  lib=/host/usr/local/lib/lio-vm
  mkdir -p $lib/bin
  cp /bin/isctl /bin/vmtool /etc/lio-vm/channel.sh $lib/
  ln -sf ../vmtool $lib/bin/vmtool
  cat > $lib/bin/in-host <<'EOS'
#!/bin/sh
# Under systemd the root already is the host's: only the clean environment remains.
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
EOS
  chmod 755 $lib/bin/in-host
  # The host may be a container: its /.dockerenv would make systemd run in container
  # mode (units conditioned on !container skipped), which this VM is not.
  rm -f /host/.dockerenv /host/run/.containerenv
  # The VM kernel's modules where the host's kmod looks (`modprobe` in units works).
  mkdir -p /host/lib/modules
  cp -a /lib/modules/$(uname -r) /host/lib/modules/
  units=/host/etc/systemd/system
  rm -f $units/*.wants/*
  for unit in getty.target serial-getty@ttyS0.service; do
    ln -sf /dev/null $units/$unit
  done
  cat > $units/lio-vm-channel.service <<'EOS'
# The isctl test harness's command channel (tests/lio-vm/channel.sh).
[Unit]
Description=lio-vm command channel
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Environment=PATH=/usr/local/lib/lio-vm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=/bin/sh /usr/local/lib/lio-vm/channel.sh
StandardOutput=journal+console
EOS
  mkdir -p $units/sysinit.target.wants
  ln -sf ../lio-vm-channel.service $units/sysinit.target.wants/lio-vm-channel.service
  if [ -f /mnt/host/.lio-vm-setup.sh ]; then
    if ! in-host /bin/sh -e /mnt/host/.lio-vm-setup.sh; then
      say "FAILED: the systemd setup script /mnt/host/.lio-vm-setup.sh"
      return 1
    fi
  fi
  say "switching root to the host's systemd at $(cut -d' ' -f1 /proc/uptime) s"
  exec switch_root /host /lib/systemd/systemd
}

if grep -qw lio_vm.init=systemd /proc/cmdline; then
  boot_systemd
  say "FAILED: switch_root to systemd"
  poweroff -f
fi

sh /etc/lio-vm/channel.sh
poweroff -f
