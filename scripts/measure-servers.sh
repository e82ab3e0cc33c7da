#!/usr/bin/env bash
# The README's real-server table: `chaos run` against Debian's PostgreSQL and nginx.
#
#   scripts/measure-servers.sh [FAULTS]
#
# Each server runs under runsv in a cgroup of its own, on a loopback port, its data in a
# scratch directory; FAULTS (default 10) SIGKILLs per case:
#   postgres-postmaster  the postmaster (an episode: WAL replay before pg_isready passes)
#   postgres-backend     a client backend (in place: the postmaster's crash-restart)
#   nginx-worker         a worker (in place: the master forks a new one)
# and prints chaos's tables. Needs root and `cargo xtask setup`. Kills only what it started.
set -euo pipefail
faults=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q -p chaos -p chaos-tests
bin=$root/target/debug
cgroot=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/self/mounts)
pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# start NAME WORK RUN_SCRIPT: runsv on WORK/svc in a new cgroup; sets $sup, $cg, $reaper.
start() {
  local name=$1 work=$2
  cg=$cgroot/chaos-servers-$$-$name
  mkdir "$cg"
  printf '#!/bin/sh\n%s\n' "$3" > "$work/svc/run"
  chmod 755 "$work/svc/run"
  "$bin/victim" subreaper sh -c "echo \$\$ > $cg/cgroup.procs && exec runsv $work/svc" > /dev/null 2>&1 &
  reaper=$!
  until sup=$(cat /proc/$reaper/task/*/children 2>/dev/null | awk '{print $1}') && [ -n "$sup" ]; do :; done
}

stop() {
  echo 1 > "$cg/cgroup.kill"
  while [ -s "$cg/cgroup.procs" ]; do :; done
  wait "$reaper" 2>/dev/null || true
  rmdir "$cg"
}

# Whatever is left when the script ends (an error, Ctrl-C): its cgroups' processes, by cgroup.
cleanup() {
  for left in "$cgroot"/chaos-servers-$$-*; do
    [ -d "$left" ] || continue
    echo 1 > "$left/cgroup.kill"
    while [ -s "$left/cgroup.procs" ]; do :; done
    rmdir "$left"
  done
}
trap cleanup EXIT

# experiment WORK ID INTERVAL TARGET_LINES: writes WORK/exp.toml; runs it; prints the tables.
experiment() {
  local work=$1 id=$2 interval=$3
  printf 'id = "%s"\nblast_radius = "local"\n\n[hypothesis]\nstatement = "it recovers"\nmax_failed_recoveries = 0\n\n[target]\nsupervisor = %s\n%s\n\n[[faults]]\nkind = "signal"\nsignal = "KILL"\ncount = %s\ninterval = "%s"\n\n[phases]\nbaseline = "500ms"\ncooldown = "500ms"\n' \
    "$id" "$sup" "$4" "$faults" "$interval" > "$work/exp.toml"
  chmod 600 "$work/exp.toml"
  echo "== $id"
  "$bin/chaos" run "$work/exp.toml" --audit "$work/audit.jsonl" --json "$work/$id.json" 2> "$work/$id.err" \
    | sed -n '/^verdict:/,/^faults:/p' | grep -v '^faults:' || { cat "$work/$id.err"; }
}

postgres() {
  local work port
  work=$(mktemp -d /var/tmp/chaos-servers-XXXXXX)
  chmod 755 "$work"
  port=$((20000 + RANDOM % 20000))
  mkdir "$work/svc" "$work/data" "$work/socket"
  chown postgres:postgres "$work/data" "$work/socket"
  chmod 700 "$work/data"
  chpst -u postgres "$pg/initdb" --auth=trust --username=postgres --no-sync -D "$work/data" > /dev/null
  start postgres "$work" "exec 2>>$work/postgres.log
exec chpst -u postgres $pg/postgres -D $work/data -k $work/socket -p $port -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c max_connections=20"
  until "$pg/pg_isready" -q -h 127.0.0.1 -p "$port"; do :; done
  local ready="comm = \"postgres\"
ready = \"cmd:$pg/pg_isready -q -h 127.0.0.1 -p $port\"
ready_user = \"postgres\"
recovery_timeout = \"20s\""
  # 2 s apart: runsv waits a second before restarting a service that ran for less than one.
  experiment "$work" postgres-postmaster 2s "$ready"
  # A client that keeps a session (a backend) open, reconnecting after each crash-restart.
  # (in the cgroup, so that the cleanup ends it too)
  sh -c "echo \$\$ > $cg/cgroup.procs && exec chpst -u postgres sh -c \"while :; do $pg/psql -h 127.0.0.1 -p $port -U postgres -qAtc 'select pg_sleep(3600)' >/dev/null 2>&1; done\"" &
  local client=$!
  until [ "$("$pg/psql" -h 127.0.0.1 -p "$port" -U postgres -qAtc "select count(*) from pg_stat_activity where wait_event = 'PgSleep'" 2>/dev/null)" = 1 ]; do :; done
  experiment "$work" postgres-backend 1s "$ready
hit = \"worker\"
effect_window = \"1s\"
allow = { titles = [\"postgres: postgres postgres 127.0.0.1(*) SELECT\"] }"
  kill "$client"
  stop
  rm -rf "$work"
}

nginx() {
  local work port
  work=$(mktemp -d /var/tmp/chaos-servers-XXXXXX)
  port=$((20000 + RANDOM % 20000))
  mkdir "$work/svc"
  printf 'daemon off;\nmaster_process on;\nworker_processes 2;\npid %s/nginx.pid;\nerror_log %s/error.log;\nevents { worker_connections 64; }\nhttp { access_log off; client_body_temp_path %s/tmp; proxy_temp_path %s/tmp; fastcgi_temp_path %s/tmp; uwsgi_temp_path %s/tmp; scgi_temp_path %s/tmp;\n  server { listen 127.0.0.1:%s; location / { return 200 "ok\\n"; } } }\n' \
    "$work" "$work" "$work" "$work" "$work" "$work" "$work" "$port" > "$work/nginx.conf"
  start nginx "$work" "exec /usr/sbin/nginx -c $work/nginx.conf -p $work -e $work/error.log"
  until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do :; done
  experiment "$work" nginx-worker 1s "comm = \"nginx\"
ready = \"tcp:127.0.0.1:$port\"
recovery_timeout = \"5s\"
effect_window = \"1s\"
hit = \"worker\""
  stop
  rm -rf "$work"
}

postgres
nginx
