#!/bin/sh
# The compose file's PostgreSQL under pg_auto_failover, one container per role:
#   orderflow-pg-ha monitor   the monitor (pg_auto_failover's state machine and health checks)
#   orderflow-pg-ha node      a data node: the first to register is the primary, the next its
#                             synchronous standby; after a failover a node that comes back
#                             rejoins as the standby (pg_autoctl rewinds it)
# Passwords come from the environment only and are never put on a command line: autoctl_node
# (nodes → monitor, PGAF_MONITOR_PASSWORD) and pgautofailover_replicator (streaming replication
# and pg_rewind, PGAF_REPLICATION_PASSWORD) through ~postgres/.pgpass; on whichever node is the
# primary, the roles of roles.sql (ORDERFLOW_DB_OWNER_PASSWORD, ORDERFLOW_DB_APP_PASSWORD), made
# if missing and their passwords set, with psql reading them by \getenv from SQL on its stdin.
# Every connection from the network is TLS (pg_autoctl's self-signed certificates) and SCRAM;
# pg_hba.conf is written here (--skip-pg-hba), by role and database, for the compose network
# only (samenet). The container's health check passes once $READY exists: the node's own
# set-up is done (on a primary: the roles and passwords too).
set -eu
role=${1:?usage: orderflow-pg-ha monitor|node}
READY=/var/run/postgresql/orderflow-pg-ha.ready
# Letters, digits, _ and - only: these go into .pgpass and into the service's URLs unescaped.
for name in PGAF_MONITOR_PASSWORD PGAF_REPLICATION_PASSWORD ORDERFLOW_DB_OWNER_PASSWORD ORDERFLOW_DB_APP_PASSWORD; do
  eval "value=\${$name-}"
  [ "$role" = monitor ] && [ "$name" != PGAF_MONITOR_PASSWORD ] && continue
  case "$value" in
    "") echo "orderflow-pg-ha: $name is not set (deploy/make-secrets.sh)" >&2; exit 1 ;;
    *[!A-Za-z0-9_-]*) echo "orderflow-pg-ha: $name may hold only letters, digits, _ and -" >&2; exit 1 ;;
  esac
done
mkdir -p "$PGHOST" "$XDG_CONFIG_HOME" "$XDG_DATA_HOME"
chown postgres:postgres "$HOME" "$PGHOST" /var/lib/postgresql/data "$XDG_CONFIG_HOME" "$XDG_DATA_HOME"
rm -f "$READY"
# pg_autoctl's pid file from before a crash of this container names pid 1, which is the new
# pg_autoctl itself now: it would refuse to start ("already running").
rm -rf /tmp/pg_autoctl
umask 077
{
  echo "*:*:pg_auto_failover:autoctl_node:$PGAF_MONITOR_PASSWORD"
  [ "$role" = node ] && echo "*:*:*:pgautofailover_replicator:$PGAF_REPLICATION_PASSWORD"
} > "$HOME/.pgpass"
chown postgres:postgres "$HOME/.pgpass"
umask 022
me=$(hostname)
log() { echo "orderflow-pg-ha: $*"; }
# psql as postgres over the container's own socket; SQL from the arguments or stdin.
psql_local() { runuser -u postgres -- psql -qAtX -v ON_ERROR_STOP=1 "$@"; }
ask() { psql_local -d "${2:-postgres}" -c "$1" 2>/dev/null || true; }

write_hba() {
  hba="$PGDATA/pg_hba.conf"
  grep -q '^# orderflow-pg-ha' "$hba" 2>/dev/null && return 0
  {
    echo "# orderflow-pg-ha: TLS and SCRAM from the compose network, by role and database"
    echo "local all postgres peer"
    if [ "$role" = monitor ]; then
      # (the monitor's own pg_autoctl listens for its events as autoctl_node, over the socket)
      echo "local pg_auto_failover autoctl_node scram-sha-256"
      echo "hostssl pg_auto_failover autoctl_node samenet scram-sha-256"
    else
      # (the monitor's health checks need no entry: any answer, a refusal too, is alive;
      # pg_autoctl reads the primary's state in orderflow, pg_rewind in postgres)
      echo "hostssl replication,postgres,orderflow pgautofailover_replicator samenet scram-sha-256"
      echo "hostssl orderflow orderflow_owner,orderflow_app samenet scram-sha-256"
    fi
  } > "$hba.new"
  chown postgres:postgres "$hba.new"
  mv "$hba.new" "$hba"
  psql_local -c 'select pg_reload_conf()' >/dev/null
}

