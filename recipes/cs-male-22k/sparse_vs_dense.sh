#!/usr/bin/env bash
# The WaveRNN paper's trade-off on cs-male-22k: a dense WaveRNN against a larger Sparse WaveRNN with
# about the same number of non-zero weights, trained for the same number of steps; validation
# cross-entropy (coarse, fine) of both at the same step. Sized for a small CPU budget:
#   dense  H=128, O hidden 64
#   sparse H=256, O hidden 64, 65% of R, I, O1, O3 pruned in 16x1 blocks (schedule done by step 450)
# `compare` counts the non-zero weights of both (the conditioning network, identical in both, apart)
# from their last checkpoints and prints the validation losses at the last step both validated.
# Usage: recipes/cs-male-22k/sparse_vs_dense.sh sparse|dense|both|compare [OUT_DIR] [MAX_STEPS] [SECONDS]
#   both: the two runs at once, one thread each (a 2-core machine: take the heavy lock once for it),
#   each stopped at MAX_STEPS or after SECONDS, then `compare`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PHASE=${1:?usage: $0 sparse|dense|both|compare [OUT_DIR] [MAX_STEPS] [SECONDS]}
OUT=${2:-runs/sparse_vs_dense}
STEPS=${3:-3000}
LIMIT=${4:-1080}
DATA=${DATA:-../shared/data/cs-male-22k/metadata.csv}
COMMON=(
  data.path="$DATA" device=cpu trainer.threads=1 trainer.progress=false
  model.out_hidden=64 data.batch_size=16 data.segment_frames=2 optim.lr=1e-3
  trainer.val_every=100 trainer.checkpoint_every=100 trainer.log_every=100 trainer.val_audio_seconds=1
  trainer.keep_checkpoints=40 trainer.max_steps="$STEPS"
)
sparse() {
  timeout "$LIMIT" "$PY" -m vocoders.train recipe=sparse_wavernn name=tradeoff_sparse run_dir="$OUT/sparse" \
    model.hidden_size=256 sparsity.final_sparsity=0.65 sparsity.start_step=50 sparsity.duration=400 \
    sparsity.prune_every=25 "sparsity.targets=[gru_hh,gru_ih,O1,O3]" "${COMMON[@]}" \
    || echo "sparse run stopped (time limit $LIMIT s)"
}
dense() {
  timeout "$LIMIT" "$PY" -m vocoders.train recipe=wavernn name=tradeoff_dense run_dir="$OUT/dense" \
    model.hidden_size=128 "${COMMON[@]}" || echo "dense run stopped (time limit $LIMIT s)"
}
compare() {
  "$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from vocoders.checkpoint import read_checkpoint

out = Path(sys.argv[1])
valid = {}
for name in ("dense", "sparse"):
    rows = [json.loads(line) for line in open(out / name / "metrics.jsonl")]
    valid[name] = {r["step"]: r for r in rows if r.get("kind") == "valid"}
common = sorted(set(valid["dense"]) & set(valid["sparse"]))
if not common:
    sys.exit("no step validated by both runs")
step = common[-1]
print(f"last step validated by both: {step} (dense reached {max(valid['dense'])}, sparse {max(valid['sparse'])})")
for name in ("dense", "sparse"):
    ckpt = read_checkpoint(out / name / "checkpoints" / f"step-{step:08d}.safetensors")
    weights = ckpt.extras.get("ema", ckpt.tensors)
    counted = {k: v for k, v in weights.items() if not k.startswith(("cond_net.", "upsampler."))}
    nonzero = sum(int((v != 0).sum()) for v in counted.values() if v.dim() >= 2)
    total = sum(v.numel() for v in counted.values() if v.dim() >= 2)
    print(json.dumps({"run": name, "step": step, "nonzero_weights": nonzero,
                      "weights": total, "matrices": sorted(k for k, v in counted.items() if v.dim() >= 2),
                      "sparsity": ckpt.meta.get("sparsity", {}).get("current"), "valid": valid[name][step]}))
PY
}
case "$PHASE" in
  sparse) sparse ;;
  dense) dense ;;
  both) sparse & dense & wait; compare ;;
  compare) compare ;;
  *) echo "unknown phase $PHASE (sparse|dense|both|compare)" >&2; exit 2 ;;
esac
