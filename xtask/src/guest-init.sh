#!/bin/sh
# /init of the test guests (busybox sh), written by xtask/src/vm.rs: mounts what chaos and the
# tests read, gives them an ext4 scratch filesystem, runs `chaos doctor` and the test
# executables, prints the verdict line the host waits for, and powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
# / is the initramfs (tmpfs), writable; /tmp stays on it (the payload may live under /tmp).
mount -t securityfs securityfs /sys/kernel/security
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
# ext4 for the tests' scratch directories (/var/tmp): the fs fsync hook is ext4's. The image is
# sparse on the initramfs (tmpfs), so it costs only what is written.
insmod /lib/modules/loop.ko
# device-mapper and dm-flakey, for the power suite's power-loss disk.
insmod /lib/modules/dm-mod.ko
insmod /lib/modules/dm-flakey.ko
truncate -s 1G /scratch.img
mkfs.ext4 -q /scratch.img
mkdir -p /mnt/scratch
mount -o loop /scratch.img /mnt/scratch
# Whatever the payload put under /var/tmp (a checkout there) moves onto the ext4 first.
cp -a /var/tmp/. /mnt/scratch/
umount /mnt/scratch
mount -o loop /scratch.img /var/tmp
echo "guest: $(uname -r), lockdown $(cat /sys/kernel/security/lockdown)"
echo "== chaos doctor"
@CHAOS@ doctor
export CHAOS_BIN=@CHAOS@
rc=0
for test in @TESTS@; do
  echo "== $test"
  # The power suite's tests need dm-flakey, which only the guests have (ignored elsewhere);
  # what they measured at each cut is printed.
  case "$test" in
    */power-*) extra="--include-ignored --nocapture" ;;
    *) extra= ;;
  esac
  "$test" --test-threads=1 $extra || rc=1
done
echo "CHAOS-GUEST-RESULT rc=$rc"
sync
poweroff -f
