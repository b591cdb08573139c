"""Refit an LPCNet's period head on whole utterances, against the pitch tracker the evaluation uses.

Training teaches the head on short segments against `vocoders.pitch.frame_periods`, whose voicing
agrees with pyworld's DIO + StoneMask (the tracker `vocoders.evaluate` measures F0 and V/UV with) on
about 68% of cs-male-22k's frames, and whose lag has 7.5% octave errors against it
(`tools/pitch_agreement.py`). Generation follows the head, so the head inherits those errors. A refit
freezes everything else and trains the head alone, on every frame of the training split, against
`vocoders.metrics.f0_track` of the whole utterance; optionally with the wider input of
`period_input="features+mel"`. It costs minutes on a CPU: the conditioning network runs once per
utterance, then only the head's two layers train.

The excitation network is untouched: it was trained with the tracker's periods and reads whatever
period and voicing the head gives, as it does at generation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import F0_FRAME_MS, Features
from ..pitch import PeriodRange, periods_from_f0

log = logging.getLogger(__name__)


@dataclass
class HeadFrames:
    """Every frame of a set of utterances: the head's input [N, W] (unstandardised), the reference
    period [N] int64 (samples, clipped to the head's range) and voicing [N] bool."""

    inputs: torch.Tensor
    period: torch.Tensor
    voiced: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


def reference_pitch(audio: np.ndarray, sample_rate: int, hop: int, periods: PeriodRange) -> tuple[np.ndarray, ...]:
    """(period [F] int64, voiced [F] bool) for audio [F * hop] from `vocoders.metrics.frame_f0`; a frame
    is voiced where the tracker says so with a lag inside the head's range."""
    from ..metrics import frame_f0

    lag, voiced = periods_from_f0(torch.from_numpy(frame_f0(audio, sample_rate, hop, F0_FRAME_MS)), periods)
    return lag.numpy(), voiced.numpy()


@torch.no_grad()
def head_inputs(model, features: list[Features]) -> torch.Tensor:
    """What the head of `model` (an LPCNet) reads [N, W], unstandardised, for every frame of `features`."""
    inputs, u = [], model.upsample_context
    for feats in features:
        mel = model.pad_mel(torch.from_numpy(np.array(feats.mel, dtype=np.float32)).unsqueeze(0))
        rows = model.cond_net(mel)  # [1, F + 2u, D]: row j read mel frames j .. j + 2 * cond context
        inputs.append(model.period_head_features(rows, mel)[0, u : u + feats.frames].float())
    return torch.cat(inputs)


def head_frames(model, features: list[Features]) -> HeadFrames:
    """The head's inputs and the reference pitch for every frame of `features`."""
    period, voiced = [], []
    for feats in features:
        lag, on = reference_pitch(feats.audio.astype(np.float64) / 32768.0, model.sample_rate, model.hop_length,
                                  model.periods)  # fmt: skip
        period.append(torch.from_numpy(lag))
        voiced.append(torch.from_numpy(on))
    return HeadFrames(head_inputs(model, features), torch.cat(period), torch.cat(voiced))


def head_agreement(model, frames: HeadFrames) -> dict[str, float]:
    """How the head's pitch agrees with the reference on `frames`: the share of frames voiced in both
    within 50 cents, beyond 600 cents (octave errors), the share whose voicing agrees, and the shares
    each calls voiced."""
    with torch.no_grad():
        logits = model.period_head(model.standardise_period_input(frames.inputs))
        period, voiced = model._pitch_from_logits(logits.unsqueeze(0))
    period, voiced = period[0], voiced[0]
    both = voiced & frames.voiced
    cents = 1200.0 * torch.log2(period[both].float() / frames.period[both].float()).abs()
    share = lambda mask: round(float(mask.float().mean()), 4) if mask.numel() else float("nan")  # noqa: E731
    return {
        "within_50_cents": share(cents <= 50.0),
        "octave_errors": share(cents > 600.0),
        "vuv_agreement": share(voiced == frames.voiced),
        "voiced_head": share(voiced),
        "voiced_reference": share(frames.voiced),
    }


def fit_period_head(
    model, train: HeadFrames, epochs: int = 20, lr: float = 1e-3, batch: int = 1024, seed: int = 0
) -> list[float]:
    """Train model.period_head alone on `train` (unstandardised inputs; with period_input
    "features+mel" the shift and scale are set from them first). Returns the mean loss per epoch."""
    if epochs < 1 or len(train) == 0:
        raise ValueError(f"need at least one epoch and one frame, got {epochs} epochs, {len(train)} frames")
    if model.period_input != "features":
        model.period_input_shift.copy_(train.inputs.mean(0))
        model.period_input_scale.copy_(train.inputs.std(0).clamp_min(1e-3))
    x = model.standardise_period_input(train.inputs)
    target = model._period_targets(train.period.unsqueeze(0), train.voiced.unsqueeze(0))[0]
    if not model.voicing:  # a head without the unvoiced class learns the lag of voiced frames only
        keep = train.voiced
        x, target = x[keep], target[keep]
    generator = torch.Generator().manual_seed(seed)
    head = model.period_head.train()
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(x.shape[0], generator=generator)
        for first in range(0, x.shape[0], batch):
            index = order[first : first + batch]
            loss = -(target[index] * F.log_softmax(head(x[index]), dim=-1)).sum(-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / x.shape[0])
        log.info("period head epoch %d: loss %.4f (%.1f s)", epoch + 1, losses[-1], time.perf_counter() - started)
    head.eval()
    return losses


def with_period_input(model, period_input: str):
    """`model` (an LPCNet) rebuilt with `period_input`: every other weight copied, the head fresh
    where its input changes (its first layer's width does), kept otherwise."""
    from ..models import build_model

    if getattr(model, "name", None) != "lpcnet" or not model.uses_pitch:
        name = getattr(model, "name", model)
        raise ValueError(f"only an LPCNet with a period head has a head to refit, not {name!r}")
    kwargs = {**model.kwargs, "period_input": period_input}
    rebuilt = build_model(model.name, model.mel_config.to_dict(), kwargs)
    keep = period_input == model.period_input
    state = {k: v for k, v in model.state_dict().items() if keep or not k.startswith("period_")}
    missing, unexpected = rebuilt.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("period_") for k in missing):
        raise ValueError(f"weights do not carry over (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return rebuilt.eval()
