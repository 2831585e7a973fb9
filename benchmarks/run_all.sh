#!/usr/bin/env bash
# The measuring session behind docs/benchmarks.md: every scenario on natter and on both
# references, back to back, then one plot of everything. Bounded: about 25 minutes on 2 cores.
#
#   benchmarks/run_all.sh                # writes benchmarks/results/*.json and *.png
#   QUIET_WAIT=0 benchmarks/run_all.sh   # do not wait for other work on the machine to stop
#
# Needs the bench extra (python-socketio with aiohttp, matplotlib) in .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-benchmarks/results}
BIN=${BIN:-.venv/bin}
QUIET_WAIT=${QUIET_WAIT:-15}
mkdir -p "$OUT"
bench() { "$BIN/python" -m natter bench compare --quiet-wait "$QUIET_WAIT" "$@"; }

bench --scenario fanout --members 100 --rate 20 --duration 10 --out "$OUT/fanout-100.json"
bench --scenario fanout --members 1000 --rate 10 --duration 10 --out "$OUT/fanout-1000.json"
bench --scenario rooms --rooms 250 --room-size 4 --rate 1 --duration 10 --out "$OUT/rooms-250x4.json"
# Saturation: natter with one gateway per core (--gateways 2, as `natter up --gateways 2` runs it)
# against the references, then natter with ONE gateway alone for the record.
bench --scenario saturation --members 1000 --rate 2 --step-factor 1.25 --max-steps 20 --duration 8 \
  --gateways 2 --out "$OUT/saturation-1000-2gw.json"
"$BIN/python" -m natter bench run --target natter --quiet-wait "$QUIET_WAIT" --no-plot --scenario saturation \
  --members 1000 --rate 2 --step-factor 1.25 --max-steps 20 --duration 8 --out "$OUT/saturation-1000-1gw.json"
for k in 1000 5000 10000; do
  bench --scenario idle --connections "$k" --duration 5 --out "$OUT/idle-$k.json"
done
bench --scenario connect --churn-concurrency 16 --duration 10 --out "$OUT/connect.json"

"$BIN/python" -m natter bench plot "$OUT/fanout-100.json" "$OUT/fanout-1000.json" "$OUT/rooms-250x4.json" \
  "$OUT/saturation-1000-2gw.json" "$OUT/saturation-1000-1gw.json" "$OUT/idle-10000.json" "$OUT/connect.json" --out docs/benchmarks.png

# The floor under the rooms latency: acked JetStream publishes alone at fixed rates (open loop).
"$BIN/python" benchmarks/jetstream_floor.py --rate 250 500 1000 --streams 1 4 >"$OUT/jetstream-floor-open.md"
