"""vocoders: autoregressive neural vocoders (WaveNet, WaveRNN and its sparse and subscale forms).

import vocoders
voc = vocoders.load("wavernn.safetensors", device="cpu")
audio = voc(mel)   # [n_mels, frames] -> [frames * hop]
"""

from __future__ import annotations

__version__ = "0.1.0"

from .engines.fold import FoldConfig
from .errors import CheckpointError
from .features import PRESETS, MelConfig, MelSpectrogram
from .inference import MelError, Vocoder, check_mel, load

__all__ = [
    "PRESETS",
    "CheckpointError",
    "FoldConfig",
    "MelConfig",
    "MelError",
    "MelSpectrogram",
    "Vocoder",
    "__version__",
    "check_mel",
    "load",
]
