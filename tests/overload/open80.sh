#!/usr/bin/env bash
# Latency below capacity (issue 19): for each build in turn, a fresh service (its own database,
# vhost and port; removed after), its capacity C from a closed loop of 128 customers over 10,000
# SKUs, then an open loop at 80 % of C for 30 s with 1,024 clients in flight over the same SKUs —
# the accept→decided percentiles at each build's own 80 %. The first binary's load generator
# drives every build.
#   tests/overload/open80.sh BIN [BIN ...]
#   env: ROUNDS=1  SHARE=80 (percent of C)  OVER=30 (seconds)  OUT=dir for the logs
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
bins=(); for b in "$@"; do bins+=("$(realpath "$b")"); done
loadgen_bin=${bins[0]}
rounds=${ROUNDS:-1}; share=${SHARE:-80}; over=${OVER:-30}
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
. "$(dirname "$0")/service.sh"
failed=0
for round in $(seq 1 "$rounds"); do
  for i in "${!bins[@]}"; do
    bin=${bins[$i]}
    start_service "$bin" "$out/r$round-b$i.service.log"
    closed="$out/r$round-b$i-closed.log"
    "$loadgen_bin" loadgen --url "$url" --customers 128 --orders 20000 --hot-share 0 --skus 10000 \
      >"$closed" 2>&1 || { echo "round $round, build $i: the closed loop failed"; failed=1; }
    capacity=$(awk '/^decided\/s/ {print $2}' "$closed")
    [ -n "$capacity" ] || { cat "$closed"; exit 1; }
    rate=$((capacity * share / 100))
    log="$out/r$round-b$i-open.log"
    if "$loadgen_bin" loadgen --url "$url" --customers 1024 --hot-share 0 --skus 10000 \
        --rate "$rate" --duration "$over" >"$log" 2>&1; then
      verdict=ok
    else
      verdict="FAILED: $(tail -1 "$log")"; failed=1
    fi
    echo "round $round, build $i ($bin): capacity $capacity decided/s; open loop at $share % = $rate/s: $verdict"
    grep -E "^  its arrivals|^  decided|^CPU per|^consistency" "$log" | sed 's/^/    /'
    stop_service
  done
done
echo "logs: $out"
exit $failed
