"""Sampling engines behind one interface, and `make_engine` to pick one by name.

At the top: `base` (the Engine interface), `reference` (the plain PyTorch loop every fast engine is
tested against) and `fold` (batched folding around any engine). One sub-package per backend:
`cpu/` (the compiled C loops, their numba fallbacks and weight packers) and `cuda/` (CUDA-graph
steppers and Triton kernels). `auto` takes the first engine in `PREFERENCE` that can run the model
on the device.
"""

from __future__ import annotations

import logging

import torch

from ..models.base import VocoderModel
from .base import Engine, EngineStream, StreamingError
from .cpu import CpuEngine, SparseCpuEngine
from .cpu.engine import family_engine
from .cuda import CudaEngine, SparseCudaEngine
from .fold import FoldConfig, FoldEngine
from .reference import ReferenceEngine

log = logging.getLogger(__name__)

ENGINES: dict[str, type[Engine]] = {
    cls.name: cls for cls in (SparseCudaEngine, CudaEngine, SparseCpuEngine, CpuEngine, ReferenceEngine)
}
# Fastest first; `auto` picks the first available (sparse-cuda and cuda report themselves unavailable
# off a CUDA device, the sparse engines for models without pruned matrices, cpu off the CPU or without
# its compiled extension). On a GPU `cuda` comes before `sparse-cuda`: at batch 1 its persistent kernel
# runs a chunk in one launch, where sparse-cuda replays some 40 kernels per step; neither has been
# timed yet, so the sparse GPU path is asked for by name until a measurement says otherwise.
PREFERENCE: list[str] = ["cuda", "sparse-cuda", "sparse-cpu", "cpu", "reference"]


def make_engine(
    name: str, model: VocoderModel, device: torch.device | str = "cpu", dtype: str = "float32", **options
) -> Engine:
    """Build engine `name` ("auto" for the fastest available) for `model` on `device`.

    dtype: weight storage ("float32" everywhere; "bfloat16", "float16" or "int8" where an engine lists
    it in `Engine.dtypes`); `auto` skips engines that do not offer it. `options` go to the engine's
    constructor (for example kernel="graph" for cuda).
    """
    device = torch.device(device)
    if name == "auto":
        skipped = []
        for candidate in PREFERENCE:
            engine = ENGINES[candidate]
            reason = engine.available_to_auto(model, device)
            offered = (family_engine(model) or engine).dtypes if candidate == "cpu" else engine.dtypes
            if reason is None and dtype not in offered:
                reason = f"no {dtype} weights"
            if reason is None:
                log.debug("engine auto -> %s", candidate)
                return engine(model, device, dtype=dtype, **options)
            skipped.append(f"{candidate}: {reason}")
        raise RuntimeError(f"no engine can run {model.name} on {device} with {dtype} weights ({'; '.join(skipped)})")
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: auto, {', '.join(sorted(ENGINES))}")
    reason = ENGINES[name].available(model, device)
    if reason is not None:
        raise RuntimeError(f"engine {name!r} cannot run {model.name} on {device}: {reason}")
    return ENGINES[name](model, device, dtype=dtype, **options)


__all__ = [
    "ENGINES",
    "PREFERENCE",
    "CpuEngine",
    "CudaEngine",
    "Engine",
    "EngineStream",
    "FoldConfig",
    "FoldEngine",
    "ReferenceEngine",
    "SparseCpuEngine",
    "SparseCudaEngine",
    "StreamingError",
    "make_engine",
]
