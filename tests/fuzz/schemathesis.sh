#!/usr/bin/env bash
# The outside fuzzing client against a running orderflow, from its own /openapi.json: every
# schemathesis check (schemathesis.toml says what it widens and why), NUL bytes allowed, once
# with the admin token (support staff: every route) and once with a customer's token; plus the
# check that no body carries driver, SQL or broker text (driver_hook.py).
#   pip install schemathesis
#   tests/fuzz/schemathesis.sh http://127.0.0.1:8080 "$ADMIN_TOKEN" "$CUSTOMER_TOKEN" [examples per operation]
set -euo pipefail
base=${1:?base URL}; admin=${2:?admin token}; customer=${3:?customer token}; examples=${4:-25}
cd "$(dirname "$0")"
status=0
for who in admin customer; do
  token=$admin; [ "$who" = customer ] && token=$customer
  echo "== as $who"
  # One worker: with two threads, hypothesis (6.170) describing a strategy's lambdas races on
  # CPython 3.11's AST parser ("SystemError: AST constructor recursion depth mismatch") and the
  # run ends in a tool error that is no finding about the API (seen in CI, 2026-12-06).
  SCHEMATHESIS_HOOKS=driver_hook st --config-file schemathesis.toml run "$base/openapi.json" \
    -H "Authorization: Bearer $token" --generation-allow-x00 true \
    -n "$examples" --workers 1 --phases examples,coverage,fuzzing,stateful || status=1
done
exit $status
