#!/usr/bin/env bash
# Everything a session with a lent GPU (H100 or H200) does, in one device call of at most 10 minutes:
#   1. install what the device image lacks from wheels carried in .whl/, and this package;
#   2. run the tests marked `gpu` (CUDA engine against the reference engine, real Triton kernels);
#   3. print every CUDA benchmark JSON line (WaveRNN-896 single stream and batched, Sparse WaveRNN,
#      Subscale B = 16 and 8 with the plain core timed in the same run, the wavenet recipe, and the
#      streaming figures of WaveRNN-896 and WaveNet on cuda at 1, 4 and 16-frame chunks).
#
# Before the call, on the development machine (PyPI reachable), once per checkout:
#     tools/fetch_gpu_wheels.sh                  # fills .whl/ (about 3 MB, ignored by git)
# Then the device tool's `run` with carry [".whl"] and the command
#     bash tools/gpu_session.sh                  # or: bash tools/gpu_session.sh tests | bench
# Output: test summary, one `=== bench ...` header and one JSON line per benchmark, and the full log in
# $OUT/gpu_session.log (comes back with the call). Each stage has its own time limit so that a hung
# kernel (a grid sync that never completes) cannot eat the whole call.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
STAGES=${1:-all}
PY=${PYTHON:-python3}
DEADLINE=${GPU_SESSION_SECONDS:-570}  # the device tool stops a command at 600 s
LOG=${OUT:-/tmp}/gpu_session.log
: >"$LOG"

say() { echo "=== $*" | tee -a "$LOG"; }
# seconds a stage may take: at most $1, and never past the deadline
budget() { local left=$((DEADLINE - SECONDS)); echo $((left < $1 ? left : $1)); }

# ---- 1. environment -----------------------------------------------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { say "wheel install failed (see log)"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  say "no .whl/: run tools/fetch_gpu_wheels.sh here and carry .whl; trying without"
fi
# The package itself, without touching the image's torch: an editable install, or else conf/ linked
# in as vocoders.conf and the repository on the path.
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$LOG" 2>&1; then
  ln -sfn ../conf vocoders/conf
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  say "editable install failed; using the source tree on PYTHONPATH"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import torch, triton, vocoders, vocoders.conf, librosa, soundfile, hydra
p = torch.cuda.get_device_properties(0)
print(f"=== torch {torch.__version__}, triton {triton.__version__}, {p.name}, {p.multi_processor_count} SMs, "
      f"{p.total_memory / 2**30:.0f} GiB")
EOF
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv 2>&1 | tee -a "$LOG"

# ---- 2. tests -------------------------------------------------------------------------------------
if [ "$STAGES" = all ] || [ "$STAGES" = tests ]; then
  say "pytest -m gpu"
  timeout -k 10 "$(budget 240)" "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/ 2>&1 | tee -a "$LOG" | tail -25
  say "pytest exit ${PIPESTATUS[0]} (124: timed out, a kernel may hang)"
fi

# ---- 3. benchmarks (python -m vocoders.bench, keys as documented in issue #4) ----------------------
bench() {
  local line limit
  limit=$(budget 90)
  if [ "$limit" -lt 30 ]; then say "skipped (out of time): bench $*"; return; fi
  say "bench $*"
  line=$(timeout -k 5 "$limit" "$PY" -m vocoders.bench "$@" bench.device=cuda 2>>"$LOG" | tee -a "$LOG" | grep '^{' | tail -1)
  if [ -n "$line" ]; then echo "$line"; else echo "{\"failed\": \"$*\", \"see\": \"gpu_session.log\"}"; fi
}
if [ "$STAGES" = all ] || [ "$STAGES" = bench ]; then
  W896="recipe=wavernn model.hidden_size=896"
  bench $W896 bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=4
  bench $W896 bench.engine=cuda bench.batch=1 bench.dtype=bfloat16 bench.seconds=4
  bench $W896 bench.engine=cuda bench.batch=64 bench.dtype=bfloat16 bench.seconds=2
  bench $W896 bench.engine=cuda bench.batch=256 bench.dtype=bfloat16 bench.seconds=2
  bench recipe=sparse_wavernn bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=2
  bench recipe=sparse_wavernn bench.engine=sparse-cuda bench.batch=1 bench.dtype=float32 bench.seconds=2
  bench recipe=sparse_wavernn bench.engine=sparse-cuda bench.batch=1 bench.dtype=bfloat16 bench.seconds=2
  bench recipe=subscale_wavernn model.subscale=16 bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=2
  bench recipe=subscale_wavernn model.subscale=8 bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=2
  bench recipe=wavenet bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=2
  bench recipe=wavenet bench.engine=cuda bench.batch=1 bench.dtype=bfloat16 bench.seconds=2
  bench $W896 bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=2 "bench.stream_chunk=[1,4,16]" bench.stream_repeats=2
  bench recipe=wavenet bench.engine=cuda bench.batch=1 bench.dtype=float32 bench.seconds=2 "bench.stream_chunk=[1,4,16]" bench.stream_repeats=2
fi
say "done"
