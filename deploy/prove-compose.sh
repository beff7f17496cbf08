#!/bin/bash
# Proves docker-compose.yml as far as a machine without a Docker engine or an image registry
# allows: podman and podman-compose (../shared/containers/setup.sh installs them and imports a
# debootstrapped `localhost/debian:bookworm`). The images the compose file and the Dockerfile
# name are stood in for by images built here from Debian's packages, under the same names
# (deploy/standins/); then the real Dockerfile is built, `podman-compose up` brings the stack up,
# and the script checks that `up` refuses without the secrets; with them (deploy/make-secrets.sh),
# through HAProxy over HTTPS, that /health/ready and /dashboard answer (HTTP is redirected), that
# a checkout is decided, that the warehouse user gets ACCESS_REFUSED publishing to `orders`, that
# the application role cannot DROP TABLE, and that the standby takes over when the active one is
# killed.
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
trap 'compose --env-file "$env_file" logs > "$B/compose.log" 2>&1 || true; compose --env-file "$env_file" down -v >/dev/null 2>&1 || true' EXIT
# podman 4.3 sometimes refuses to start a container whose dependency is (re)starting at that
# moment ("not found in input list"); a second `up` starts what is left.
for attempt in 1 2 3; do
  compose --env-file "$env_file" up -d --no-build && break
  echo "up attempt $attempt did not start everything; again"
  sleep 5
done

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
  -H 'Content-Type: application/json' -d '{"on_hand":5}' >/dev/null
first=$(podman ps --format '{{.Names}}' | grep orderflow-proof_orderflow | head -n1)
token=$(podman exec "$first" orderflow token --customer proof)
order=$(https -X POST https://localhost:8443/v1/checkout -H "Authorization: Bearer $token" -H 'Idempotency-Key: proof-1' -H 'Content-Type: application/json' -d '{
  "items":[{"sku":"PROOF-1","quantity":1}],
  "payment":{"method":"card","card":{"number":"4242424242424242","holder_name":"Proof","exp_month":12,"exp_year":2031,"cvv":"123"}},
  "shipping_address":{"recipient":"P","street":"Rua A","number":"1","city":"São Paulo","state":"SP","postal_code":"01001-000","country":"BR"},
  "delivery_method":"standard"}' | sed 's/.*"order_id":"\([^"]*\)".*/\1/')
status=""
for _ in $(seq 1 30); do
  status=$(https "https://localhost:8443/v1/orders/$order" -H "Authorization: Bearer $token" | sed 's/.*"status":"\([a-z]*\)".*/\1/')
  [ "$status" = scheduled ] && break
  sleep 1
done
echo "checkout over HTTPS $order: $status"
[ "$status" = scheduled ]

log "least privilege: the warehouse may not publish an order, the application role may not drop a table"
podman image exists localhost/pika || podman build -q -t localhost/pika -f "$S/pika.Containerfile" "$S" >/dev/null
net=$(podman network ls --format '{{.Name}}' | grep orderflow-proof | head -n1)
refusal=$(podman run --rm --network "$net" -e PW="$RABBITMQ_WAREHOUSE_PASSWORD" localhost/pika python3 -c '
import os, pika
c = pika.BlockingConnection(pika.URLParameters("amqp://warehouse:%s@rabbitmq:5672/%%2f" % os.environ["PW"]))
ch = c.channel(); ch.confirm_delivery()
try:
    ch.basic_publish("orders", "checkout", b"{}")
    print("published")
except pika.exceptions.ChannelClosedByBroker as e:
    print(e)
' 2>&1 | tail -n1)
echo "warehouse → orders: $refusal"
echo "$refusal" | grep -q ACCESS_REFUSED
pg=$(podman ps --format '{{.Names}}' | grep orderflow-proof_postgres | head -n1)
drop=$(podman exec "$pg" psql "postgres://orderflow_app:$ORDERFLOW_DB_APP_PASSWORD@127.0.0.1:5432/orderflow" -c 'DROP TABLE orders' 2>&1 || true)
echo "orderflow_app: DROP TABLE orders → $drop"
echo "$drop" | grep -q "must be owner"
rabbit=$(podman ps --format '{{.Names}}' | grep orderflow-proof_rabbitmq | head -n1)
echo "management UI published on: $(podman port "$rabbit" 15672)"

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
