#!/usr/bin/env bash
# A PostgreSQL primary + synchronous standby under pg_auto_failover, of a test's own, on loopback:
#   tests/cluster/pg-failover.sh up DIR      monitor and two nodes in DIR (owned by postgres);
#                                            prints "MONITOR_PORT NODE1_PORT NODE2_PORT" once the
#                                            first node is primary and the second a secondary
#   tests/cluster/pg-failover.sh switchover DIR   a planned switchover (the primary becomes a
#                                            read-only standby, the standby the primary)
#   tests/cluster/pg-failover.sh down DIR    kills every process it started; removes DIR
# Each `pg_autoctl run` is started in a process group of its own, its id in DIR/<node>.pgid, so
# a test kills a node (keeper and postgres together, as a lost machine) with kill -9 -PGID.
# The monitor is tuned to notice a dead primary in about 3 s (settings below); the defaults
# (20 s to call a node unhealthy, 30 s demote time-out) are for networks less kind than loopback.
set -euo pipefail
cmd=${1:?up or down}; dir=${2:?directory}
bin=/usr/lib/postgresql/15/bin
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() {
  runuser -u postgres -- env PATH="$bin:/usr/bin:/bin" XDG_CONFIG_HOME="$dir/xdg/config" \
    XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run" PGCONNECT_TIMEOUT=2 "$@"
}
start() { # name, args...: pg_autoctl in a process group of its own
  local name=$1; shift
  setsid runuser -u postgres -- env PATH="$bin:/usr/bin:/bin" XDG_CONFIG_HOME="$dir/xdg/config" \
    XDG_DATA_HOME="$dir/xdg/data" XDG_RUNTIME_DIR="$dir/xdg/run" \
    pg_autoctl "$@" >"$dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$dir/$name.pgid"
}
case $cmd in
up)
  mkdir -p "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run"
  chown -R postgres: "$dir"; chmod 700 "$dir/xdg/run"
  pm=$(free_port); p1=$(free_port); p2=$(free_port)
  start monitor create monitor --pgdata "$dir/monitor" --pgport "$pm" --hostname 127.0.0.1 \
    --auth trust --no-ssl --pgctl "$bin/pg_ctl" --run
  monitor="postgres://autoctl_node@127.0.0.1:$pm/pg_auto_failover?sslmode=disable"
  for _ in $(seq 1 120); do as_pg psql -qAt "$monitor" -c 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  as_pg psql -qAt "$monitor" -c 'select 1' >/dev/null || { tail -20 "$dir/monitor.log" >&2; exit 1; }
  # Notice a dead node in about 2 s and promote without waiting 30 s for the dead primary to
  # confirm its demotion (it cannot: its machine is gone).
  settings=(health_check_period=500 health_check_timeout=500 health_check_max_retries=1
            health_check_retry_delay=200 node_considered_unhealthy_timeout=1500
            primary_demote_timeout=2000)
  args=()
  for kv in "${settings[@]}"; do args+=(-c "ALTER SYSTEM SET pgautofailover.${kv%%=*} = ${kv#*=}"); done
  as_pg psql -qAt -h 127.0.0.1 -p "$pm" -d pg_auto_failover "${args[@]}" -c "SELECT pg_reload_conf()" >/dev/null
  state_of() {
    as_pg psql -qAt "$monitor" -c "select reportedstate from pgautofailover.node where nodename = '$1'" 2>/dev/null || true
  }
  wait_state() { # node, wanted state
    local state=
    for _ in $(seq 1 240); do
      state=$(state_of "$1")
      [ "$state" = "$2" ] && return 0
      sleep 0.5
    done
    echo "$1 never became $2 (state: ${state:-none})" >&2; tail -20 "$dir/$1.log" >&2; exit 1
  }
  for n in 1 2; do
    port=$p1; [ $n = 2 ] && port=$p2
    start node$n create postgres --pgdata "$dir/node$n" --pgport "$port" --hostname 127.0.0.1 \
      --listen 127.0.0.1 --name node$n --monitor "$monitor" --auth trust --no-ssl \
      --pgctl "$bin/pg_ctl" --dbname postgres --run
    # The first node serves alone ("single") until the second joins as its standby.
    if [ $n = 1 ]; then wait_state node1 single; fi
  done
  wait_state node2 secondary
  wait_state node1 primary
  echo "$pm $p1 $p2"
  ;;
switchover)
  as_pg pg_autoctl perform switchover --pgdata "$dir/monitor" >"$dir/switchover.log" 2>&1 ||
    { tail -20 "$dir/switchover.log" >&2; exit 1; }
  ;;
down)
  for f in "$dir"/*.pgid; do [ -e "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$dir"
  ;;
esac
