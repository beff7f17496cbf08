#!/usr/bin/env bash
# CI's run of the fuzzing client: a service of its own (its own database and vhost, a free
# port), a small catalog through the admin API, then tests/fuzz/schemathesis.sh with the admin
# token and a customer's token. Everything it made is removed on exit.
#   tests/fuzz/ci.sh path/to/orderflow [examples per operation]
set -euo pipefail
bin=$(realpath "${1:?the orderflow binary}"); examples=${2:-10}
cd "$(dirname "$0")"
name="of_fuzz_$$"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null || true
  rabbitmqctl -q delete_vhost "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
rabbitmqctl -q add_vhost "$name" >/dev/null
rabbitmqctl -q set_permissions -p "$name" guest ".*" ".*" ".*" >/dev/null
export ADMIN_TOKEN="fuzz-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AUTH_JWT_SECRET="fuzz-jwt-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$name"
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$name"
# Fuzzing sends thousands of writes as one customer: the per-customer limit is not under test.
export HTTP_ADDR=127.0.0.1:0 PORT_FILE="$work/port" RATE_LIMIT_PER_SECOND=100000 RATE_LIMIT_BURST=100000
"$bin" serve >"$work/service.log" 2>&1 &
pid=$!
for _ in $(seq 1 60); do
  [ -s "$work/port" ] && curl -sf "http://127.0.0.1:$(cat "$work/port")/health/ready" >/dev/null && break
  sleep 1
done
base="http://127.0.0.1:$(cat "$work/port")"
curl -sf "$base/health/ready" >/dev/null || { tail -50 "$work/service.log"; exit 1; }
"$bin" demo-data 50 --url "$base"
customer=$("$bin" token --customer fuzz-customer --ttl 3600)
./schemathesis.sh "$base" "$ADMIN_TOKEN" "$customer" "$examples" || { tail -50 "$work/service.log"; exit 1; }
