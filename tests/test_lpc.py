"""Linear prediction from the mel: Levinson-Durbin, the mel-derived filter's gain, chunk invariance."""

import numpy as np
import pytest
import torch

from vocoders.audio import preemphasize
from vocoders.features import MelConfig, MelSpectrogram
from vocoders.lpc import levinson, lpc_from_mel, predict, predict_step


def ar_signal(coeffs, samples, seed=0):
    """An autoregressive process x_t = sum_k c_k x_{t-k} + w_t (white w), float64."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(samples)
    x = np.zeros(samples)
    for t in range(samples):
        x[t] = noise[t] + sum(c * x[t - k - 1] for k, c in enumerate(coeffs) if t - k - 1 >= 0)
    return x


def test_levinson_recovers_the_predictor_of_an_exact_autocorrelation():
    # AR(2) with poles at radius 0.9, angle 0.3 rad: c1 = 2 r cos(theta), c2 = -r^2.
    c1, c2 = 2 * 0.9 * np.cos(0.3), -0.81
    x = ar_signal([c1, c2], 200_000)
    r = torch.tensor([np.dot(x[: len(x) - k], x[k:]) / len(x) for k in range(3)])
    coeffs = levinson(r.unsqueeze(0))[0]
    assert coeffs.tolist() == pytest.approx([c1, c2], abs=0.01)
    higher = levinson(torch.tensor([np.dot(x[: len(x) - k], x[k:]) / len(x) for k in range(7)]).unsqueeze(0))[0]
    assert higher[:2].tolist() == pytest.approx([c1, c2], abs=0.02)
    assert higher[2:].abs().max() < 0.02  # the true process has order 2


def test_levinson_of_white_noise_predicts_nothing():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(levinson(r), torch.zeros(1, 4, dtype=torch.float64))


def test_the_filter_from_the_mel_predicts_a_resonant_signal():
    """The mel of an AR(4) process with two formants gives a predictor close to the process's own."""
    config = MelConfig()
    poles = [0.97 * np.exp(1j * 2 * np.pi * f / config.sample_rate) for f in (500.0, 1500.0)]
    polynomial = np.real(np.poly(poles + [p.conjugate() for p in poles]))  # 1 - sum_k c_k z^-k
    coeffs = list(-polynomial[1:])
    x = ar_signal(coeffs, 40 * 256, seed=1)
    audio = torch.from_numpy(0.1 * x / np.abs(x).max()).float().unsqueeze(0)
    mel = MelSpectrogram(config)(audio)[..., :40]
    predictor = lpc_from_mel(mel, config, order=16, preemphasis=0.85)
    assert predictor.shape == (1, 40, 16)
    signal = preemphasize(audio, 0.85)
    residual = signal - predict(signal, predictor.repeat_interleave(256, dim=1))
    gain = 10 * torch.log10(signal.square().sum() / residual.square().sum())
    # The best order-16 predictor of this signal: Levinson on its own autocorrelation.
    s = signal[0].double()
    own = levinson(torch.stack([(s[: len(s) - k] * s[k:]).sum() for k in range(17)]).unsqueeze(0)).float()
    own_residual = signal - predict(signal, own.expand(1, signal.shape[1], 16))
    own_gain = 10 * torch.log10(signal.square().sum() / own_residual.square().sum())
    assert own_gain > 10.0
    assert gain > own_gain - 3.0, (float(gain), float(own_gain))


@pytest.mark.parametrize("level", [0.1, 0.003])
def test_the_gain_from_the_mel_is_the_rms_of_the_residual(level):
    """The frame gain follows the residual's loudness: an AR(4) process at two levels 30 dB apart."""
    config = MelConfig()
    poles = [0.95 * np.exp(1j * 2 * np.pi * f / config.sample_rate) for f in (700.0, 2500.0)]
    coeffs = list(-np.real(np.poly(poles + [p.conjugate() for p in poles]))[1:])
    x = ar_signal(coeffs, 30 * 256, seed=2)
    audio = torch.from_numpy(level * x / x.std()).float().unsqueeze(0)
    mel = MelSpectrogram(config)(audio)[..., :30]
    predictor, gain = lpc_from_mel(mel, config, with_gain=True)
    assert gain.shape == (1, 30) and gain.dtype == torch.float32
    assert torch.equal(predictor, lpc_from_mel(mel, config))
    signal = preemphasize(audio, 0.85)[:, : 30 * 256]
    residual = signal - predict(signal, predictor.repeat_interleave(256, dim=1))
    rms = residual.view(30, 256)[4:-4].square().mean(1).sqrt()  # frames whose window lies inside the signal
    error_db = 20 * torch.log10(gain[0, 4:-4] / rms)
    assert error_db.median().abs() < 1.0 and error_db.abs().max() < 4.0, error_db


def test_the_filter_of_a_frame_does_not_depend_on_its_neighbours_in_the_batch():
    config = MelConfig()
    mel = torch.randn(2, 80, 11) - 5
    whole = lpc_from_mel(mel, config)
    pieces = torch.cat([lpc_from_mel(mel[..., :1], config), lpc_from_mel(mel[..., 1:4], config),
                        lpc_from_mel(mel[..., 4:], config)], dim=1)  # fmt: skip
    assert torch.equal(whole, pieces)


def test_parallel_and_stepwise_prediction_agree_exactly():
    torch.manual_seed(0)
    signal = torch.randn(3, 50)
    coeffs = torch.randn(3, 50, 16) * 0.2
    parallel = predict(signal, coeffs)
    history = torch.zeros(3, 16)
    for t in range(50):
        assert torch.equal(predict_step(history, coeffs[:, t]), parallel[:, t])
        history = torch.cat([signal[:, t : t + 1], history[:, :-1]], dim=1)
