# Sourced by run.sh and closed.sh: a service of its own for a load run — its own database,
# vhost and port, secrets made up for the run, everything removed on exit.
#   start_service BIN LOG    (re)starts it; sets $url
#   stop_service             stops it and drops its database and vhost
name="of_load_$$"
work=$(mktemp -d)
pid=""
url=""
stop_service() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  pid=""
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true
  rabbitmqctl -q delete_vhost "$name" >/dev/null 2>&1 || true
}
trap 'stop_service; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
export ADMIN_TOKEN="load-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AUTH_JWT_SECRET="load-jwt-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$name"
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$name"
start_service() {
  stop_service
  rabbitmqctl -q add_vhost "$name" >/dev/null
  rabbitmqctl -q set_permissions -p "$name" guest ".*" ".*" ".*" >/dev/null
  rm -f "$work/port"
  HTTP_ADDR=127.0.0.1:0 PORT_FILE="$work/port" "$1" serve >"$2" 2>&1 &
  pid=$!
  for _ in $(seq 1 60); do
    [ -s "$work/port" ] && curl -sf "http://127.0.0.1:$(cat "$work/port")/health/ready" >/dev/null && break
    sleep 1
  done
  url="http://127.0.0.1:$(cat "$work/port" 2>/dev/null)"
  curl -sf "$url/health/ready" >/dev/null || { tail -30 "$2"; exit 1; }
}
