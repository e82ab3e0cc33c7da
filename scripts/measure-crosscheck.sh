#!/usr/bin/env bash
# Cross-checks `chaos measure` against an independent bpftrace measurement of the same kills.
#
#   scripts/measure-crosscheck.sh [KILLS] [DELAY_MS]
#
# Runs the sample queue under the workspace's delay-supervisor (restart DELAY_MS after the reap,
# default 200) in a cgroup of its own, records the same tracepoints with bpftrace (exit, wait4
# return, fork, exec, listen), kills the instance KILLS times (default 10) and prints, per
# episode, each phase as chaos measured it, as bpftrace saw it, and the difference.
# Needs root and `cargo xtask setup`; builds the workspace first. Kills only what it started.
set -euo pipefail
kills=${1:-10}
delay=${2:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q -p chaos -p chaos-tests
bin=$root/target/debug
work=$(mktemp -d /var/tmp/chaos-crosscheck-XXXXXX)
cg=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)/chaos-crosscheck-$$
mkdir "$cg"
port=$((20000 + $$ % 20000))
cleanup() {
  [ -n "${bt:-}" ] && kill -INT "$bt" 2>/dev/null && wait "$bt" 2>/dev/null || true
  echo 1 > "$cg/cgroup.kill" 2>/dev/null || true
  while [ -s "$cg/cgroup.procs" ]; do :; done
  wait "$reaper" 2>/dev/null || true
  rmdir "$cg" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/victim" subreaper sh -c "echo \$\$ > $cg/cgroup.procs && exec $bin/delay-supervisor $delay $bin/chaos-queue serve --dir $work/data --port $port" &
reaper=$!
until sup=$(cat /proc/$reaper/task/*/children 2>/dev/null | awk '{print $1}') && [ -n "$sup" ]; do :; done
instance() { for c in $(cat /proc/$sup/task/*/children 2>/dev/null); do
  [ "$(cat /proc/$c/comm 2>/dev/null)" = chaos-queue ] && echo "$c" && return; done; }
ready() { (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; }
until [ -n "$(instance)" ] && ready; do :; done

bpftrace -q -e "
BEGIN { printf(\"attached\n\"); }
tracepoint:signal:signal_generate /args->sig == 9 && args->comm == \"chaos-queue\"/ { printf(\"fault %d %llu\n\", args->pid, nsecs); }
tracepoint:sched:sched_process_exit /comm == \"chaos-queue\" && pid == tid/ { printf(\"exit %d %llu\n\", pid, nsecs); }
tracepoint:syscalls:sys_exit_wait4 /pid == $sup && args->ret > 0/ { printf(\"reaped %d %llu\n\", args->ret, nsecs); }
tracepoint:sched:sched_process_fork /args->parent_pid == $sup/ { printf(\"forked %d %llu\n\", args->child_pid, nsecs); }
tracepoint:sched:sched_process_exec /comm == \"chaos-queue\"/ { printf(\"exec %d %llu\n\", pid, nsecs); }
tracepoint:sock:inet_sock_set_state /args->newstate == 10 && comm == \"chaos-queue\"/ { printf(\"ready %d %llu\n\", pid, nsecs); }
" > "$work/bpftrace.txt" &
bt=$!
"$bin/chaos" measure --supervisor "$sup" --ready listen --episodes "$kills" --json \
  > "$work/chaos.jsonl" 2> "$work/chaos.err" &
measure=$!
until grep -q measuring "$work/chaos.err" && grep -q attached "$work/bpftrace.txt"; do :; done
for i in $(seq "$kills"); do
  pid=$(instance)
  kill -KILL "$pid"
  while [ "$(instance)" = "$pid" ] || [ -z "$(instance)" ] || ! ready; do :; done
done
wait "$measure"
kill -INT "$bt"; wait "$bt" 2>/dev/null || true; bt=

python3 - "$work/chaos.jsonl" "$work/bpftrace.txt" <<'PY'
import json, sys
episodes = [json.loads(l)["data"] for l in open(sys.argv[1]) if '"episode"' in l[:20]]
seen = {}
for line in open(sys.argv[2]):
    parts = line.split()
    if len(parts) == 3:
        seen.setdefault(parts[0], []).append((int(parts[1]), int(parts[2])))
def at(kind, pid, after=0):
    return next((ts for p, ts in seen.get(kind, []) if p == pid and ts >= after), None)
phases = ["fault_to_exit", "exit_to_reaped", "reaped_to_forked", "forked_to_exec", "exec_to_ready"]
print(f"{'#':>3} {'phase':<18} {'chaos (us)':>12} {'bpftrace (us)':>14} {'diff (ns)':>10}")
worst = 0
for e in episodes:
    old, new = e["old_pid"], e["new_pid"]
    t = {"fault": at("fault", old), "exit": at("exit", old), "reaped": at("reaped", old),
         "forked": at("forked", new), "exec": at("exec", new), "ready": at("ready", new)}
    names = ["fault", "exit", "reaped", "forked", "exec", "ready"]
    for i, p in enumerate(phases):
        a, b = t[names[i]], t[names[i + 1]]
        mine = e["phases_ns"][p]
        theirs = None if a is None or b is None else b - a
        diff = None if mine is None or theirs is None else mine - theirs
        if diff is not None: worst = max(worst, abs(diff))
        fmt = lambda v: "-" if v is None else f"{v/1000:.1f}"
        print(f"{e['id']:>3} {p:<18} {fmt(mine):>12} {fmt(theirs):>14} {'-' if diff is None else diff:>10}")
print(f"largest difference: {worst} ns over {len(episodes)} episodes")
PY
