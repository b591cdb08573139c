"""Pitch periods per frame from a waveform, the targets of a vocoder's period predictor.

A long-term predictor (the pitch predictor of CELP coders) reads the excitation one period back;
training feeds it the period measured on the true audio, and teaches a head on the mel to predict
that period for generation. The measure is the normalised cross-correlation of RAPT and LPCNet's
pitch search, per frame and lag:

    ncc_f(L) = sum_n x_n x_{n-L} / sqrt(sum_n x_n^2 * sum_n x_{n-L}^2),   n in frame f's window

over a window of two hops starting half a hop before the frame, lags L in [min_lag, max_lag]. A
slight preference for short lags (the correlation at 2T is nearly as high as at T) avoids octave
jumps down. The whole computation is batched tensor arithmetic (no per-frame Python), so it runs
inside the training step on each segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PeriodRange:
    """The lags (in samples) a pitch period may take at `sample_rate` for pitch in [fmin, fmax] Hz."""

    sample_rate: int
    fmin: float = 60.0
    fmax: float = 500.0

    def __post_init__(self) -> None:
        if not 0 < self.fmin < self.fmax < self.sample_rate / 4:
            raise ValueError(f"need 0 < fmin < fmax < sample_rate / 4, got {self.fmin}, {self.fmax}")

    @property
    def min_lag(self) -> int:
        return int(self.sample_rate // self.fmax)

    @property
    def max_lag(self) -> int:
        return int(-(-self.sample_rate // self.fmin))

    @property
    def classes(self) -> int:
        """Number of candidate lags min_lag..max_lag."""
        return self.max_lag - self.min_lag + 1


def periods_from_f0(f0: torch.Tensor, lags: PeriodRange) -> tuple[torch.Tensor, torch.Tensor]:
    """(period [..] int64 in [min_lag, max_lag], voiced [..] bool) from F0 in Hz [..] (0 = unvoiced): the
    nearest whole lag, voiced where the F0 is positive and its lag inside the range."""
    lag = torch.round(lags.sample_rate / f0.double().clamp_min(1.0)).long()
    voiced = (f0 > 0) & (lag >= lags.min_lag) & (lag <= lags.max_lag)
    return lag.clamp(lags.min_lag, lags.max_lag), voiced


def frame_periods(
    audio: torch.Tensor, hop: int, lags: PeriodRange, short_lag_bias: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame pitch period of audio [B, F * hop] (float).

    Returns (period [B, F] int64 in [min_lag, max_lag], correlation [B, F] float in [-1, 1] at that
    lag, complete [B, F] bool: the frame's window and all its lags lie inside the audio, so the
    measure used whole windows). Samples outside the audio count as silence.
    """
    if audio.dim() != 2:
        raise ValueError(f"audio must be [B, T], got shape {tuple(audio.shape)}")
    batch, length = audio.shape
    if length % hop:
        raise ValueError(f"audio length {length} is not a whole number of hops of {hop}")
    frames = length // hop
    window, before, max_lag = 2 * hop, hop // 2, lags.max_lag
    x = audio.float()
    # Frame f's window covers samples [f*hop - before, f*hop - before + window); lags reach max_lag further back.
    left = before + max_lag
    right = window - before
    padded = F.pad(x, (left, right))
    span = window + max_lag
    chunks = padded.unfold(1, span, hop)[:, :frames]  # [B, F, span]: chunk f starts at f*hop - left
    current = chunks[..., max_lag:]  # [B, F, window]
    # dot[o] = sum_w chunk[o + w] current[w]: offset o into the chunk is lag max_lag - o.
    groups = batch * frames
    dot = F.conv1d(chunks.reshape(1, groups, span), current.reshape(groups, 1, window), groups=groups)
    dot = dot.reshape(batch, frames, max_lag + 1)
    squares = F.pad(chunks.square().cumsum(-1), (1, 0))
    lagged_energy = squares[..., window:] - squares[..., :-window]  # [B, F, max_lag + 1]
    energy = current.square().sum(-1, keepdim=True)
    keep = max_lag - torch.arange(lags.min_lag, max_lag + 1, device=x.device)  # offsets of lags min..max
    ncc = dot[..., keep] / torch.sqrt(energy * lagged_energy[..., keep].clamp_min(0.0)).clamp_min(1e-12)
    lag_values = torch.arange(lags.min_lag, max_lag + 1, device=x.device, dtype=torch.float32)
    score = ncc * (1.0 - short_lag_bias * (lag_values - lags.min_lag) / max(1, max_lag - lags.min_lag))
    best = score.argmax(-1)
    correlation = ncc.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    starts = torch.arange(frames, device=x.device) * hop - before - max_lag
    ends = torch.arange(frames, device=x.device) * hop - before + window
    complete = ((starts >= 0) & (ends <= length)).unsqueeze(0).expand(batch, frames)
    return best + lags.min_lag, correlation, complete


def voiced_frames(correlation: torch.Tensor, audio: torch.Tensor, hop: int, threshold: float = 0.5) -> torch.Tensor:
    """[B, F] bool: frames periodic enough (ncc >= threshold) and not silent (RMS above -50 dBFS).

    At 0.5, 68% of the frames of 10 cs-male-22k valid utterances agree with pyworld DIO's voicing
    (63% at 0.6; no threshold passes 70%)."""
    rms = audio.float().reshape(audio.shape[0], -1, hop).square().mean(-1).sqrt()
    return (correlation >= threshold) & (rms > 10 ** (-50 / 20))


