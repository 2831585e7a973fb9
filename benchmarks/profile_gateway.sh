#!/usr/bin/env bash
# Profile natter's gateway with py-spy while it fans out to 1000 sockets (docs/benchmarks.md,
# "Where the time goes"). Needs py-spy (pip install py-spy) and root or ptrace permission.
#
#   benchmarks/profile_gateway.sh            # fanout-1000 at 20 msg/s, 10 s of samples
#   RATE=30 SECONDS_SAMPLED=10 benchmarks/profile_gateway.sh
#
# Writes benchmarks/results/gateway-fanout1000.{txt,svg} (collapsed stacks and flame graph) and
# prints the top frames (benchmarks/summarize_profile.py). Bounded: the run lasts 30 s of sending.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-benchmarks/results}
RATE=${RATE:-20}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-10}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"

"$BIN/python" -m natter bench run --scenario fanout --members 1000 --rate "$RATE" --duration 30 \
  --target natter --out "$OUT/profile-run.json" --no-plot &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT

gateway=""
for _ in $(seq 1 600); do  # the gateway is a child of this bench process
  gateway=$(pgrep -P "$bench" -f "natter gateway" || true)
  [ -n "$gateway" ] && break
  sleep 0.1
done
[ -n "$gateway" ] || { echo "no gateway process found" >&2; exit 1; }
for _ in $(seq 1 1200); do  # wait until the 1000 sockets are connected (open fds)
  fds=$(ls "/proc/$gateway/fd" 2>/dev/null | wc -l)
  [ "$fds" -ge 1000 ] && break
  sleep 0.1
done
sleep 4  # joins, presence frames, then the phase starts
"$BIN/py-spy" record --pid "$gateway" --duration "$SECONDS_SAMPLED" --rate 200 --nonblocking \
  --format raw -o "$OUT/gateway-fanout1000.txt"
"$BIN/py-spy" record --pid "$gateway" --duration "$SECONDS_SAMPLED" --rate 100 --nonblocking \
  -o "$OUT/gateway-fanout1000.svg"
wait "$bench"
trap - EXIT
"$BIN/python" benchmarks/summarize_profile.py "$OUT/gateway-fanout1000.txt" --samples-per-second 200 \
  --seconds "$SECONDS_SAMPLED"
