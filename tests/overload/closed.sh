#!/usr/bin/env bash
# Closed-loop capacity of one or more builds, side by side in one go (issue 19): for each round,
# each build in turn gets a fresh service (its own database, vhost and port; removed after) and
# two closed loops of 128 customers — one hot SKU, and 10,000 SKUs uniform — with the same load
# generator (the first binary's). Prints decided/s, accept→decided percentiles and the CPU per
# decided order of every process, as the generator reports them.
#   tests/overload/closed.sh BIN [BIN ...]
#   env: ROUNDS=2  ORDERS=20000  PROBE=0 (seconds per side of the limit probe; 0 skips it)
#        OUT=dir for the logs
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN [BIN ...]" >&2; exit 2; }
bins=(); for b in "$@"; do bins+=("$(realpath "$b")"); done
loadgen_bin=${bins[0]}
rounds=${ROUNDS:-2}; orders=${ORDERS:-20000}; probe=${PROBE:-0}
out=${OUT:-$(mktemp -d)}; mkdir -p "$out"
. "$(dirname "$0")/service.sh"
failed=0
for round in $(seq 1 "$rounds"); do
  for i in "${!bins[@]}"; do
    bin=${bins[$i]}
    for shape in hot skus; do
      case $shape in
        hot) args=(--hot-share 1 --hot-stock 1000000) ;;
        skus) args=(--hot-share 0 --skus 10000) ;;
      esac
      log="$out/r$round-b$i-$shape.log"
      start_service "$bin" "$out/r$round-b$i-$shape.service.log"
      if "$loadgen_bin" loadgen --url "$url" --customers 128 --orders "$orders" \
          --probe-seconds "$probe" "${args[@]}" >"$log" 2>&1; then
        verdict=ok
      else
        verdict="FAILED"; failed=1
      fi
      echo "round $round, build $i ($bin), $shape: $verdict"
      grep -E "^decided/s|^accept|^CPU per|^service CPU|^against probe|^work per|^consistency" "$log" | sed 's/^/    /'
      stop_service
    done
  done
done
echo "logs: $out"
exit $failed