def cycle_classes(since: torch.Tensor, spacing: torch.Tensor, bins: int) -> torch.Tensor:
    """Class of a sample `since` samples after a pulse in a cycle of `spacing` samples (int tensors).

    The first bins // 2 samples after the pulse each have their own class (the pulse and its decay
    must be placed to the sample); the rest of the cycle shares the other classes in equal parts:
    c = n if n < h else h + (n - h) * (bins - h) // (spacing - h), h = bins // 2 (spacing > h).
    """
    head = bins // 2
    rest = head + (since - head) * (bins - head) // (spacing - head).clamp_min(1)
    return torch.where(since < head, since, rest)


def _pulses_in_run(score: np.ndarray, period: np.ndarray, start: int, stop: int) -> list[int]:
    """Pulse positions in the voiced run [start, stop): the peak of `score` in the first period, then
    each next peak searched between 0.7 and 1.3 periods after the last."""
    first = int(period[start])
    pulses = [start + int(np.argmax(score[start : min(start + first, stop)]))]
    while True:
        last, lag = pulses[-1], int(period[pulses[-1]])
        low, high = last + (7 * lag) // 10, min(last + (13 * lag) // 10 + 1, stop)
        if low >= stop or low >= high:
            return pulses
        pulses.append(low + int(np.argmax(score[low:high])))


def pulse_phases(
    excitation: torch.Tensor, period: torch.Tensor, voiced: torch.Tensor, hop: int, bins: int
) -> torch.Tensor:
    """Phase classes [B, T] in the pitch cycle of the true excitation, the training input of `pitch_phase`.

    excitation [B, T] (the residual), period [B, F] (samples), voiced [B, F] bool, T = F * hop.
    Pulses are the peaks of the residual (a 5-sample weighted sum) one period apart, all of one
    polarity within a voiced run: the sign of the run's skewness, the sign of its large glottal
    spikes. (Peaks of either sign would put a random sign on the pulse the network learns to draw
    at phase 0, and a pulse train of random signs has no harmonics.) Between pulses g_i and g_{i+1} the class is
    `cycle_classes(t - g_i, g_{i+1} - g_i)`, before the first and after the last pulse of a run
    the frame's period takes the place of the pulse spacing. Unvoiced samples get class `bins`.
    """
    batch, length = excitation.shape
    kernel = torch.tensor([[[1.0, 2.0, 4.0, 2.0, 1.0]]], device=excitation.device)  # peaked: one maximum per pulse
    residual = excitation.detach().float()
    smoothed = F.conv1d(residual.unsqueeze(1), kernel, padding=2)[:, 0].cpu().numpy()
    cubes = residual.double().pow(3).cpu().numpy()
    per_sample = period.repeat_interleave(hop, dim=1).cpu().numpy()
    voiced_sample = voiced.repeat_interleave(hop, dim=1).cpu().numpy()
    since_all = np.zeros((batch, length), np.int64)
    spacing_all = np.ones((batch, length), np.int64)
    voiced_all = np.zeros((batch, length), bool)
    for b in range(batch):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced_sample[b].astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            polarity = 1.0 if cubes[b, start:stop].sum() >= 0 else -1.0
            pulses = np.array(_pulses_in_run(polarity * smoothed[b], per_sample[b], int(start), int(stop)))
            t = np.arange(start, stop)
            which = np.searchsorted(pulses, t, side="right") - 1  # the last pulse at or before t (-1: none)
            inner = (which >= 0) & (which < len(pulses) - 1)
            spacing = np.where(inner, pulses[np.minimum(which + 1, len(pulses) - 1)] - pulses[np.maximum(which, 0)], 0)
            since = t - pulses[np.maximum(which, 0)]
            lag = per_sample[b, t]
            spacing = np.where(inner, spacing, lag)
            since = np.where(inner, since, np.mod(since, lag))
            since_all[b, t], spacing_all[b, t], voiced_all[b, t] = since, spacing, True
    classes = cycle_classes(torch.from_numpy(since_all), torch.from_numpy(spacing_all), bins)
    classes = torch.where(torch.from_numpy(voiced_all), classes.clamp_max(bins - 1), torch.full_like(classes, bins))
    return classes.to(excitation.device)


def free_running_phases(
    period: torch.Tensor, voiced: torch.Tensor, hop: int, bins: int, counter: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase classes [B, F * hop] of a pulse clock at each frame's period, the generation input of `pitch_phase`.

    The clock is the recurrence of `LPCNet.step`: per sample, n = 0 if n >= T; class =
    `cycle_classes(n, T)` when voiced (else `bins`, and n = 0); n += 1 when voiced. Computed a frame
    at a time, exactly.
    period [B, F] int64, voiced [B, F] bool, counter [B] int64 (n before the first sample; 0 if None).
    Returns (classes [B, F * hop], counter after the last sample [B]).
    """
    batch, frames = period.shape
    n = torch.zeros(batch, dtype=torch.long, device=period.device) if counter is None else counter.clone()
    steps = torch.arange(hop, device=period.device)
    out = []
    for f in range(frames):
        lag, on = period[:, f].clamp_min(1), voiced[:, f]
        begin = torch.where(n >= lag, torch.zeros_like(n), n)
        since = torch.remainder(begin.unsqueeze(1) + steps, lag.unsqueeze(1))  # [B, hop]
        classes = cycle_classes(since, lag.unsqueeze(1).expand_as(since), bins)
        out.append(torch.where(on.unsqueeze(1), classes, torch.full_like(since, bins)))
        n = torch.where(on, since[:, -1] + 1, torch.zeros_like(n))
    return torch.cat(out, dim=1), n
