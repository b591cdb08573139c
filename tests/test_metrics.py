"""Quality metrics on known cases, the Griffin-Lim baseline, and the report summaries."""

import math

import numpy as np
import pytest
import torch

from vocoders import metrics
from vocoders.audio import read_audio
from vocoders.features import MelConfig, MelSpectrogram
from vocoders.griffinlim import griffin_lim, mel_to_magnitude
from vocoders.report import summarize

from .conftest import SAMPLE, tone


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """1.5 s of real speech from the sample shipped with the package."""
    path = sorted((SAMPLE / "wavs").glob("*.flac"))[0]
    audio, _ = read_audio(path, 22050)
    start = len(audio) // 4
    return audio[start : start + 33075]


def noisy(x: np.ndarray, level: float) -> np.ndarray:
    return (x + level * np.random.default_rng(1).standard_normal(len(x))).astype(np.float32)


def delayed(x: np.ndarray, samples: int) -> np.ndarray:
    return np.concatenate([np.zeros(samples, np.float32), x[: len(x) - samples]])


def test_a_signal_against_itself_scores_perfectly(speech):
    config = MelConfig()
    assert metrics.log_mel_distance(speech, speech, config) == 0.0
    assert metrics.mel_cepstral_distortion(speech, speech, 22050) == 0.0
    assert metrics.f0_metrics(speech, speech, 22050) == {"f0_rmse_cents": 0.0, "vuv_error": 0.0}


def test_spectral_distances_grow_with_noise_and_delay(speech):
    config = MelConfig()
    lmd = [metrics.log_mel_distance(speech, noisy(speech, level), config) for level in (0.001, 0.01, 0.05)]
    mcd = [metrics.mel_cepstral_distortion(speech, noisy(speech, level), 22050) for level in (0.001, 0.01, 0.05)]
    assert 0 < lmd[0] < lmd[1] < lmd[2]
    assert 0 < mcd[0] < mcd[1] < mcd[2]
    lmd_delay = [metrics.log_mel_distance(speech, delayed(speech, d), config) for d in (32, 128, 512)]
    mcd_delay = [metrics.mel_cepstral_distortion(speech, delayed(speech, d), 22050) for d in (32, 128, 512)]
    assert 0 < lmd_delay[0] < lmd_delay[1] < lmd_delay[2]
    assert 0 < mcd_delay[0] < mcd_delay[1] < mcd_delay[2]


def test_mel_distance_is_in_decibels():
    x = tone(0.5)
    assert metrics.log_mel_distance(x, 0.5 * x, MelConfig()) == pytest.approx(20 * math.log10(2), abs=0.05)


def test_f0_rmse_measures_a_pitch_shift_in_cents():
    low, high = tone(0.6, freq=200.0), tone(0.6, freq=200.0 * 2 ** (100 / 1200))  # 100 cents apart
    result = metrics.f0_metrics(low, high, 22050)
    assert result["f0_rmse_cents"] == pytest.approx(100.0, abs=15.0)
    assert result["vuv_error"] < 0.2
    silence = np.zeros_like(low)
    assert metrics.f0_metrics(low, silence, 22050)["vuv_error"] > 0.5


def test_pesq_and_stoi_fall_with_noise(speech):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    clean = metrics.pesq_wb(speech, speech, 22050)
    assert clean > 4.5
    assert metrics.pesq_wb(speech, noisy(speech, 0.002), 22050) > metrics.pesq_wb(speech, noisy(speech, 0.03), 22050)
    assert metrics.stoi(speech, speech, 22050) == pytest.approx(1.0, abs=1e-6)
    assert metrics.stoi(speech, noisy(speech, 0.002), 22050) > metrics.stoi(speech, noisy(speech, 0.1), 22050)


def test_dnsmos_runs_offline_from_the_bundled_models(speech):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    scores = metrics.DNSMOS()(speech, 22050)
    assert set(scores) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
    assert all(1.0 <= v <= 5.0 for v in scores.values())


def test_griffin_lim_inverts_a_short_mel_to_aligned_audio(speech):
    config = MelConfig()
    frames = 24
    audio = speech[: frames * 256]
    mel = MelSpectrogram(config)(torch.from_numpy(audio)).numpy()
    assert mel.shape == (80, frames)
    magnitude = mel_to_magnitude(mel, config)
    assert magnitude.shape == (513, frames) and (magnitude >= 0).all()
    out = griffin_lim(mel, config, iterations=16, seed=3)
    assert out.shape == (frames * 256,) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, griffin_lim(mel, config, iterations=16, seed=3))
    # The inversion reproduces the mel far better than noise of the same loudness does.
    good = metrics.log_mel_distance(audio, out, config)
    bad = metrics.log_mel_distance(audio, noisy(np.zeros_like(audio), float(audio.std())), config)
    assert good < 4.0 < bad
    with pytest.raises(ValueError, match="iteration"):
        griffin_lim(mel, config, iterations=0)


def test_summary_mean_and_95_percent_interval():
    s = summarize([1.0, 2.0, 3.0, float("nan")])
    assert s["n"] == 3 and s["mean"] == 2.0
    assert s["ci95_high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert summarize([])["mean"] is None
