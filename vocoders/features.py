"""The mel-spectrogram contract: `MelConfig`, its named presets, and `MelSpectrogram`.

This module is the single owner of the mel definition. Training features, copy synthesis,
validation of incoming mels and every checkpoint's metadata all go through `MelConfig`.
Mel filters come from librosa; the STFT runs in torch so features can be computed on any device.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["MelConfig", "MelSpectrogram", "PRESETS", "mel_filterbank"]


@dataclass(frozen=True)
class MelConfig:
    """Everything that defines a log-mel spectrogram.

    The defaults are the `hifigan` preset: the features of HiFi-GAN and NVIDIA Tacotron 2, so mels
    from those TTS models can be vocoded directly.

    Attributes:
        sample_rate: audio sample rate in Hz.
        n_fft: FFT size.
        hop_length: samples between frames; one frame conditions exactly `hop_length` samples.
        win_length: Hann window length (zero-padded to `n_fft`).
        n_mels: number of mel bands.
        fmin, fmax: mel filter range in Hz (`fmax=None` means sample_rate / 2).
        mel_scale: "slaney" or "htk" frequency scale of the filters.
        mel_norm: "slaney" (area normalisation) or None.
        power: 1.0 for a magnitude spectrogram, 2.0 for power.
        magnitude_eps: added inside the square root of |X|^2 (HiFi-GAN uses 1e-9).
        log_base: "e" or "10".
        log_floor: values are clamped to this before the logarithm.
        log_multiplier: scale applied after the logarithm (e.g. 20 for dB-like features).
        pad_mode: padding of the signal edges ("reflect", "constant" or "replicate").
        center: torch.stft centering. HiFi-GAN pads (n_fft - hop) / 2 each side and does not center,
            which gives exactly `samples // hop_length` frames.
        mean, std: optional global normalisation applied after the log (`(x - mean) / std`).
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    mel_scale: str = "slaney"
    mel_norm: str | None = "slaney"
    power: float = 1.0
    magnitude_eps: float = 1e-9
    log_base: str = "e"
    log_floor: float = 1e-5
    log_multiplier: float = 1.0
    pad_mode: str = "reflect"
    center: bool = False
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be positive, got {self.sample_rate}")
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            problems.append(
                f"need 0 < hop_length <= win_length <= n_fft, got {self.hop_length}, {self.win_length}, {self.n_fft}"
            )
        if self.n_mels <= 0:
            problems.append(f"n_mels must be positive, got {self.n_mels}")
        if self.fmax is not None and not self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(f"need fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.log_base not in ("e", "10"):
            problems.append(f"log_base must be 'e' or '10', got {self.log_base!r}")
        if self.mel_scale not in ("slaney", "htk"):
            problems.append(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.pad_mode not in ("reflect", "constant", "replicate"):
            problems.append(f"pad_mode must be reflect, constant or replicate, got {self.pad_mode!r}")
        if self.std <= 0:
            problems.append(f"std must be positive, got {self.std}")
        if problems:
            raise ValueError("invalid MelConfig: " + "; ".join(problems))

    # ---- construction and identity -------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MelConfig:
        """A named preset (see `PRESETS`), optionally with some fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown mel preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return dataclasses.replace(PRESETS[name], **overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MelConfig:
        """Build from a plain dict; a `preset` key starts from that preset. Unknown keys are refused."""
        values = dict(values)
        preset = values.pop("preset", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MelConfig fields: {', '.join(unknown)}")
        base = PRESETS[preset] if preset else cls()
        if preset and preset not in PRESETS:
            raise ValueError(f"unknown mel preset {preset!r}")
        return dataclasses.replace(base, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A short stable hash of the definition (used to key feature caches)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]

    def differences(self, other: MelConfig) -> list[str]:
        """Human-readable list of fields where `other` differs from this config."""
        out = []
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-9):
                continue
            if a != b:
                out.append(f"{f.name}: expected {a!r}, got {b!r}")
        return out

    # ---- derived quantities ----------------------------------------------------------------
    @property
    def padding(self) -> int:
        """Samples padded on each side when `center` is False."""
        return (self.n_fft - self.hop_length) // 2

    @property
    def edge_padding(self) -> int:
        """Samples the STFT pads before the first frame and after the last: n_fft // 2 centred (as
        torch.stft pads), else `padding`."""
        return self.n_fft // 2 if self.center else self.padding

    @property
    def edge_pad_mode(self) -> str:
        """How the STFT pads the edges: torch.stft's reflection when centred, else `pad_mode`."""
        return "reflect" if self.center else self.pad_mode

    def num_samples(self, frames: int) -> int:
        """Samples a vocoder gives for `frames` frames: frames * hop, or (frames - 1) * hop centred."""
        return (frames - 1) * self.hop_length if self.center else frames * self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a signal of `num_samples` samples."""
        if self.center:
            return num_samples // self.hop_length + 1
        padded = num_samples + 2 * self.padding
        return max(0, (padded - self.n_fft) // self.hop_length + 1)

    def value_range(self) -> tuple[float, float]:
        """Smallest possible feature value, and an upper bound for any audio in [-1, 1].

        The floor is exact (the clamp). The bound: a Hann window's spectrum magnitude is at most
        sum(window) = win_length / 2 for |x| <= 1, and a mel band is at most that times the largest
        row sum of the filter matrix. A mel outside this range cannot come from this contract.
        """
        return _value_range(self)

    def _uncached_value_range(self) -> tuple[float, float]:
        peak = (self.win_length / 2) ** self.power * float(mel_filterbank(self).sum(dim=1).max())
        lo = self._log(self.log_floor)
        hi = self._log(max(peak, self.log_floor))
        return (lo - self.mean) / self.std, (hi - self.mean) / self.std

    def _log(self, value: float) -> float:
        base = math.log(value) if self.log_base == "e" else math.log10(value)
        return base * self.log_multiplier


PRESETS: dict[str, MelConfig] = {
    # HiFi-GAN / NVIDIA Tacotron 2 (LJSpeech, 22.05 kHz).
    "hifigan": MelConfig(),
    # 24 kHz, 100 bands up to 12 kHz (the BigVGAN/Vocos 24 kHz definition).
    "24k": MelConfig(
        sample_rate=24000, n_fft=1024, hop_length=256, win_length=1024, n_mels=100, fmin=0.0, fmax=12000.0
    ),
    # 16 kHz speech (hop 200 = 12.5 ms), common in ASR-derived TTS front ends.
    "16k": MelConfig(sample_rate=16000, n_fft=1024, hop_length=200, win_length=800, n_mels=80, fmin=0.0, fmax=8000.0),
}


@functools.lru_cache(maxsize=16)
def _value_range(config: MelConfig) -> tuple[float, float]:
    return config._uncached_value_range()


def mel_filterbank(config: MelConfig) -> torch.Tensor:
    """Mel filter matrix from librosa. Shape: [n_mels, n_fft // 2 + 1], float64."""
    import librosa

    basis = librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        dtype=np.float64,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=config.mel_scale == "htk",
        norm=config.mel_norm,
    )
    return torch.from_numpy(basis)


class MelSpectrogram(nn.Module):
    """Log-mel spectrogram of `MelConfig`, on any device.

    forward(audio [B, samples] or [samples]) -> mel [B, n_mels, frames] or [n_mels, frames] float32,
    with frames = samples // hop_length when `center` is False.

    The STFT runs in float64 by default: quiet bins next to loud ones lose most of their digits in a
    float32 FFT, which shows up as ~5e-4 errors in the log domain; float64 keeps the result within
    1e-5 of an exact computation at a small cost. Pass `compute_dtype=torch.float32` to trade that.
    """

    def __init__(self, config: MelConfig | None = None, compute_dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.config = config or MelConfig()
        self.compute_dtype = compute_dtype
        self.register_buffer("window", torch.hann_window(self.config.win_length, dtype=compute_dtype), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.config).to(compute_dtype), persistent=False)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        squeeze = audio.dim() == 1
        if squeeze:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"audio must be [samples] or [B, samples], got shape {tuple(audio.shape)}")
        x = audio.to(self.compute_dtype)
        if not c.center:
            if x.shape[-1] <= c.padding and c.pad_mode == "reflect":
                raise ValueError(f"audio of {x.shape[-1]} samples is too short to reflect-pad by {c.padding}")
            x = torch.nn.functional.pad(x.unsqueeze(1), (c.padding, c.padding), mode=c.pad_mode).squeeze(1)
        spec = torch.stft(
            x,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window.to(x.device),
            center=c.center,
            pad_mode=c.edge_pad_mode,  # used only when centred: the other case is padded above
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + c.magnitude_eps)
        if c.power != 1.0:
            magnitude = magnitude.pow(c.power)
        mel = torch.matmul(self.filters.to(x.device), magnitude)
        mel = torch.clamp(mel, min=c.log_floor)
        mel = torch.log(mel) if c.log_base == "e" else torch.log10(mel)
        mel = mel * c.log_multiplier
        if c.mean != 0.0 or c.std != 1.0:
            mel = (mel - c.mean) / c.std
        mel = mel.float()
        return mel.squeeze(0) if squeeze else mel
