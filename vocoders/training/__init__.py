"""Training: `train(cfg)` from a composed Hydra config.

    loop.py            `Trainer` (set-up, training step, EMA, `fit`, metrics) and `train(cfg)`
    checkpointing.py   checkpoint I/O, pruning of old checkpoints, resume, `trainer.init_from`
    validation.py      validation loss on fixed segments, validation audio

Run directory layout (`cfg.run_dir`):
    checkpoints/step-00001000.safetensors   inference checkpoint (weights + metadata)
    checkpoints/step-00001000.state.pt      optimizer, scheduler, RNG (for resuming)
    checkpoints/last.safetensors            the latest checkpoint (a hard link)
    samples/step-00001000_<utt>.wav         validation audio
    metrics.jsonl                           one JSON object per logged step and validation
"""

from __future__ import annotations

from .checkpointing import CHECKPOINT_PATTERN, CheckpointingMixin
from .loop import (  # noqa: F401  (the private helpers: the tests import them from here)
    Trainer,
    TrainResult,
    _autocast_dtype,
    _LossOf,
    _lr_lambda,
    build_model,
    embedded_sample,
    resolve_device,
    seed_everything,
    train,
)
from .validation import ValidationMixin

__all__ = [
    "CHECKPOINT_PATTERN",
    "CheckpointingMixin",
    "TrainResult",
    "Trainer",
    "ValidationMixin",
    "build_model",
    "embedded_sample",
    "resolve_device",
    "seed_everything",
    "train",
]
