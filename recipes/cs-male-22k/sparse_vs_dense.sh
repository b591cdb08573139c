#!/usr/bin/env bash
# The WaveRNN paper's trade-off on cs-male-22k: a dense WaveRNN against a larger Sparse WaveRNN with
# about the same number of non-zero weights, trained for the same number of steps; validation
# cross-entropy (coarse, fine) of both. Sized for a CPU budget of at most 40 minutes per run:
#   dense  H=128, O hidden 64                      ~140k GRU + output weights
#   sparse H=256, O hidden 64, 65% of R, I, O1, O3 pruned in 16x1 blocks   ~142k non-zero
# (the conditioning network, identical in both, is not counted). The sparse run goes first under a
# wall-clock limit; the dense run then trains to the last step the sparse run validated.
# Usage: recipes/cs-male-22k/sparse_vs_dense.sh sparse|dense [OUT_DIR] [MAX_STEPS] [SECONDS]
# (each phase is one run: take the heavy lock per phase on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PHASE=${1:?usage: $0 sparse|dense [OUT_DIR] [MAX_STEPS] [SECONDS]}
OUT=${2:-runs/sparse_vs_dense}
STEPS=${3:-2400}
LIMIT=${4:-2400}
DATA=${DATA:-../shared/data/cs-male-22k/metadata.csv}
COMMON=(
  data.path="$DATA" device=cpu trainer.threads=1 trainer.progress=false
  model.out_hidden=64 data.batch_size=16 data.segment_frames=2 optim.lr=1e-3
  trainer.val_every=300 trainer.checkpoint_every=300 trainer.log_every=100 trainer.val_audio_seconds=1
  trainer.keep_checkpoints=20
)
if [ "$PHASE" = sparse ]; then
timeout "$LIMIT" "$PY" -m vocoders.train recipe=sparse_wavernn name=tradeoff_sparse run_dir="$OUT/sparse" \
  model.hidden_size=256 trainer.max_steps="$STEPS" \
  sparsity.final_sparsity=0.65 sparsity.start_step=100 sparsity.duration=800 sparsity.prune_every=25 \
  "sparsity.targets=[gru_hh,gru_ih,O1,O3]" "${COMMON[@]}" || echo "sparse run stopped by the time limit"
exit 0
fi
REACHED=$("$PY" - "$OUT/sparse/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if '"valid"' in l]
print(max(steps))
PY
)
echo "sparse run validated up to step $REACHED; dense run to the same step"
timeout "$LIMIT" "$PY" -m vocoders.train recipe=wavernn name=tradeoff_dense run_dir="$OUT/dense" \
  model.hidden_size=128 trainer.max_steps="$REACHED" "${COMMON[@]}"
