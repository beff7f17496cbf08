#!/usr/bin/env bash
# The outside fuzzing client against a running orderflow, from its own /openapi.json, with the
# admin token (so every route, customer routes included, is reachable): no 5xx, and no driver,
# SQL or broker text in any body (driver_hook.py; text the request itself carried is not counted).
#   pip install schemathesis
#   tests/fuzz/schemathesis.sh http://127.0.0.1:8080 "$ADMIN_TOKEN" [max examples per operation]
set -euo pipefail
base=${1:?base URL}; token=${2:?admin token}; examples=${3:-25}
cd "$(dirname "$0")"
SCHEMATHESIS_HOOKS=driver_hook st run "$base/openapi.json" \
  -H "Authorization: Bearer $token" \
  -c not_a_server_error,no_driver_text -n "$examples" --workers 2
