"""Vocoder networks and the registry that maps checkpoint names to classes."""

from __future__ import annotations

from typing import Any

from .base import VocoderModel
from .lpcnet import LPCNet
from .subscale import SubscaleWaveRNN
from .wavenet import WaveNet
from .wavernn import WaveRNN

MODELS: dict[str, type[VocoderModel]] = {cls.name: cls for cls in (WaveNet, WaveRNN, SubscaleWaveRNN, LPCNet)}


def build_model(name: str, mel: dict[str, Any] | None, kwargs: dict[str, Any]) -> VocoderModel:
    """Rebuild a model from a checkpoint's plain metadata (no Hydra involved)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](mel=mel, **kwargs)


__all__ = ["LPCNet", "MODELS", "SubscaleWaveRNN", "VocoderModel", "WaveNet", "WaveRNN", "build_model"]
