#!/usr/bin/env bash
# The README's supervisor table: `chaos measure` on the sample queue under each supervisor.
#
#   scripts/measure-supervisors.sh [KILLS] [SETTLE_SECS]
#
# For runit (runsv), daemontools (supervise), s6 (s6-supervise, without and with
# notification-fd) and supervisord: starts the supervisor in a cgroup of its own, kills the
# queue instance KILLS times (default 10), each once it has been up SETTLE_SECS (default 1.2,
# past runsv's and supervise's one-second throttle), and prints chaos's table.
# Needs root and `cargo xtask setup`. Kills only what it started.
set -euo pipefail
kills=${1:-10}
settle=${2:-1.2}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q -p chaos -p chaos-tests
bin=$root/target/debug
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)

run_one() {
  local kind=$1 work cg port sup
  work=$(mktemp -d /var/tmp/chaos-supervisors-XXXXXX)
  cg=$cgroot/chaos-supervisors-$$-$kind
  port=$((20000 + RANDOM % 20000))
  mkdir "$cg" "$work/svc"
  local run="exec $bin/chaos-queue serve --dir $work/data --port $port"
  case $kind in
    s6-notify) printf '#!/bin/sh\n%s --notify-fd 3\n' "$run" > "$work/svc/run"; echo 3 > "$work/svc/notification-fd" ;;
    *) printf '#!/bin/sh\n%s\n' "$run" > "$work/svc/run" ;;
  esac
  chmod +x "$work/svc/run"
  printf '[supervisord]\nnodaemon=true\nlogfile=%s/sd.log\npidfile=%s/sd.pid\n[program:queue]\ncommand=%s serve --dir %s/data --port %s\nautorestart=true\nstartsecs=1\n' \
    "$work" "$work" "$bin/chaos-queue" "$work" "$port" > "$work/supervisord.conf"
  local cmd
  case $kind in
    runit) cmd="runsv $work/svc" ;;
    daemontools) cmd="supervise $work/svc" ;;
    s6|s6-notify) cmd="s6-supervise $work/svc" ;;
    supervisord) cmd="supervisord -n -c $work/supervisord.conf" ;;
  esac
  "$bin/victim" subreaper sh -c "echo \$\$ > $cg/cgroup.procs && exec $cmd" > /dev/null 2>&1 &
  reaper=$!
  until sup=$(cat /proc/$reaper/task/*/children 2>/dev/null | awk '{print $1}') && [ -n "$sup" ]; do :; done
  instance() { for c in $(cat /proc/$sup/task/*/children 2>/dev/null); do
    [ "$(cat /proc/$c/comm 2>/dev/null)" = chaos-queue ] && echo "$c" && return; done; }
  ready() { (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; }
  until [ -n "$(instance)" ] && ready; do :; done
  "$bin/chaos" measure --supervisor "$sup" --ready listen --episodes "$kills" \
    > "$work/table.txt" 2> "$work/chaos.err" &
  local measure=$!
  until grep -q measuring "$work/chaos.err"; do :; done
  for _ in $(seq "$kills"); do
    python3 -c "import time; time.sleep($settle)"
    local pid
    pid=$(instance)
    kill -KILL "$pid"
    while [ "$(instance)" = "$pid" ] || [ -z "$(instance)" ] || ! ready; do :; done
  done
  wait "$measure"
  echo "== $kind"
  sed -n '/episode(s) of/,$p' "$work/table.txt"
  echo 1 > "$cg/cgroup.kill"
  while [ -s "$cg/cgroup.procs" ]; do :; done
  wait "$reaper" 2>/dev/null || true
  rmdir "$cg"
  rm -rf "$work"
}

for kind in runit daemontools s6 s6-notify supervisord; do
  run_one "$kind"
done
