"""Where training progress goes besides metrics.jsonl: a sink the Trainer calls, TensorBoard when installed.

The Trainer knows only the `MetricSink` interface (`scalars`, `validation_audio`, `close`), so other
trackers can be added without touching the loop. `make_sink("auto", run_dir)` gives a TensorBoard
sink writing to `<run_dir>/tensorboard` when the `tensorboard` package is installed, else a sink
that does nothing.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch

from .features import MelConfig, MelSpectrogram

log = logging.getLogger(__name__)


class MetricSink:
    """Receives what training measures. The base class ignores everything."""

    def scalars(self, kind: str, step: int, values: dict[str, float]) -> None:
        """values of one logging event; kind is "train" or "valid"."""

    def validation_audio(self, step: int, name: str, audio: torch.Tensor, mel: np.ndarray, config: MelConfig) -> None:
        """Generated validation audio [samples] (float, [-1, 1]) and the mel [n_mels, frames] it came from."""

    def close(self) -> None:
        """Flush and release files."""


class TensorBoardSink(MetricSink):
    """Scalars as `<kind>/<name>`, validation audio, and an image of the conditioning mel over the generated one."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def scalars(self, kind: str, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{kind}/{name}", float(value), step)
        self.writer.flush()

    def validation_audio(self, step: int, name: str, audio: torch.Tensor, mel: np.ndarray, config: MelConfig) -> None:
        audio = audio.detach().float().cpu().clamp(-1.0, 1.0)
        self.writer.add_audio(f"valid/audio/{name}", audio.unsqueeze(0), step, sample_rate=config.sample_rate)
        self.writer.add_image(f"valid/mel/{name}", mel_image(mel, audio, config), step, dataformats="HW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def mel_image(mel: np.ndarray, audio: torch.Tensor, config: MelConfig) -> np.ndarray:
    """Grey image [2 * n_mels + 2, frames] in [0, 1]: the generated audio's mel on top of the given mel.

    Low frequencies at the bottom of each half; both halves share one scale (the given mel's range).
    """
    generated = MelSpectrogram(config)(audio).numpy()
    frames = min(mel.shape[1], generated.shape[1])
    target, generated = np.asarray(mel, dtype=np.float32)[:, :frames], generated[:, :frames]
    low, high = float(target.min()), float(target.max())
    scale = lambda x: np.clip((x - low) / max(high - low, 1e-6), 0.0, 1.0)  # noqa: E731
    gap = np.ones((2, frames), dtype=np.float32)
    return np.concatenate([scale(generated)[::-1], gap, scale(target)[::-1]]).astype(np.float32)


def make_sink(setting: str | bool | None, run_dir: Path) -> MetricSink:
    """The sink for trainer.tensorboard: "auto" (when installed), true (required) or false."""
    setting = str(setting).lower() if setting is not None else "false"
    if setting in ("false", "none", "off", "0"):
        return MetricSink()
    installed = importlib.util.find_spec("tensorboard") is not None
    if not installed:
        if setting == "auto":
            log.debug("tensorboard not installed; progress goes to metrics.jsonl only")
            return MetricSink()
        hint = "pip install 'vocoders[tensorboard]'"
        raise RuntimeError(f"trainer.tensorboard=true needs the tensorboard package: {hint}")
    return TensorBoardSink(Path(run_dir) / "tensorboard")
