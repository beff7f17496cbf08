#!/bin/bash
# Proves docker-compose.yml as far as a machine without a Docker engine or an image registry
# allows: podman and podman-compose (../shared/containers/setup.sh installs them and imports a
# debootstrapped `localhost/debian:bookworm`). The images the compose file and the Dockerfile
# name are stood in for by images built here from Debian's packages, under the same names
# (deploy/standins/); then the real Dockerfile is built, `podman-compose up` brings the stack up,
# and the script checks through HAProxy that /health/ready and /dashboard answer, that a
# checkout is decided, and that the standby answers 503 while the active one serves.
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
trap 'compose logs > "$B/compose.log" 2>&1 || true; compose down -v >/dev/null 2>&1 || true' EXIT
# podman-compose does not act on `deploy.replicas`; the second instance comes from --scale.
export ADMIN_TOKEN=proof-token-0123456789abcdef0123456789 AUTH_JWT_SECRET=proof-customer-key-0123456789abcdef0123
compose up -d --no-build

log "through HAProxy on :8080"
ready=""
for _ in $(seq 1 180); do
  if curl -fsS http://127.0.0.1:8080/health/ready >/tmp/ready.json 2>/dev/null; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || { echo "never ready"; compose ps; exit 1; }
echo "ready: $(cat /tmp/ready.json)"
curl -fsS http://127.0.0.1:8080/dashboard | grep -q '<title>orderflow' && echo "dashboard: served"
curl -fsS http://127.0.0.1:8080/v1/queues | head -c 300; echo
curl -fsS -X PUT http://127.0.0.1:8080/v1/products/PROOF-1 -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"Proof","category":"c","tags":[],"price_cents":100}' >/dev/null
curl -fsS -X PUT http://127.0.0.1:8080/v1/inventory/PROOF-1 -H "Authorization: Bearer $ADMIN_TOKEN" \
  -H 'Content-Type: application/json' -d '{"on_hand":5}' >/dev/null
first=$(podman ps --format '{{.Names}}' | grep orderflow-proof_orderflow | head -n1)
token=$(podman exec "$first" orderflow token --customer proof)
order=$(curl -fsS -X POST http://127.0.0.1:8080/v1/checkout -H "Authorization: Bearer $token" -H 'Idempotency-Key: proof-1' -H 'Content-Type: application/json' -d '{"items":[{"sku":"PROOF-1","quantity":1}],"payment":{"method":"pix"},
  "shipping_address":{"recipient":"P","street":"Rua A","number":"1","city":"São Paulo","state":"SP","postal_code":"01001-000","country":"BR"},
  "delivery_method":"standard"}' | sed 's/.*"order_id":"\([^"]*\)".*/\1/')
status=""
for _ in $(seq 1 30); do
  status=$(curl -fsS "http://127.0.0.1:8080/v1/orders/$order" -H "Authorization: Bearer $token" | sed 's/.*"status":"\([a-z]*\)".*/\1/')
  [ "$status" = scheduled ] && break
  sleep 1
done
echo "checkout $order: $status"
[ "$status" = scheduled ]

log "a second instance (a standby), as replicas: 2 asks"
compose up -d --no-build --scale orderflow=2
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
epoch=$(curl -fsS http://127.0.0.1:8080/health/ready | sed 's/.*"epoch":\([0-9]*\).*/\1/')
t0=$(date +%s.%N)
podman kill "$active" >/dev/null
until curl -fsS -m 2 http://127.0.0.1:8080/health/ready 2>/dev/null | grep -q "\"epoch\":$((epoch + 1))"; do
  sleep 0.5
  [ "$(echo "$(date +%s.%N) - $t0 > 60" | bc)" = 1 ] && { echo "no failover within 60 s"; exit 1; }
done
echo "killed $active; the standby took over (epoch $((epoch + 1))) and HAProxy routes to it after $(echo "$(date +%s.%N) - $t0" | bc) s"
log "health checks as the compose file declares them"
for c in $(podman ps --format '{{.Names}}' | grep orderflow-proof); do
  printf '%s: ' "$c"; podman healthcheck run "$c" >/dev/null 2>&1 && echo healthy || echo "no health check or unhealthy"
done
compose ps
echo "compose proof: ok"
