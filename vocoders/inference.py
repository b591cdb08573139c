"""The library object: `load` a checkpoint, then `voc(mel)` returns audio.

    voc = vocoders.load("wavernn.safetensors", device="cpu")
    audio = voc(mel)              # mel [n_mels, frames] -> audio [frames * hop]
    mel = voc.mel(audio)          # the checkpoint's own mel definition
    voc = vocoders.load("wavernn.safetensors", fold=(40, 4))   # fold batching: 40-frame segments,
                                                                # 4 frames cross-faded, one batch
    voc = vocoders.load("cs-male-22k", mel_projection=0)       # the network's own output, unprojected

Loading never unpickles and never imports Hydra or the training code.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import pretrained
from .checkpoint import model_from_checkpoint, read_checkpoint
from .engines import FoldConfig, FoldEngine, make_engine
from .errors import CheckpointError, MelError
from .features import MelConfig, MelSpectrogram
from .mel_projection import mel_projection as project_onto_mel
from .mel_projection import projection_lookahead_frames
from .models.base import VocoderModel
from .sampling import draw_noise
from .streaming import Stream


def check_mel(mel, config: MelConfig, source: str = "mel") -> torch.Tensor:
    """Validate a mel against `config` and return it as float32 [B, n_mels, frames].

    Accepts [n_mels, frames] or [B, n_mels, frames] (numpy or torch). Refuses a wrong band count, a
    transposed array, an empty one, NaN/Inf, and values that no audio could give under this contract.
    """
    if isinstance(mel, np.ndarray):
        if not np.issubdtype(mel.dtype, np.number):
            raise MelError(f"{source}: mel must be numeric, got dtype {mel.dtype}")
        mel = torch.from_numpy(np.ascontiguousarray(mel))
    if not isinstance(mel, torch.Tensor):
        raise MelError(f"{source}: mel must be an array or tensor, got {type(mel).__name__}")
    if mel.is_complex() or mel.dtype == torch.bool:
        raise MelError(f"{source}: mel must be real-valued, got dtype {mel.dtype}")
    shape = tuple(mel.shape)
    if mel.dim() not in (2, 3):
        raise MelError(f"{source}: mel must be [n_mels, frames] or [B, n_mels, frames], got shape {shape}")
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    n_mels = config.n_mels
    if mel.shape[1] != n_mels:
        if mel.shape[2] == n_mels:
            raise MelError(
                f"{source}: mel looks transposed: shape {shape} has {n_mels} on the last axis; "
                f"expected [n_mels={n_mels}, frames]"
            )
        raise MelError(
            f"{source}: mel has {mel.shape[1]} bands, the checkpoint expects n_mels={n_mels} (shape {shape})"
        )
    if mel.shape[2] == 0 or mel.shape[0] == 0:
        raise MelError(f"{source}: mel is empty (shape {shape})")
    if mel.dtype != torch.float32:
        mel = mel.float()
    found_lo, found_hi = (float(v) for v in torch.aminmax(mel))  # one pass; NaN and Inf show in it
    if not (math.isfinite(found_lo) and math.isfinite(found_hi)):
        raise MelError(f"{source}: mel contains NaN or Inf")
    lo, hi = config.value_range()
    margin = 0.1 * (hi - lo)
    if found_lo < lo - margin or found_hi > hi + margin:
        log_name = "natural log" if config.log_base == "e" else "log10"
        raise MelError(
            f"{source}: values in [{found_lo:.3g}, {found_hi:.3g}] cannot be a log-mel of this checkpoint "
            f"(expected within [{lo:.3g}, {hi:.3g}]: {log_name} of mel magnitudes floored at {config.log_floor:g})"
        )
    return mel


def _check_iterations(iterations: int) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"mel_projection must be a whole number of iterations >= 0, got {iterations!r}")
    return iterations


def synthesis_defaults(meta: dict[str, Any], path: str | os.PathLike = "checkpoint") -> dict[str, int]:
    """The synthesis settings a checkpoint's metadata carries ("synthesis": {"mel_projection": N});
    {"mel_projection": 0} without. Raises CheckpointError for a malformed record."""
    record = meta.get("synthesis") or {}
    try:
        if not isinstance(record, dict) or set(record) - {"mel_projection"}:
            raise ValueError(f"unknown synthesis settings {record!r}")
        return {"mel_projection": _check_iterations(record.get("mel_projection", 0))}
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad synthesis record in the metadata ({exc})") from None


class Vocoder:
    """A loaded vocoder: model + engine + its mel definition.

    Attributes:
        sample_rate, hop_length: of the checkpoint's mel contract.
        mel: `MelSpectrogram` of that contract (audio [B, samples] -> mel [B, n_mels, frames]).
        model: the underlying `VocoderModel`; engine: the sampling engine in use.
        fold: the fold-batching segment and overlap (frames), or None to generate each utterance whole.
        mel_projection: iterations of `vocoders.mel_projection` applied to every output, streams included
            (0 = the network's audio as generated); a checkpoint may carry its own default.
    """

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cpu",
        engine: str = "auto",
        fold: FoldConfig | tuple[int, int] | None = None,
        mel_projection: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.mel_projection = _check_iterations(mel_projection)
        self.model = model.to(self.device).eval()
        self.mel_config = model.mel_config
        self.mel = MelSpectrogram(self.mel_config).to(self.device)
        self.engine = make_engine(engine, self.model, self.device)
        self.fold = None if fold is None else FoldConfig.parse(fold)
        self._synthesizer = self.engine if self.fold is None else FoldEngine(self.engine, self.fold)
        self.checkpoint_path: Path | None = None
        self.step: int | None = None

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel_config.hop_length

    @torch.inference_mode()
    def __call__(
        self,
        mel,
        seed: int | None = None,
        temperature: float = 1.0,
        source: str = "mel",
        speaker: int | None = None,
        mel_projection: int | None = None,
    ) -> torch.Tensor:
        """Vocode a log-mel.

        mel: [n_mels, frames] or [B, n_mels, frames] (numpy or torch), this checkpoint's contract.
        speaker: the speaker id, for a multi-speaker checkpoint (global conditioning) only.
        mel_projection: iterations of the mel projection for this call (None: `self.mel_projection`).
        Returns float32 audio on the CPU: [frames * hop] or [B, frames * hop], in [-1, 1].
        """
        single = getattr(mel, "ndim", 0) == 2
        mel = check_mel(mel, self.mel_config, source).to(self.device)
        self.check_speaker(speaker, source)
        padded = self.model.pad_mel(mel)
        cond = self.engine.conditioning(padded, speaker)
        steps = self.model.num_samples(cond)
        noise = draw_noise(mel.shape[0], steps, self.model.noise_per_step, seed)
        audio = self._synthesizer.synthesize(cond, noise, temperature).cpu()
        audio = self.project(audio, mel, mel_projection)
        return audio[0] if single else audio

    def project(self, audio: torch.Tensor, mel, iterations: int | None = None) -> torch.Tensor:
        """`vocoders.mel_projection` of vocoded audio [B, T] onto the mel [B, n_mels, F] it came from
        (iterations None: `self.mel_projection`); float32 on the CPU."""
        iterations = self.mel_projection if iterations is None else _check_iterations(iterations)
        if not iterations:
            return audio
        mel = torch.as_tensor(mel).detach().cpu()
        return project_onto_mel(audio.float().cpu(), mel, self.mel_config, iterations)

    def check_speaker(self, speaker: int | None, source: str = "mel") -> None:
        """Refuse a speaker id this checkpoint cannot take (or a missing one it needs)."""
        speakers = int(getattr(self.model, "speakers", 0))
        if speaker is None and speakers:
            raise ValueError(f"{source}: this vocoder is multi-speaker; pass a speaker id in 0..{speakers - 1}")
        if speaker is not None and not speakers:
            raise ValueError(f"{source}: this vocoder has no speaker embedding; do not pass a speaker id")
        if speaker is not None and not 0 <= int(speaker) < speakers:
            raise ValueError(f"{source}: speaker id {speaker} is out of range 0..{speakers - 1}")

    @property
    def lookahead_frames(self) -> int:
        """Mel frames a stream holds back: a frame's audio needs the mel this far past it (the network's
        context, and the mel projection's at this vocoder's default iterations)."""
        return self.model.lookahead_frames + projection_lookahead_frames(self.mel_config, self.mel_projection)

    def stream(
        self,
        batch: int = 1,
        seed: int | None = None,
        temperature: float = 1.0,
        speaker: int | None = None,
        block_frames: int = 4,
        mel_projection: int | None = None,
    ) -> Stream:
        """A streaming session: `push` mel chunks, `pull` audio, `close` for the rest (see vocoders.streaming).

        With the same seed the concatenated audio equals `self(mel, seed=seed, mel_projection=...)`,
        projected as the stream projects: mel_projection None takes this vocoder's iterations, whose
        look-ahead (`projection_lookahead_frames`) the stream's `lookahead_frames` includes; 0 streams the
        network's audio with the least latency. Fold batching does not apply: a stream runs the engine
        itself. Raises StreamingError where the engine cannot stream.
        block_frames: frames generated per block when the stream is iterated (see vocoders.streaming).
        """
        iterations = None if mel_projection is None else _check_iterations(mel_projection)
        return Stream(
            self,
            batch=batch,
            seed=seed,
            temperature=temperature,
            speaker=speaker,
            block_frames=block_frames,
            mel_projection=iterations,
        )

    @torch.inference_mode()
    def copy_synthesis(self, audio: torch.Tensor, **kwargs) -> torch.Tensor:
        """Audio [samples] at this sample rate -> its mel -> vocoded audio [frames * hop]."""
        mel = self.mel(torch.as_tensor(audio, dtype=torch.float32).to(self.device))
        return self(mel, **kwargs)


def load(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    engine: str = "auto",
    use_ema: bool = True,
    fold: FoldConfig | tuple[int, int] | None = None,
    settings: dict[str, Any] | None = None,
    mel_projection: int | None = None,
) -> Vocoder:
    """Load a `.safetensors` checkpoint as a ready `Vocoder`. Never unpickles, never imports Hydra.

    path: a checkpoint file, or the short name of one shipped with the package (`vocoders.pretrained`,
        e.g. "cs-male-22k"); a file that exists wins over a name.
    fold: (segment, overlap) in mel frames to generate each utterance as a batch of cross-faded segments.
    settings: model kwargs to change from the checkpoint's, e.g. {"voiced_temperature": 0.7} for an
        LPCNet (see `vocoders.checkpoint.model_from_checkpoint`).
    mel_projection: iterations of `vocoders.mel_projection` on every output; None takes the
        checkpoint's own (its metadata's "synthesis" record, set when a model is shipped), else 0.
    """
    path = pretrained.resolve(path)
    if not path.is_file() and path.suffix != ".safetensors" and len(path.parts) == 1:
        shipped = ", ".join(pretrained.available()) or "none"
        raise CheckpointError(f"{path}: no such checkpoint file, nor a shipped model name (shipped: {shipped})")
    checkpoint = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint, use_ema=use_ema, settings=settings)
    if mel_projection is None:
        mel_projection = synthesis_defaults(checkpoint.meta, path)["mel_projection"]
    vocoder = Vocoder(model, device=device, engine=engine, fold=fold, mel_projection=mel_projection)
    vocoder.checkpoint_path = Path(path)
    vocoder.step = checkpoint.step
    return vocoder
