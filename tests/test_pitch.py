"""Pitch periods from a waveform: exact on synthetic periodic signals, refused on bad shapes."""

import math

import pytest
import torch

from vocoders.pitch import PeriodRange, cycle_classes, frame_periods, free_running_phases, pulse_phases, voiced_frames


def _glottal_like(period: float, length: int, seed: int = 0) -> torch.Tensor:
    """A decaying resonance re-excited every `period` samples, plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64)
    phase = torch.remainder(t, period)
    pulse = torch.exp(-phase / 40.0) * torch.cos(2 * math.pi * phase / 18.0)
    return (0.3 * pulse + 1e-3 * torch.randn(length, generator=generator, dtype=torch.float64)).float()


@pytest.mark.parametrize("period", [50, 97, 180, 300])
def test_periodic_signal_gives_its_period_on_complete_frames(period):
    lags = PeriodRange(22050, 60.0, 500.0)
    audio = _glottal_like(period, 256 * 12).unsqueeze(0)
    found, correlation, complete = frame_periods(audio, 256, lags)
    assert found.shape == correlation.shape == complete.shape == (1, 12)
    assert complete.any() and not complete.all()  # edges lack history or future
    assert torch.all(found[complete] == period)
    assert torch.all(correlation[complete] > 0.95)
    assert voiced_frames(correlation, audio, 256)[complete].all()


def test_noise_and_silence_are_unvoiced():
    lags = PeriodRange(22050)
    noise = 0.1 * torch.randn(1, 256 * 8, generator=torch.Generator().manual_seed(1))
    silence = torch.zeros(1, 256 * 8)
    audio = torch.cat([noise, silence])
    found, correlation, complete = frame_periods(audio, 256, lags)
    assert torch.all((found >= lags.min_lag) & (found <= lags.max_lag))
    assert not voiced_frames(correlation, audio, 256)[complete].any()


def test_each_stream_and_frame_is_measured_on_its_own():
    lags = PeriodRange(22050, 60.0, 500.0)
    a, b = _glottal_like(120, 256 * 10), _glottal_like(75, 256 * 10, seed=3)
    both, _, complete = frame_periods(torch.stack([a, b]), 256, lags)
    alone, _, _ = frame_periods(b.unsqueeze(0), 256, lags)
    assert torch.equal(both[1], alone[0])
    assert torch.all(both[0][complete[0]] == 120) and torch.all(both[1][complete[1]] == 75)


def test_bad_inputs_are_refused():
    lags = PeriodRange(22050)
    with pytest.raises(ValueError, match="whole number of hops"):
        frame_periods(torch.zeros(1, 1000), 256, lags)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        frame_periods(torch.zeros(1000), 256, lags)
    with pytest.raises(ValueError, match="fmin"):
        PeriodRange(22050, 500.0, 60.0)


def test_pulse_phases_restart_at_each_pulse_and_mark_unvoiced_samples():
    hop, bins = 256, 8
    excitation = torch.zeros(1, hop * 8)
    pulses = [40 + 130 * i for i in range(9)] + [1400 + 100 * i for i in range(6)]
    excitation[0, pulses] = 1.0
    period = torch.tensor([[130] * 5 + [100] * 3])
    voiced = torch.tensor([[True] * 5 + [False] + [True] * 2])
    classes = pulse_phases(excitation, period, voiced, hop, bins)
    assert classes.shape == (1, hop * 8) and classes.dtype == torch.long
    assert torch.all(classes[0, 5 * hop : 6 * hop] == bins)
    for g in pulses[:9]:  # the first run: class 0 at each pulse
        assert classes[0, g] == 0 and classes[0, g - 1] == bins - 1
    cycle = cycle_classes(torch.arange(130), torch.tensor(130), bins)
    assert torch.equal(cycle[:4], torch.arange(4)) and torch.equal(cycle[4:].unique(), torch.arange(4, 8))
    assert torch.equal(classes[0, 40:170], cycle)
    assert torch.equal(classes[0, :40], cycle[90:])  # before the first pulse: the cycle at the frame's period
    for g in (1600, 1700, 1800, 1900):  # the second run starts at 6 * hop = 1536
        assert classes[0, g] == 0


def test_the_free_running_clock_is_the_step_recurrence_and_resumes_across_chunks():
    hop, bins = 16, 8
    generator = torch.Generator().manual_seed(0)
    period = torch.randint(5, 40, (3, 12), generator=generator)
    voiced = torch.rand(3, 12, generator=generator) > 0.3
    whole, end = free_running_phases(period, voiced, hop, bins)
    n = torch.zeros(3, dtype=torch.long)
    for t in range(12 * hop):
        lag, on = period[:, t // hop], voiced[:, t // hop]
        n = torch.where(n >= lag, torch.zeros_like(n), n)
        head = torch.where(n < bins // 2, n, bins // 2 + (n - bins // 2) * (bins - bins // 2) // (lag - bins // 2))
        expected = torch.where(on, head, torch.full_like(n, bins))
        assert torch.equal(whole[:, t], expected)
        n = torch.where(on, n + 1, torch.zeros_like(n))
    assert torch.equal(end, n)
    first, middle = free_running_phases(period[:, :5], voiced[:, :5], hop, bins)
    second, last = free_running_phases(period[:, 5:], voiced[:, 5:], hop, bins, counter=middle)
    assert torch.equal(torch.cat([first, second], dim=1), whole) and torch.equal(last, end)


def test_pulses_keep_the_polarity_of_the_runs_spikes():
    """One large spike of the other sign does not take a pulse's place: phase 0 stays on the positive pulses."""
    hop, bins = 256, 8
    excitation = torch.zeros(1, hop * 6)
    pulses = [40 + 130 * i for i in range(12)]  # to the end of the run: none missing for the search
    excitation[0, pulses] = 1.0
    excitation[0, pulses[4] + 100] = -1.3  # inside the search window of the next pulse, larger in magnitude
    period = torch.full((1, 6), 130)
    voiced = torch.ones(1, 6, dtype=torch.bool)
    classes = pulse_phases(excitation, period, voiced, hop, bins)
    assert torch.equal(torch.nonzero(classes[0] == 0).flatten(), torch.tensor(pulses))
