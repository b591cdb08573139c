#!/usr/bin/env bash
# The CPU speed table of recipes/README.md: WaveRNN H = 384, 512, 896 with the reference and cpu
# engines, single stream on 1 thread and batch 4 on 2 threads, float32 and reduced precision.
# Run it on a quiet machine (here: under the team's heavy lock). JSON lines go to $1 (default
# bench-cpu.jsonl), the markdown table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-cpu.jsonl}
PY=${PYTHON:-.venv/bin/python}
: > "$OUT"
bench() { $PY -m vocoders.bench recipe=wavernn bench.device=cpu "$@" 2>/dev/null | tail -1 >> "$OUT"; }
for H in 384 512 896; do
  bench model.hidden_size=$H bench.engine=reference bench.seconds=0.25 bench.threads=1
  for D in float32 bfloat16 int8; do
    bench model.hidden_size=$H bench.engine=cpu bench.dtype=$D bench.seconds=2 bench.threads=1
  done
  bench model.hidden_size=$H bench.engine=reference bench.seconds=0.25 bench.threads=2 bench.batch=4
  for D in float32 bfloat16; do
    bench model.hidden_size=$H bench.engine=cpu bench.dtype=$D bench.seconds=1 bench.threads=2 bench.batch=4 \
      bench.reference_seconds=0.05
  done
done
$PY tools/bench_table.py "$OUT"
