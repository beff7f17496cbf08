#!/bin/bash
# Proves docker-compose.yml as far as a machine without a Docker engine or an image registry
# allows: podman and podman-compose (../shared/containers/setup.sh installs them and imports a
# debootstrapped `localhost/debian:bookworm`). The images the compose file and the Dockerfile
# name are stood in for by images built here from Debian's packages, under the same names
# (deploy/standins/); then the real Dockerfile and deploy/postgres/Containerfile are built,
# `podman-compose up` brings the stack up, and the script checks that `up` refuses without the
# secrets; with them (deploy/make-secrets.sh): that the three RabbitMQ nodes form one cluster
# and the database a primary with a synchronous standby; through HAProxy over HTTPS, that
# /health/ready and /dashboard answer (HTTP is redirected), that a checkout is decided, that
# the orders queue has a member on each broker node, that the warehouse user gets
# ACCESS_REFUSED publishing to `orders`, that the application role cannot DROP TABLE; then it
# kills (SIGKILL) the broker node the active instance is connected to, and later the database
# primary, and after each measures the time to the first checkout accepted and decided again;
# every order accepted is decided and the books balance; last, the standby instance takes over
# when the active one is killed.
#   CONTAINERS_DIR=/tmp/containers deploy/prove-compose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
B=${CONTAINERS_DIR:-/tmp/containers}
# shellcheck disable=SC1091
. "$B/env.sh"
S=deploy/standins
log() { printf '\n== %s\n' "$*"; }

log "stand-in images"
podman tag localhost/debian:bookworm docker.io/library/debian:bookworm-slim
if ! podman image exists docker.io/library/rust:1.95-bookworm; then
  ctx=$(mktemp -d)
  cp -a "$(rustup toolchain list -v | awk '/default/{print $NF}')" "$ctx/toolchain"
  cp "$S/rust.Containerfile" "$ctx/Containerfile"
  podman build -q -t docker.io/library/rust:1.95-bookworm "$ctx"
  rm -rf "$ctx"
fi
podman build -q -t docker.io/library/postgres:15-bookworm -f "$S/postgres.Containerfile" "$S"
podman build -q -t docker.io/library/rabbitmq:3.13-management -f "$S/rabbitmq.Containerfile" "$S"
podman build -q -t docker.io/library/haproxy:2.9-alpine -f "$S/haproxy.Containerfile" "$S"
# The database image of the compose file (PostgreSQL + pg_auto_failover), built from its own
# Containerfile on the postgres stand-in.
podman build -q -t localhost/orderflow-postgres-ha:15 deploy/postgres

log "the orderflow image, from the Dockerfile (crates from the host's cargo cache)"
# (docker format: the OCI format drops HEALTHCHECK)
podman build --format docker -t orderflow:latest --volume "$HOME/.cargo/registry:/usr/local/cargo/registry" .

log "podman-compose (1.6.0 from PyPI: Debian's 1.0.3 mishandles exec-form health checks)"
[ -x "$B/venv/bin/podman-compose" ] || { python3 -m venv "$B/venv" && "$B/venv/bin/pip" -q install podman-compose==1.6.0; }
compose() { "$B/venv/bin/podman-compose" -p orderflow-proof "$@"; }
env_file=deploy/secrets/.env

log "without the secrets, up refuses (no default credentials)"
if out=$(env -u ADMIN_TOKEN -u AUTH_JWT_SECRET "$B/venv/bin/podman-compose" -p orderflow-refusal --env-file /dev/null config 2>&1); then
  echo "compose config passed without secrets:"; echo "$out" | head; exit 1
fi
echo "$out" | grep -m1 -E "make-secrets|required|ADMIN_TOKEN|set " || { echo "$out" | tail -3; exit 1; }

