#!/bin/sh
# The compose file's PostgreSQL under pg_auto_failover, one container per role:
#   orderflow-pg-ha monitor   the monitor (pg_auto_failover's state machine and health checks)
#   orderflow-pg-ha node      a data node: the first to register is the primary, the next its
#                             synchronous standby; after a failover a node that comes back
#                             rejoins as the standby (pg_autoctl rewinds it)
# Passwords only from the environment, never on a command line: autoctl_node (nodes → monitor,
# PGAF_MONITOR_PASSWORD) and pgautofailover_replicator (streaming replication and pg_rewind,
# PGAF_REPLICATION_PASSWORD) through ~postgres/.pgpass; on the first primary, the roles of
# roles.sql with ORDERFLOW_DB_OWNER_PASSWORD and ORDERFLOW_DB_APP_PASSWORD. Every connection
# from the network is TLS (pg_autoctl's self-signed certificates) and SCRAM; pg_hba.conf is
# written here (--skip-pg-hba), by role and database, for the compose network only (samenet).
set -eu
role=${1:?usage: orderflow-pg-ha monitor|node}
: "${PGAF_MONITOR_PASSWORD:?}" "${PGAF_REPLICATION_PASSWORD:?}"
export HOME=/var/lib/postgresql
export PGDATA="$HOME/$role" PGHOST=/var/run/postgresql PGPORT=5432
export XDG_CONFIG_HOME="$HOME/.config" XDG_DATA_HOME="$HOME/.local/share"
mkdir -p "$PGHOST" "$XDG_CONFIG_HOME" "$XDG_DATA_HOME"
chown postgres:postgres "$HOME" "$PGHOST" "$XDG_CONFIG_HOME" "$XDG_DATA_HOME"
umask 077
cat > "$HOME/.pgpass" <<PGPASS
*:*:pg_auto_failover:autoctl_node:$PGAF_MONITOR_PASSWORD
*:*:*:pgautofailover_replicator:$PGAF_REPLICATION_PASSWORD
PGPASS
chown postgres:postgres "$HOME/.pgpass"
umask 022
me=$(hostname)
psql_local() { runuser -u postgres -- psql -qAtX -v ON_ERROR_STOP=1 -d "${DB:-postgres}" "$@"; }

# Once this node's PostgreSQL answers: its pg_hba.conf (written once), and on the monitor its
# password and health-check settings, on a primary the replication password and the roles.
setup() {
  until psql_local -c 'select 1' >/dev/null 2>&1; do sleep 1; done
  hba="$PGDATA/pg_hba.conf"
  if ! grep -q '^# orderflow-pg-ha' "$hba" 2>/dev/null; then
    {
      echo "# orderflow-pg-ha: TLS and SCRAM from the compose network, by role and database"
      echo "local all all trust"
      if [ "$role" = monitor ]; then
        echo "hostssl pg_auto_failover autoctl_node samenet scram-sha-256"
      else
        # (the monitor's health checks need no entry: any answer, a refusal too, is alive)
        # (streaming replication; pg_autoctl reads the primary's state in orderflow, pg_rewind in postgres)
        echo "hostssl replication,postgres,orderflow pgautofailover_replicator samenet scram-sha-256"
        echo "hostssl orderflow orderflow_owner,orderflow_app samenet scram-sha-256"
      fi
    } > "$hba.new"
    chown postgres:postgres "$hba.new"
    mv "$hba.new" "$hba"
    psql_local -c 'select pg_reload_conf()' >/dev/null
  fi
  if [ "$role" = monitor ]; then
    until psql_local -d pg_auto_failover -c 'select 1 from pgautofailover.formation limit 1' >/dev/null 2>&1; do sleep 1; done
    psql_local -d pg_auto_failover -c "ALTER ROLE autoctl_node PASSWORD '$PGAF_MONITOR_PASSWORD'" >/dev/null
    # Call a node dead after about 2 s without an answer, and promote without waiting 30 s for
    # a dead primary to confirm its demotion (pg_auto_failover's defaults suit slower networks:
    # 20 s to call a node unhealthy, 30 s demote time-out).
    for kv in health_check_period=1000 health_check_timeout=1000 health_check_max_retries=1 \
              health_check_retry_delay=500 node_considered_unhealthy_timeout=2000 \
              primary_demote_timeout=3000; do
      psql_local -c "ALTER SYSTEM SET pgautofailover.${kv%%=*} = ${kv#*=}" >/dev/null
    done
    psql_local -c 'select pg_reload_conf()' >/dev/null
    echo "orderflow-pg-ha: monitor ready"
    return
  fi
  # A data node: the primary (not in recovery) sets what replicates to the standby.
  until [ "$(psql_local -c 'select not pg_is_in_recovery()' 2>/dev/null)" = t ]; do
    [ "$(psql_local -c 'select pg_is_in_recovery()' 2>/dev/null)" = t ] &&
      { echo "orderflow-pg-ha: $me is a standby"; return; }
    sleep 1
  done
  until psql_local -c "select 1 from pg_roles where rolname = 'pgautofailover_replicator'" | grep -q 1; do sleep 1; done
  psql_local -c "ALTER ROLE pgautofailover_replicator PASSWORD '$PGAF_REPLICATION_PASSWORD'" >/dev/null
  if ! psql_local -c "select 1 from pg_roles where rolname = 'orderflow_app'" | grep -q 1; then
    : "${ORDERFLOW_DB_OWNER_PASSWORD:?}" "${ORDERFLOW_DB_APP_PASSWORD:?}"
    sed -e "s/{{OWNER}}/orderflow_owner/g" -e "s/{{APP}}/orderflow_app/g" -e "s/{{DB}}/orderflow/g" \
        -e "s/{{OWNER_PASSWORD}}/${ORDERFLOW_DB_OWNER_PASSWORD}/g" \
        -e "s/{{APP_PASSWORD}}/${ORDERFLOW_DB_APP_PASSWORD}/g" \
        /orderflow/roles.sql | psql_local >/dev/null
    echo "orderflow-pg-ha: roles made on $me"
  fi
  echo "orderflow-pg-ha: $me is the primary"
  # A new standby's pg_basebackup waits for a spread checkpoint, which on an idle primary takes
  # a minute or two (it paces its writes); an explicit CHECKPOINT makes it immediate. Until a
  # standby streams (at most 10 minutes).
  for _ in $(seq 1 200); do
    [ "$(psql_local -c "select count(*) from pg_stat_replication where state = 'streaming'" 2>/dev/null)" = 0 ] || break
    psql_local -c 'CHECKPOINT' >/dev/null 2>&1 || true
    sleep 3
  done
}
setup &

ssl="--ssl-self-signed --skip-pg-hba"
if [ "$role" = monitor ]; then
  exec runuser -u postgres -- pg_autoctl create monitor --pgdata "$PGDATA" --hostname "$me" \
    --pgport 5432 $ssl --run
fi
# `create … --run` again on a restart: pg_autoctl picks up the node it made before.
exec runuser -u postgres -- pg_autoctl create postgres --pgdata "$PGDATA" --hostname "$me" \
  --name "$me" --pgport 5432 --listen '*' $ssl --dbname orderflow \
  --monitor "postgres://autoctl_node@${PGAF_MONITOR_HOST:-pg-monitor}:5432/pg_auto_failover?sslmode=require" \
  --run
