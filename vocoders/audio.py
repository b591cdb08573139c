"""Audio I/O and sample quantisation.

- read/write: wav, flac and ogg through soundfile, mixed down to mono, resampled with soxr.
- mu-law companding (WaveNet): 256 classes, mu = 255.
- 16-bit coarse/fine split (WaveRNN): a signed 16-bit sample as two unsigned bytes.
- pre-emphasis x[t] - a x[t-1] and its inverse, the one-pole de-emphasis filter.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import AudioError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "read_audio",
    "write_wav",
    "resample",
    "mulaw_encode",
    "mulaw_decode",
    "float_to_int16",
    "int16_to_float",
    "split_coarse_fine",
    "join_coarse_fine",
    "pcm_to_float",
    "preemphasize",
    "deemphasize",
]


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 in [-1, 1].

    Args:
        path: a wav, flac or ogg file.
        sample_rate: resample to this rate if given; otherwise keep the file's rate.
    Returns:
        (audio [samples] float32, sample rate)
    Raises:
        AudioError naming the file when it cannot be read or is empty.
    """
    import soundfile as sf

    path = Path(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        raise AudioError(f"{path}: cannot read audio ({_first_line(exc)})") from None
    audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    if audio.size == 0:
        raise AudioError(f"{path}: the file holds no samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: audio contains NaN or Inf")
    if sample_rate is not None and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """High-quality resampling with soxr. audio: [samples] float32 -> [samples'] float32."""
    if orig_rate == new_rate:
        return audio
    import soxr

    return soxr.resample(audio.astype(np.float32), orig_rate, new_rate, quality="HQ").astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray | torch.Tensor, sample_rate: int) -> Path:
    """Write mono 16-bit PCM atomically: a temporary file in the same folder, then a rename.

    A crash or kill during the write never leaves a partial file under `path`.
    audio: [samples] float in [-1, 1] (clipped).
    """
    import soundfile as sf

    path = Path(path)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    pcm = float_to_int16(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            sf.write(handle, pcm, sample_rate, subtype="PCM_16", format="WAV")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- quantisation ------------------------------------------------------------------------


def mulaw_encode(audio: torch.Tensor, classes: int = 256) -> torch.Tensor:
    """mu-law companding then uniform quantisation (mu = classes - 1).

    audio: float in [-1, 1], any shape -> int64 classes in [0, classes), same shape.
    """
    mu = classes - 1
    x = audio.clamp(-1.0, 1.0)
    companded = torch.sign(x) * torch.log1p(mu * x.abs()) / np.log1p(mu)
    return torch.round((companded + 1.0) / 2.0 * mu).long().clamp(0, mu)


def mulaw_decode(classes_: torch.Tensor, classes: int = 256) -> torch.Tensor:
    """Inverse of `mulaw_encode`. int classes, any shape -> float32 in [-1, 1], same shape.

    A table lookup: the value of a class never depends on what else is decoded with it (a vectorised
    power's last lanes round differently), so a stream decoding chunk by chunk gets the same audio.
    """
    mu = classes - 1
    y = torch.arange(classes, dtype=torch.float32, device=classes_.device) / mu * 2.0 - 1.0
    table = torch.sign(y) * ((1.0 + mu) ** y.abs() - 1.0) / mu
    return table[classes_.long()]


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16, rounding and clipping (1.0 maps to 32767)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def int16_to_float(pcm: np.ndarray | torch.Tensor):
    """int16 values -> float32 in [-1, 1)."""
    if isinstance(pcm, torch.Tensor):
        return pcm.float() / 32768.0
    return np.asarray(pcm, dtype=np.float32) / 32768.0


def split_coarse_fine(audio: torch.Tensor, bits: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise to `bits` and split into high (coarse) and low (fine) halves.

    With bits = 16 this is the WaveRNN split of a signed 16-bit sample s: u = s + 32768,
    coarse = u // 256, fine = u % 256. audio: float in [-1, 1], any shape -> two int64 tensors.
    """
    fine_bits = bits // 2
    levels = 1 << bits
    u = torch.round(audio.double().clamp(-1.0, 1.0) * (levels // 2)).long() + levels // 2
    u = u.clamp(0, levels - 1)
    return u >> fine_bits, u & ((1 << fine_bits) - 1)


def join_coarse_fine(coarse: torch.Tensor, fine: torch.Tensor, bits: int = 16) -> torch.Tensor:
    """Inverse of `split_coarse_fine`: two int tensors -> float32 in [-1, 1)."""
    fine_bits = bits // 2
    levels = 1 << bits
    u = (coarse.long() << fine_bits) | fine.long()
    return ((u - levels // 2).double() / (levels // 2)).float()


def pcm_to_float(u: torch.Tensor, bits: int = 16) -> torch.Tensor:
    """Unsigned `bits`-bit PCM values u (any int shape) -> float32 (u - 2^(bits-1)) / 2^(bits-1).

    Equals `join_coarse_fine(u >> fine_bits, u & (2^fine_bits - 1), bits)` exactly for |u| < 2^24:
    the split and join cancel, u is exact in float32, scaling by a power of two is exact, and so is
    subtracting 1 from it (the result has no more significant bits than u). Two operations instead
    of nine (a stream decodes every chunk).
    """
    return u.mul(1.0 / (1 << (bits - 1))).sub_(1.0)


# ---- pre-emphasis --------------------------------------------------------------------------


def preemphasize(audio: torch.Tensor, alpha: float) -> torch.Tensor:
    """x[t] - alpha * x[t-1] along the last axis, x[-1] = 0, clipped to [-1, 1]. Shape kept."""
    previous = torch.nn.functional.pad(audio[..., :-1], (1, 0))
    return (audio - alpha * previous).clamp(-1.0, 1.0)


DEEMPHASIS_ROWS = 8192  # outputs computed together by `deemphasize` (bounds its memory)


def deemphasis_taps(alpha: float, tolerance: float = 1e-9) -> int:
    """Length of `deemphasize`'s truncated impulse response (0 when alpha is 0: nothing to undo)."""
    if alpha == 0.0:
        return 0
    return max(1, int(np.ceil(np.log(tolerance) / np.log(alpha))))


def deemphasize(audio: torch.Tensor, alpha: float, tolerance: float = 1e-9) -> torch.Tensor:
    """The inverse filter y[t] = x[t] + alpha * y[t-1] (y[-1] = 0) along the last axis. Shape kept.

    Runs as a causal FIR filter with the impulse response alpha^n truncated where it falls below
    `tolerance` (alpha 0.86: 138 taps), so it is parallel and runs on any device.
    """
    if alpha == 0.0:
        return audio.float()
    taps = deemphasis_taps(alpha, tolerance)
    kernel = alpha ** torch.arange(taps - 1, -1, -1, dtype=torch.float64, device=audio.device)
    shape = audio.shape
    x = torch.nn.functional.pad(audio.reshape(-1, shape[-1]).to(torch.float64), (taps - 1, 0))
    y = torch.empty(x.shape[0], shape[-1], dtype=torch.float64, device=audio.device)
    # Each output is the same row sum whatever the length (a convolution's sums change with it), so a
    # stream that decodes chunk by chunk gets the very numbers of the whole utterance.
    for first in range(0, shape[-1], DEEMPHASIS_ROWS):
        last = min(first + DEEMPHASIS_ROWS, shape[-1])
        windows = x[:, first : last + taps - 1].unfold(1, taps, 1).contiguous()  # [N, rows, taps], rows apart
        y[:, first:last] = (windows * kernel).sum(dim=-1)
    return y.reshape(shape).float()