monitor_setup() {
  [ "$(ask 'select count(*) from pgautofailover.formation' pg_auto_failover)" -ge 1 ] 2>/dev/null || return 1
  printf '%s\n' '\getenv pw PGAF_MONITOR_PASSWORD' "ALTER ROLE autoctl_node PASSWORD :'pw';" |
    psql_local >/dev/null
  # Call a node dead after about 2 s without an answer, and promote without waiting 30 s for
  # a dead primary to confirm its demotion (pg_auto_failover's defaults suit slower networks:
  # 20 s to call a node unhealthy, 30 s demote time-out).
  for kv in health_check_period=1000 health_check_timeout=1000 health_check_max_retries=1 \
            health_check_retry_delay=500 node_considered_unhealthy_timeout=2000 \
            primary_demote_timeout=3000; do
    psql_local -c "ALTER SYSTEM SET pgautofailover.${kv%%=*} = ${kv#*=}" >/dev/null
  done
  psql_local -c 'select pg_reload_conf()' >/dev/null
}

# On the primary: what replicates to the standby — the replication password and the roles
# (made if missing, passwords set every time: a changed secret takes effect on the next start
# of the primary).
primary_setup() {
  [ "$(ask "select count(*) from pg_roles where rolname = 'pgautofailover_replicator'")" = 1 ] || return 1
  printf '%s\n' '\getenv pw PGAF_REPLICATION_PASSWORD' "ALTER ROLE pgautofailover_replicator PASSWORD :'pw';" |
    psql_local >/dev/null
  if [ "$(ask "select count(*) from pg_roles where rolname = 'orderflow_app'")" = 0 ]; then
    sed -e "s/{{OWNER}}/orderflow_owner/g" -e "s/{{APP}}/orderflow_app/g" -e "s/{{DB}}/orderflow/g" \
      /orderflow/roles.sql > /tmp/roles.sql
    psql_local -f /tmp/roles.sql >/dev/null
    log "roles made on $me"
  else
    printf '%s\n' '\getenv owner ORDERFLOW_DB_OWNER_PASSWORD' '\getenv app ORDERFLOW_DB_APP_PASSWORD' \
      "ALTER ROLE orderflow_owner PASSWORD :'owner';" "ALTER ROLE orderflow_app PASSWORD :'app';" |
      psql_local >/dev/null
  fi
}

# The set-up, in the background, for as long as the container runs: every few seconds it looks
# at what this node is now (a standby promoted later does the primary's part then); failures
# are logged and tried again.
setup() {
  done_as=""
  while :; do
    if ask 'select 1' | grep -q 1; then
      write_hba || log "writing pg_hba.conf failed; trying again"
      if [ "$role" = monitor ]; then
        now=monitor
      elif [ "$(ask 'select pg_is_in_recovery()')" = f ]; then
        now=primary
        # A new standby's pg_basebackup waits for a spread checkpoint, which on an idle
        # primary takes a minute or two (it paces its writes); CHECKPOINT makes it immediate.
        [ "$(ask "select count(*) from pg_stat_progress_basebackup where phase = 'waiting for checkpoint to finish'")" = 0 ] ||
          psql_local -c CHECKPOINT >/dev/null 2>&1 || true
      else
        now=standby
      fi
      if [ "$done_as" != "$now" ]; then
        ok=1
        case $now in
          monitor) monitor_setup || ok="" ;;
          primary) primary_setup || ok="" ;;
        esac
        if [ -n "$ok" ]; then
          done_as=$now
          touch "$READY"
          log "$me ready as the $now"
        fi
      fi
    fi
    sleep 2
  done
}
(set +e; setup) &

ssl="--ssl-self-signed --skip-pg-hba"
# setpriv, not runuser or su: pg_autoctl itself is the container's main process and gets the
# stop signal (SIGINT: a fast shutdown of PostgreSQL), with nothing in between to kill it.
as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups"
if [ "$role" = monitor ]; then
  exec $as_postgres pg_autoctl create monitor --pgdata "$PGDATA" --hostname "$me" \
    --pgport 5432 $ssl --run
fi
# `create … --run` again on a restart: pg_autoctl picks up the node it made before.
exec $as_postgres pg_autoctl create postgres --pgdata "$PGDATA" --hostname "$me" \
  --name "$me" --pgport 5432 --listen '*' $ssl --dbname orderflow \
  --monitor "postgres://autoctl_node@${PGAF_MONITOR_HOST:-pg-monitor}:5432/pg_auto_failover?sslmode=require" \
  --run
