#!/usr/bin/env bash
# The Sparse WaveRNN speed table: WaveRNN-896 with random weights pruned to 90/95/97% in 16x1 or 4x4
# blocks (R, the input matrix and the hidden output layers O1/O3, as recipe=sparse_wavernn), one
# stream, one thread, float32 / float16 / bfloat16 storage; plus the dense compiled engine on the
# unpruned model. One JSON record per line on stdout (python -m vocoders.bench). Run it alone:
#   flock /tmp/vocoders-heavy.lock tools/bench_sparse.sh > bench.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SECONDS_=${SECONDS_:-2}
run() { "$PY" -m vocoders.bench bench.seconds="$SECONDS_" bench.threads=1 bench.batch=1 "$@" 2>/dev/null | tail -1; }
for dtype in float32 float16 bfloat16; do
  for z in 0.90 0.95 0.97; do
    run recipe=sparse_wavernn sparsity.final_sparsity=$z bench.dtype=$dtype
  done
  run recipe=sparse_wavernn sparsity.final_sparsity=0.95 "sparsity.block=[4,4]" bench.dtype=$dtype
done
run recipe=wavernn bench.engine=cpu bench.dtype=float32
run recipe=wavernn bench.engine=cpu bench.dtype=bfloat16
