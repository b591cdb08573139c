#!/usr/bin/env bash
# Subscale WaveRNN (B = 8 and B = 16) against plain WaveRNN on cs-male-22k, after the same number of
# training steps: validation cross-entropy (coarse + fine, nats per sample) on the same fixed segments.
# One common small size for a CPU budget of at most 40 minutes per run:
#   core    H = 256, O hidden 128, conditioning 64 channels x 2 blocks (the same in all three)
#   subscale F = 32, 16 context channels per sub-tensor, dilations 1..32
#   data    segments of 8 frames (2048 samples: 128 positions per sub-tensor at B = 16), batch 8
# (plain WaveRNN's sequential GRU over the segment is what limits the steps a CPU budget allows)
#   optim   Adam 1e-3, gradient clip 4
# The plain run goes first under a wall-clock limit; the subscale runs then train to the last step it
# validated (each under the same limit).
# Usage: recipes/cs-male-22k/subscale_vs_plain.sh plain|sub8|sub16|all [OUT_DIR] [MAX_STEPS] [SECONDS]
# (each phase is one run: take the heavy lock per phase on a shared machine). `all` trains the three
# at once, one thread each, each under the same wall-clock limit and validating every VAL_EVERY steps,
# and prints the last step all three validated (compare there).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PHASE=${1:?usage: $0 plain|sub8|sub16 [OUT_DIR] [MAX_STEPS] [SECONDS]}
OUT=${2:-runs/subscale_vs_plain}
STEPS=${3:-20000}
LIMIT=${4:-2400}
DATA=${DATA:-../shared/data/cs-male-22k/metadata.csv}
COMMON=(
  data.path="$DATA" device=cpu trainer.threads="${THREADS:-2}" trainer.progress=false
  model.hidden_size=256 model.out_hidden=128 model.cond_channels=64 model.cond_blocks=2
  data.batch_size=8 data.segment_frames=8 data.valid_segments=32 optim.lr=1e-3 trainer.grad_clip=4
  trainer.val_every="${VAL_EVERY:-250}" trainer.checkpoint_every="${VAL_EVERY:-250}" trainer.log_every=50
  trainer.val_audio_seconds="${VAL_AUDIO_SECONDS:-1}"
  trainer.keep_checkpoints=2
)
SUBSCALE=(model.horizon=32 model.context_channels=16)
mkdir -p "$OUT"
if [ "$PHASE" = all ]; then
  THREADS=1 "$0" plain "$OUT" "$STEPS" "$LIMIT" > "$OUT.plain.log" 2>&1 &
  for B in 8 16; do
    timeout "$LIMIT" "$PY" -m vocoders.train recipe=subscale_wavernn name="compare_sub$B" run_dir="$OUT/sub$B" \
      model.subscale="$B" "${SUBSCALE[@]}" trainer.max_steps="$STEPS" "${COMMON[@]}" trainer.threads=1 \
      > "$OUT.sub$B.log" 2>&1 || echo "sub$B run stopped by the time limit" &
  done
  wait
  "$PY" - "$OUT" <<'PY'
import json, sys
runs = {name: [json.loads(line) for line in open(f"{sys.argv[1]}/{name}/metrics.jsonl") if '"valid"' in line]
        for name in ("plain", "sub8", "sub16")}
common = min(max(r["step"] for r in rows) for rows in runs.values())
print(f"last step all three validated: {common}")
for name, rows in runs.items():
    print(name, json.dumps(next(r for r in rows if r["step"] == common)))
PY
  exit 0
fi
if [ "$PHASE" = plain ]; then
  timeout "$LIMIT" "$PY" -m vocoders.train recipe=wavernn name=compare_plain run_dir="$OUT/plain" \
    trainer.max_steps="$STEPS" "${COMMON[@]}" || echo "plain run stopped by the time limit"
  exit 0
fi
REACHED=$("$PY" - "$OUT/plain/metrics.jsonl" <<'PY'
import json, sys
print(max(json.loads(line)["step"] for line in open(sys.argv[1]) if '"valid"' in line))
PY
)
B=${PHASE#sub}
echo "plain run validated up to step $REACHED; subscale B=$B to the same step"
timeout "$LIMIT" "$PY" -m vocoders.train recipe=subscale_wavernn name="compare_sub$B" run_dir="$OUT/sub$B" \
  model.subscale="$B" "${SUBSCALE[@]}" trainer.max_steps="$REACHED" "${COMMON[@]}"
