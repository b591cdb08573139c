"""Sampling engines behind one interface, and `make_engine` to pick one by name.

`auto` takes the first engine in `PREFERENCE` that can run the model on the device; fast engines
register themselves here as they are added.
"""

from __future__ import annotations

import logging

import torch

from ..models.base import VocoderModel
from .base import Engine
from .cpu import CpuEngine
from .cuda import CudaEngine
from .fold import FoldConfig, FoldEngine
from .reference import ReferenceEngine
from .sparse_cpu import SparseCpuEngine
from .sparse_cuda import SparseCudaEngine

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
            if reason is None and dtype not in engine.dtypes:
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
    "FoldConfig",
    "FoldEngine",
    "ReferenceEngine",
    "SparseCpuEngine",
    "SparseCudaEngine",
    "make_engine",
]
