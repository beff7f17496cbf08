#!/usr/bin/env bash
# Makes the secrets the compose file refuses to start without, in deploy/secrets/ (never
# committed; SECRETS_DIR elsewhere): random tokens and passwords (.env), the RabbitMQ users with least privilege as a
# definitions file (passwords hashed the way RabbitMQ hashes them), and a development TLS
# certificate for HAProxy. Run it once; `docker compose --env-file deploy/secrets/.env up`.
#   deploy/make-secrets.sh [hostname for the certificate, default localhost]
set -euo pipefail
cd "$(dirname "$0")"
host=${1:-localhost}
out=${SECRETS_DIR:-secrets}
mkdir -p "$out"
chmod 700 "$out"
cd "$out"
rand() { openssl rand -hex 24; }
if [ ! -s .env ]; then
  umask 077
  cat > .env <<ENV
ADMIN_TOKEN=$(openssl rand -hex 32)
AUTH_JWT_SECRET=$(openssl rand -hex 32)
ORDERFLOW_DB_OWNER_PASSWORD=$(rand)
ORDERFLOW_DB_APP_PASSWORD=$(rand)
RABBITMQ_ADMIN_PASSWORD=$(rand)
RABBITMQ_ORDERFLOW_PASSWORD=$(rand)
RABBITMQ_WAREHOUSE_PASSWORD=$(rand)
RABBITMQ_CARTS_PASSWORD=$(rand)
ENV
fi
# Added after the first version of this script: appended to an older .env.
grep -q '^GRAFANA_ADMIN_PASSWORD=' .env || (umask 077; echo "GRAFANA_ADMIN_PASSWORD=$(rand)" >> .env)
# The database's failover (pg_auto_failover) and the broker cluster (issue 21).
for name in PGAF_MONITOR_PASSWORD PGAF_REPLICATION_PASSWORD RABBITMQ_ERLANG_COOKIE RABBITMQ_MONITOR_PASSWORD; do
  grep -q "^$name=" .env || (umask 077; echo "$name=$(rand)" >> .env)
done
# shellcheck disable=SC1091
. .env

# RabbitMQ's rabbit_password_hashing_sha256: base64(salt ‖ sha256(salt ‖ password)).
hash() {
  python3 - "$1" <<'PY'
import base64, hashlib, os, sys
salt = os.urandom(4)
print(base64.b64encode(salt + hashlib.sha256(salt + sys.argv[1].encode()).digest()).decode())
PY
}
user() { # name password tags
  printf '{"name":"%s","password_hash":"%s","hashing_algorithm":"rabbit_password_hashing_sha256","tags":"%s"}' \
    "$1" "$(hash "$2")" "$3"
}
perm() { # user configure write read
  printf '{"user":"%s","vhost":"/","configure":"%s","write":"%s","read":"%s"}' "$1" "$2" "$3" "$4"
}
# The service declares and uses its own exchanges and queues only (it reads which node leads
# each queue from the management API as `orderflow-monitor`: read-only, no queue permission); a warehouse may only publish
# to `inventory`, a cart system only to `carts`; the operator is the administrator.
own='^(orders|inventory|carts|order\\.events|orderflow\\.dead-letter|orders\\.checkout(\\.dead)?|inventory\\.updates(\\.dead)?|carts\\.events(\\.dead)?)$'
cat > definitions.json <<JSON
{
  "users": [
    $(user admin "$RABBITMQ_ADMIN_PASSWORD" administrator),
    $(user orderflow "$RABBITMQ_ORDERFLOW_PASSWORD" ""),
    $(user orderflow-monitor "$RABBITMQ_MONITOR_PASSWORD" monitoring),
    $(user warehouse "$RABBITMQ_WAREHOUSE_PASSWORD" ""),
    $(user carts "$RABBITMQ_CARTS_PASSWORD" "")
  ],
  "vhosts": [{"name": "/"}],
  "permissions": [
    $(perm admin '.*' '.*' '.*'),
    $(perm orderflow "$own" "$own" "$own"),
    $(perm orderflow-monitor '^$' '^$' '^$'),
    $(perm warehouse '^$' '^inventory$' '^$'),
    $(perm carts '^$' '^carts$' '^$')
  ]
}
JSON
chmod 644 definitions.json

# A development certificate for HAProxy (a real deployment brings its own).
if [ ! -s tls.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$host" \
    -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
    -keyout tls.key -out tls.crt 2>/dev/null
  cat tls.crt tls.key > tls.pem
  rm tls.key
  chmod 644 tls.pem tls.crt
fi
echo "secrets in $(pwd): docker compose --env-file deploy/secrets/.env up --build"