log "the secrets (deploy/make-secrets.sh), then up"
deploy/make-secrets.sh >/dev/null
# shellcheck disable=SC1090
. "$env_file"
# Everything of the project, the scaled instances and the volumes too (`down` leaves containers
# it did not start itself, and a broker node finding an old cluster in its volume waits for it).
wipe() {
  local label=label=io.podman.compose.project=orderflow-proof
  compose --env-file "$env_file" down -v >/dev/null 2>&1 || true
  podman ps -aq --filter "$label" | xargs -r podman rm -f >/dev/null 2>&1 || true
  podman volume ls -q --filter "$label" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
}
wipe
trap 'compose --env-file "$env_file" logs > "$B/compose.log" 2>&1 || true; wipe' EXIT
# Started in the order the compose file's health conditions give (podman-compose does not wait
# for them): the first broker node and the database monitor, then the other broker nodes (they
# join the first) and the database nodes (the first to register becomes the primary), then the
# service. podman 4.3 sometimes refuses to start a container whose dependency is (re)starting at
# that moment ("not found in input list"); a second `up` starts what is left.
up() {
  for attempt in 1 2 3; do
    compose --env-file "$env_file" up -d --no-build "$@" && return 0
    echo "up attempt $attempt did not start everything; again"
    sleep 5
  done
  return 1
}
name_of() { podman ps -a --format '{{.Names}}' | grep "orderflow-proof_$1_" | head -n1; }
rabbit_running() { # container: its node booted (and in a cluster of three)
  for _ in $(seq 1 120); do
    podman exec "$1" rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && break
    sleep 1
  done
  podman exec "$1" rabbitmq-diagnostics -q check_running || { podman logs "$1" 2>&1 | tail -20; return 1; }
}
up rabbitmq1 pg-monitor
rabbit_running "$(name_of rabbitmq1)"
up rabbitmq2 rabbitmq3 pg1 pg2

log "one RabbitMQ cluster of three nodes"
podman exec "$(name_of rabbitmq1)" rabbitmqctl -q await_online_nodes 3 --timeout 120
echo "running nodes: $(podman exec "$(name_of rabbitmq1)" rabbitmqctl -q cluster_status --formatter json |
  python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["running_nodes"])))')"

log "PostgreSQL: a primary and a synchronous standby under pg_auto_failover"
monitor_sql() {
  podman exec "$(name_of pg-monitor)" runuser -u postgres -- psql -qAtX -h /var/run/postgresql \
    -d pg_auto_failover -c "$1"
}
for _ in $(seq 1 180); do
  states=$(monitor_sql "select string_agg(reportedstate::text, ' ' order by reportedstate) from pgautofailover.node" 2>/dev/null || true)
  [ "$states" = "primary secondary" ] && break
  sleep 1
done
echo "database nodes: $states"
[ "$states" = "primary secondary" ]
monitor_sql "select nodename, reportedstate, goalstate from pgautofailover.node order by nodename"
primary_node() { monitor_sql "select nodename from pgautofailover.node where reportedstate = 'primary'"; }
sync=$(podman exec "$(name_of "$(primary_node)")" runuser -u postgres -- psql -qAtX -h /var/run/postgresql \
  -c "select application_name || ' ' || sync_state from pg_stat_replication")
echo "replication from $(primary_node): $sync"
case "$sync" in *" sync"|*" quorum") ;; *) echo "no synchronous standby"; exit 1 ;; esac

up
log "through HAProxy: HTTPS on :8443, HTTP on :8080 redirected"
https() { curl -fsS --cacert deploy/secrets/tls.crt --resolve localhost:8443:127.0.0.1 "$@"; }
ready=""
for _ in $(seq 1 240); do
  if https https://localhost:8443/health/ready >/tmp/ready.json 2>/dev/null; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || { echo "never ready"; compose --env-file "$env_file" ps; exit 1; }
