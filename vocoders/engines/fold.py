"""Fold batching for any model: one utterance as a batch of overlapping segments, cross-faded back.

An autoregressive model generates one long utterance one step at a time, and a single stream leaves
most of the machine idle. Fold batching cuts the utterance's conditioning into segments of
`segment` frames that overlap by `overlap` frames, generates them all at once as a batch, decodes
each to audio, and joins them: in each overlap the earlier segment fades out while the later one
fades in, with weights that sum to one at every sample. Fading happens on decoded audio (never on
mu-law or class values, which are not linear in amplitude), and every segment sits exactly on its
own frames, so the joins are aligned to the sample.

Segments start every `segment - overlap` frames; the last one is moved back to end with the
utterance (its overlap with the previous segment is then longer, and only the final `overlap`
frames of it are cross-faded). Each segment reads the utterance's own conditioning (computed once
on the whole mel) and the utterance's noise at its own sample positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Engine


@dataclass(frozen=True)
class FoldConfig:
    """Segment and overlap lengths in mel frames (times hop_length for samples).

    The overlap is at most half a segment, so that a segment's fade-in ends before its fade-out starts.
    """

    segment: int
    overlap: int

    def __post_init__(self) -> None:
        if self.segment < 1:
            raise ValueError(f"fold segment must be at least 1 frame, got {self.segment}")
        if not 0 <= 2 * self.overlap <= self.segment:
            raise ValueError(f"fold overlap must be in [0, segment / 2] = [0, {self.segment // 2}], got {self.overlap}")

    @classmethod
    def parse(cls, value: FoldConfig | tuple[int, int] | list[int] | dict) -> FoldConfig:
        """Accept a FoldConfig, a (segment, overlap) pair or a {segment, overlap} dict."""
        if isinstance(value, FoldConfig):
            return value
        if isinstance(value, dict):
            return cls(int(value["segment"]), int(value["overlap"]))
        segment, overlap = value
        return cls(int(segment), int(overlap))


def segment_starts(frames: int, segment: int, overlap: int) -> list[int]:
    """First frame of each segment of an utterance of `frames` frames."""
    if frames <= segment:
        return [0]
    stride = segment - overlap
    return list(range(0, frames - segment, stride)) + [frames - segment]


def fade_in(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Raised-cosine fade from 0 towards 1: [length]; fade_in(n) + fade_in(n).flip(0) == 1."""
    n = torch.arange(length, dtype=torch.float64, device=device)
    return torch.sin(math.pi * (n + 0.5) / (2 * length)).pow(2).float()


def fold_signal(x: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
    """Cut segments along time (axis 1): x [B, T, ...] -> [B, len(starts), length, ...] (starts in samples)."""
    return torch.stack([x[:, a : a + length] for a in starts], dim=1)


def unfold_signal(segments: torch.Tensor, starts: list[int], overlap: int, total: int) -> torch.Tensor:
    """Join segments [B, n, L] that start at `starts` (samples) into [B, total], cross-fading overlaps.

    Segment j > 0 replaces the signal from the end of segment j - 1 onwards; over the last
    `overlap` samples of segment j - 1 the two are mixed as (1 - w) * earlier + w * later.
    """
    batch, count, length = segments.shape
    out = segments.new_zeros(batch, total)
    out[:, starts[0] : starts[0] + length] = segments[:, 0]
    weight = fade_in(overlap, segments.device).to(segments.dtype) if overlap else None
    for j in range(1, count):
        start, previous_end = starts[j], starts[j - 1] + length
        fade_from = previous_end - overlap
        if fade_from < start or previous_end > start + length:
            raise ValueError(f"segment {j} at {start} does not cover the overlap [{fade_from}, {previous_end})")
        later = segments[:, j]
        if overlap:
            mixed = later[:, fade_from - start : previous_end - start]
            out[:, fade_from:previous_end] = out[:, fade_from:previous_end] * (1 - weight) + mixed * weight
        out[:, previous_end : start + length] = later[:, previous_end - start :]
    return out


class FoldEngine:
    """Fold batching around any engine: `synthesize` returns cross-faded audio.

    It offers `synthesize` (audio) but not `generate`: the joined signal is decoded audio, not a
    sequence of classes. Teacher forcing (`forced_logits`) goes straight to the wrapped engine.
    """

    def __init__(self, engine: Engine, config: FoldConfig | tuple[int, int]) -> None:
        self.engine = engine
        self.config = FoldConfig.parse(config)
        self.model = engine.model
        self.device = engine.device
        self.name = f"{engine.name}+fold"

    @torch.inference_mode()
    def synthesize(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """cond [B, F + 2u, D], noise [B, F * hop, n] -> audio [B, F * hop] float32 (see `Engine.generate`)."""
        model, engine = self.model, self.engine
        Engine.check_inputs(model, cond, noise)
        hop, context = model.hop_length, model.upsample_context
        frames = cond.shape[1] - 2 * context
        segment, overlap = self.config.segment, self.config.overlap
        starts = segment_starts(frames, segment, overlap)
        if len(starts) == 1:
            return engine.synthesize(cond, noise, temperature)
        batch = cond.shape[0]
        pieces_cond = fold_signal(cond, starts, segment + 2 * context).flatten(0, 1)  # [B * n, seg + 2u, D]
        pieces_noise = fold_signal(noise, [a * hop for a in starts], segment * hop).flatten(0, 1)
        samples = engine.generate(pieces_cond, pieces_noise, temperature)  # [B * n, seg * hop]
        audio = model.decode(samples).float().reshape(batch, len(starts), segment * hop)
        return unfold_signal(audio, [a * hop for a in starts], overlap * hop, frames * hop)

    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.engine.forced_logits(cond, targets)
