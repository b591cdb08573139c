#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels a lent GPU machine lacks, into .whl/ (ignored by
# git), for tools/gpu_session.sh to install there without a network.
#
# The GPU image (Python 3.12, x86-64) already has torch, triton, numpy, scipy, scikit-learn, numba,
# safetensors, tqdm, pyyaml, msgpack, lazy-loader, joblib, requests; it lacks the audio and config
# stack below. Versions are pinned to what this project's CPU environment runs.
#   usage: tools/fetch_gpu_wheels.sh [DEST]      (DEST defaults to .whl in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DEST"

# name==version of each missing distribution (with their own missing needs).
BINARY=(
  librosa==0.11.0 audioread==3.1.0 decorator==5.3.1 pooch==1.9.0 platformdirs==4.14.7
  soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 soxr==1.1.0
  hydra-core==1.3.8 omegaconf==2.3.1
)
# Published only as a source archive (pure Python): built into a wheel here.
SOURCE_ONLY=(antlr4-python3-runtime==4.9.3)

PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
for spec in "${BINARY[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" "$spec"
done
for spec in "${SOURCE_ONLY[@]}"; do
  "$PY" -m pip wheel -q --no-deps -w "$DEST" "$spec"
done
ls -l "$DEST"
du -sh "$DEST"