echo "ready: $(cat /tmp/ready.json)"
code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://127.0.0.1:8080/health/ready)
echo "plain HTTP: $code"
case "$code" in "301 https://"*":8443/health/ready") ;; *) echo "plain HTTP is not redirected to :8443"; exit 1 ;; esac
https -D - -o /dev/null https://localhost:8443/dashboard | grep -i -E "^(content-security-policy|x-frame-options|strict-transport-security):"
https -X PUT https://localhost:8443/v1/products/PROOF-1 -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"Proof","category":"c","tags":[],"price_cents":100}' >/dev/null
https -X PUT https://localhost:8443/v1/inventory/PROOF-1 -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"on_hand":100}' >/dev/null
first=$(podman ps --format '{{.Names}}' | grep orderflow-proof_orderflow | head -n1)
token=$(podman exec "$first" orderflow token --customer proof)
checkout_body='{
  "items":[{"sku":"PROOF-1","quantity":1}],
  "payment":{"method":"card","card":{"number":"4242424242424242","holder_name":"Proof","exp_month":12,"exp_year":2031,"cvv":"123"}},
  "shipping_address":{"recipient":"P","street":"Rua A","number":"1","city":"São Paulo","state":"SP","postal_code":"01001-000","country":"BR"},
  "delivery_method":"standard"}'
