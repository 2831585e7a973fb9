#!/usr/bin/env bash
# Profile some of natter's processes with py-spy while one `natter bench run` loads them
# (docs/benchmarks.md, "Where the time goes"). Needs py-spy and ptrace permission.
#
#   benchmarks/profile_processes.sh NAME PROCESS... -- BENCH-RUN-OPTIONS
#   benchmarks/profile_processes.sh rooms gateway chat -- --scenario rooms --duration 25
#   benchmarks/profile_processes.sh connect gateway notify -- --scenario connect --duration 25
#   WARM=25 benchmarks/profile_processes.sh fanout gateway -- --scenario fanout --members 1000 --rate 40 --duration 30
#
# PROCESS is a natter command (gateway, auth, chat, notify). After WARM seconds (the stack is
# up and the sockets connected) each process is sampled for SECONDS_SAMPLED seconds at 200 Hz;
# the collapsed stacks go to benchmarks/results/profile-NAME-PROCESS.txt and their summaries
# (benchmarks/summarize_profile.py) are printed. Bounded by the bench run's own duration.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-benchmarks/results}
BIN=${BIN:-.venv/bin}
WARM=${WARM:-22}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-8}
name=$1
shift
processes=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do processes+=("$1"); shift; done
[ "$#" -gt 0 ] && shift
mkdir -p "$OUT"

"$BIN/python" -m natter bench run --target natter "$@" --out "$OUT/profile-$name-run.json" --no-plot \
  > "$OUT/profile-$name-run.log" 2>&1 &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT
sleep "$WARM"
samplers=()
for process in "${processes[@]}"; do
  pid=$(pgrep -P "$bench" -f "natter $process" | head -1 || true)
  [ -n "$pid" ] || { echo "no $process process found" >&2; exit 1; }
  "$BIN/py-spy" record --pid "$pid" --duration "$SECONDS_SAMPLED" --rate 200 --nonblocking \
    --format raw -o "$OUT/profile-$name-$process.txt" > /dev/null 2>&1 &
  samplers+=($!)
done
wait "${samplers[@]}"
wait "$bench"
trap - EXIT
for process in "${processes[@]}"; do
  echo "## profile-$name-$process"
  "$BIN/python" benchmarks/summarize_profile.py "$OUT/profile-$name-$process.txt" --top 25 \
    --samples-per-second 200 --seconds "$SECONDS_SAMPLED"
done
