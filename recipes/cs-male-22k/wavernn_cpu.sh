#!/usr/bin/env bash
# The CPU recipe on cs-male-22k: train (resumable), evaluate on the 30 valid utterances, ship.
# Usage: recipes/cs-male-22k/wavernn_cpu.sh train|evaluate|ship|curves [RUN_DIR] [THREADS]
#   train     python -m vocoders.train recipe=wavernn_cpu; re-running with the same RUN_DIR resumes
#             (keep RUN_DIR outside the work tree: it outlives a clone)
#   evaluate  copy synthesis of RUN_DIR's last checkpoint vs Griffin-Lim (60 it.), DNSMOS included
#   ship      the evaluated checkpoint into vocoders/assets/pretrained/cs-male-22k.{safetensors,md}
#   curves    validation CE against CPU-minutes (PNG beside this script's results)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PHASE=${1:?usage: $0 train|evaluate|ship|curves [RUN_DIR] [THREADS]}
RUN=${2:-/work/runs/wavernn_cpu}
THREADS=${3:-1}
DATA=${DATA:-../shared/data/cs-male-22k/metadata.csv}
REPORT=${REPORT:-$RUN/report}
case "$PHASE" in
  train)
    "$PY" -m vocoders.train recipe=wavernn_cpu data.path="$DATA" run_dir="$RUN" trainer.threads="$THREADS" \
      trainer.val_every=250 trainer.checkpoint_every=250 trainer.log_every=25 trainer.progress=false \
      trainer.val_audio_seconds=1.0 ;;
  evaluate)
    "$PY" -m vocoders.evaluate "$RUN/checkpoints/last.safetensors" "$DATA" -o "$REPORT" --split valid \
      --engine auto --device cpu --seed 0 --batch-size 10 --griffin-lim-iters 60 --no-progress ;;
  ship)
    step=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$REPORT/report.json")
    "$PY" tools/ship_pretrained.py "$RUN/checkpoints/step-$(printf %08d "$step").safetensors" --name cs-male-22k \
      --report "$REPORT" --cpu-hours "${CPU_HOURS:?set CPU_HOURS (from tools/plot_curves.py)}" \
      --command "recipes/cs-male-22k/wavernn_cpu.sh train $RUN" --notes "${NOTES:-}" ;;
  curves)
    "$PY" tools/plot_curves.py -o recipes/cs-male-22k/results/wavernn_cpu/curves.png "wavernn_cpu=$RUN:$THREADS" ;;
  *) echo "unknown phase $PHASE" >&2; exit 2 ;;
esac
