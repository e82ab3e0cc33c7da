#!/bin/sh
# The test runner of the systemd guest, written by xtask/src/vm.rs: chaos-tests.service, which
# systemd (pid 1, booted with rdinit=/lib/systemd/systemd) starts. Mounts what systemd leaves
# to units chaos does not have, gives the tests an ext4 scratch filesystem, runs `chaos doctor`
# and the test executables (their systemd tests included), prints the verdict line the host
# waits for, and powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root RUST_BACKTRACE=1
mounted() { grep -qs " $1 " /proc/mounts; }
mounted /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
mounted /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mounted /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mounted /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
ip link set lo up
insmod /lib/modules/loop.ko
truncate -s 1G /scratch.img
mkfs.ext4 -q /scratch.img
mount -o loop /scratch.img /var/tmp
echo "guest: $(uname -r), lockdown $(cat /sys/kernel/security/lockdown), pid 1: $(cat /proc/1/comm), $(systemctl --version | head -n 1)"
echo "== chaos doctor"
@CHAOS@ doctor
export CHAOS_BIN=@CHAOS@
rc=0
for test in @TESTS@; do
  echo "== $test"
  timeout 600 "$test" --test-threads=1 --include-ignored --nocapture || rc=1
done
echo "CHAOS-GUEST-RESULT rc=$rc"
sync
poweroff -f