order=$(https -X POST https://localhost:8443/v1/checkout -H "Authorization: Bearer $token" -H 'Idempotency-Key: proof-1' -H 'Content-Type: application/json' -d "$checkout_body" | sed 's/.*"order_id":"\([^"]*\)".*/\1/')
status=""
for _ in $(seq 1 30); do
  status=$(https "https://localhost:8443/v1/orders/$order" -H "Authorization: Bearer $token" | sed 's/.*"status":"\([a-z]*\)".*/\1/')
  [ "$status" = scheduled ] && break
  sleep 1
done
echo "checkout over HTTPS $order: $status"
[ "$status" = scheduled ]

log "the orders queue is replicated on every broker node (admin view of /v1/queues)"
topology() { https https://localhost:8443/v1/queues -H "Authorization: Bearer $ADMIN_TOKEN"; }
members=""
for _ in $(seq 1 30); do
  members=$(topology | python3 -c 'import json,sys
t = json.load(sys.stdin).get("topology") or {}
q = [q for q in t.get("queues", []) if q["name"] == "orders.checkout"]
print(" ".join(sorted(q[0]["members"])) if q else "")' 2>/dev/null || true)
  [ "$(echo "$members" | wc -w)" = 3 ] && break
  sleep 1
done
echo "orders.checkout members: $members"
[ "$(echo "$members" | wc -w)" = 3 ]

# A checkout as the test customer: prints the HTTP status; the order id of a 202 is appended to
# $accepted (a file: the function also runs in command substitutions, which are subshells).
accepted=$(mktemp)
echo "$order" > "$accepted"
try_checkout() { # idempotency key
  local code
  code=$(curl -s -o /tmp/checkout.json -w '%{http_code}' -m 5 --cacert deploy/secrets/tls.crt \
    --resolve localhost:8443:127.0.0.1 -X POST https://localhost:8443/v1/checkout \
    -H "Authorization: Bearer $token" -H "Idempotency-Key: $1" -H 'Content-Type: application/json' \
    -d "$checkout_body" || echo 000)
  [ "$code" = 202 ] && echo "$(sed 's/.*"order_id":"\([^"]*\)".*/\1/' /tmp/checkout.json)" >> "$accepted"
  echo "$code"
}
status_of() {
  curl -s -m 5 --cacert deploy/secrets/tls.crt --resolve localhost:8443:127.0.0.1 \
    "https://localhost:8443/v1/orders/$1" -H "Authorization: Bearer $token" |
    sed -n 's/.*"status":"\([a-z_]*\)".*/\1/p' | head -n1
}
since() { echo "$(date +%s.%N) - $1" | bc; }
# After a kill at $1 (date +%s.%N): checkouts every 0.2 s until one is accepted, then that order
# until it is decided; prints both times and the 503s and other refusals seen meanwhile.
measure() { # t0 label
  local t0=$1 label=$2 n=0 refused=0 code order status t_acc t_dec
  while :; do
    n=$((n + 1))
    code=$(try_checkout "$label-$n")
    [ "$code" = 202 ] && break
    refused=$((refused + 1))
    [ "$(echo "$(since "$t0") > 90" | bc)" = 1 ] && { echo "$label: no checkout accepted within 90 s (last $code)"; exit 1; }
    sleep 0.2
  done
  t_acc=$(since "$t0"); order=$(tail -n1 "$accepted")
  while :; do
    status=$(status_of "$order")
    case "$status" in scheduled|rejected|cancelled) break ;; esac
    [ "$(echo "$(since "$t0") > 120" | bc)" = 1 ] && { echo "$label: $order not decided within 120 s ($status)"; exit 1; }
    sleep 0.2
  done
  t_dec=$(since "$t0")
  printf '%s: first checkout accepted again after %.2f s, decided (%s) after %.2f s; %d refused before (503 with Retry-After or no answer)\n' \
    "$label" "$t_acc" "$status" "$t_dec" "$refused"
}

log "least privilege: the warehouse may not publish an order, the application role may not drop a table"
podman image exists localhost/pika || podman build -q -t localhost/pika -f "$S/pika.Containerfile" "$S" >/dev/null
net=$(podman network ls --format '{{.Name}}' | grep orderflow-proof | head -n1)
refusal=$(podman run --rm --network "$net" -e PW="$RABBITMQ_WAREHOUSE_PASSWORD" localhost/pika python3 -c '
import os, pika
c = pika.BlockingConnection(pika.URLParameters("amqp://warehouse:%s@rabbitmq1:5672/%%2f" % os.environ["PW"]))
ch = c.channel(); ch.confirm_delivery()
try:
    ch.basic_publish("orders", "checkout", b"{}")
    print("published")
except pika.exceptions.ChannelClosedByBroker as e:
    print(e)
' 2>&1 | tail -n1)
echo "warehouse → orders: $refusal"
echo "$refusal" | grep -q ACCESS_REFUSED
pg=$(name_of pg2)
drop=$(podman exec "$pg" psql "postgres://orderflow_app:$ORDERFLOW_DB_APP_PASSWORD@pg1:5432,pg2:5432/orderflow?target_session_attrs=read-write&sslmode=require" -c 'DROP TABLE orders' 2>&1 || true)
echo "orderflow_app: DROP TABLE orders → $drop"
echo "$drop" | grep -q "must be owner"
rabbit=$(name_of rabbitmq1)
echo "management UI published on: $(podman port "$rabbit" 15672)"

log "kill -9 the broker node the active instance is connected to"
in_use=$(topology | python3 -c 'import json,sys; print(json.load(sys.stdin)["topology"]["node"])')
broker=$(name_of "${in_use%%:*}")
echo "the active instance is connected to $in_use ($broker)"
for i in 1 2 3; do try_checkout "before-broker-$i" >/dev/null; done
t0=$(date +%s.%N)
podman kill -s KILL "$broker" >/dev/null
measure "$t0" "broker node $in_use killed"
echo "now connected to $(topology | python3 -c 'import json,sys; print(json.load(sys.stdin)["topology"]["node"])')"
podman start "$broker" >/dev/null
rabbit_running "$broker"
podman exec "$broker" rabbitmqctl -q await_online_nodes 3 --timeout 120
echo "$broker started again: back in the cluster"

log "kill -9 the database primary; pg_auto_failover promotes the standby"
old_primary=$(primary_node)
for i in 1 2 3; do try_checkout "before-db-$i" >/dev/null; done
t0=$(date +%s.%N)
podman kill -s KILL "$(name_of "$old_primary")" >/dev/null
measure "$t0" "database primary $old_primary killed"
# (alone, the new primary reports `wait_primary` until a standby is back)
new_primary=$(monitor_sql "select nodename from pgautofailover.node where reportedstate in ('primary', 'wait_primary') and nodename <> '$old_primary'")
echo "the new primary: $new_primary"
[ -n "$new_primary" ]
podman start "$(name_of "$old_primary")" >/dev/null
for _ in $(seq 1 180); do
  [ "$(monitor_sql "select reportedstate from pgautofailover.node where nodename = '$old_primary'" 2>/dev/null)" = secondary ] && break
  sleep 1
done
monitor_sql "select nodename, reportedstate, goalstate from pgautofailover.node order by nodename"
echo "$old_primary started again: back as the standby (rewound)"
[ "$(monitor_sql "select reportedstate from pgautofailover.node where nodename = '$old_primary'")" = secondary ]

log "every order accepted is decided; the books balance"
undecided=0
while read -r order; do
  status=""
  for _ in $(seq 1 60); do
    status=$(status_of "$order")
    case "$status" in scheduled|rejected|cancelled) break ;; esac
    sleep 0.5
  done
  case "$status" in scheduled|rejected|cancelled) ;; *) echo "$order: $status"; undecided=$((undecided + 1)) ;; esac
done < "$accepted"
stock=$(https https://localhost:8443/v1/inventory/PROOF-1)
echo "$(wc -l < "$accepted") orders accepted, $undecided undecided; PROOF-1: $stock"
[ "$undecided" = 0 ]
echo "$stock" | python3 -c 'import json,sys
s = json.load(sys.stdin)
assert s["available"] == s["on_hand"] - s["reserved"] and s["available"] >= 0, s
print("on_hand %(on_hand)d = available %(available)d + reserved %(reserved)d" % s)'
scheduled=0
while read -r order; do [ "$(status_of "$order")" = scheduled ] && scheduled=$((scheduled + 1)); done < "$accepted"
reserved=$(echo "$stock" | sed 's/.*"reserved":\([0-9]*\).*/\1/')
echo "$scheduled scheduled, one unit each; $reserved reserved"
[ "$scheduled" = "$reserved" ]

log "a second instance (a standby), as replicas: 2 asks"
compose --env-file "$env_file" up -d --no-build --scale orderflow=2
sleep 8
log "each instance on its own (one active, one standby)"
for c in $(podman ps --format '{{.Names}}' | grep orderflow-proof_orderflow); do
  code=$(podman exec "$c" orderflow healthcheck >/dev/null 2>&1 && echo ready || echo "not ready (standby)")
  echo "$c: $code"
done
log "failover: the active instance killed, HAProxy finds the new one"
active=""
for c in $(podman ps --format '{{.Names}}' | grep orderflow-proof_orderflow); do
  podman exec "$c" orderflow healthcheck >/dev/null 2>&1 && active=$c
done
epoch=$(https https://localhost:8443/health/ready | sed 's/.*"epoch":\([0-9]*\).*/\1/')
t0=$(date +%s.%N)
podman kill "$active" >/dev/null
until https -m 2 https://localhost:8443/health/ready 2>/dev/null | grep -q "\"epoch\":$((epoch + 1))"; do
  sleep 0.5
  [ "$(echo "$(date +%s.%N) - $t0 > 60" | bc)" = 1 ] && { echo "no failover within 60 s"; exit 1; }
done
echo "killed $active; the standby took over (epoch $((epoch + 1))) and HAProxy routes to it after $(echo "$(date +%s.%N) - $t0" | bc) s"
log "health checks as the compose file declares them"
for c in $(podman ps --format '{{.Names}}' | grep orderflow-proof); do
  printf '%s: ' "$c"; podman healthcheck run "$c" >/dev/null 2>&1 && echo healthy || echo "no health check or unhealthy"
done
compose --env-file "$env_file" ps
echo "compose proof: ok"
