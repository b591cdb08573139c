"""Linear prediction from a log-mel: the spectral envelope of LPCNet's split, taken from the features.

LPCNet (Valin & Skoglund 2019) lets an all-pole filter carry the spectral envelope so the network
only has to predict the excitation. The filter must come from what the vocoder is given at
inference, so here it is derived from the mel alone, the same way in training and generation:

    mel bands --(undo the log, divide by each band's weight)--> band levels
    band levels --(linear interpolation between band centres)--> magnitude spectrum |X(k)|
    |X(k)|^2 * |1 - alpha e^{-jw}|^2  (the pre-emphasised signal's power spectrum)
    --(inverse DFT, Gaussian lag window, white-noise correction)--> autocorrelation r[0..order]
    --(Levinson-Durbin)--> predictor c[1..order]:  p_t = sum_k c_k s_{t-k}

Every step is a per-frame computation: row products padded to at least four rows (so a frame's
coefficients do not depend on how many frames are computed together, as streaming needs) and
elementwise recursions, in float64.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .features import MelConfig, mel_filterbank
from .models.layers import linear_rows


@functools.lru_cache(maxsize=8)
def _spectrum_basis(config: MelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(band weights [n_mels], interpolation [n_fft // 2 + 1, n_mels]) for `config`, float64.

    Band m's linear value divided by its weight is the mean magnitude^power over the band; the
    interpolation matrix spreads band levels over FFT bins linearly between band centres (constant
    beyond the first and last centre, where no band sees the spectrum).
    """
    import librosa

    basis = mel_filterbank(config)  # [n_mels, bins]
    weights = basis.sum(dim=1)
    centres = librosa.mel_frequencies(
        config.n_mels + 2, fmin=config.fmin, fmax=config.fmax, htk=config.mel_scale == "htk"
    )[1:-1]
    bins = np.linspace(0.0, config.sample_rate / 2, config.n_fft // 2 + 1)
    identity = np.eye(config.n_mels)
    interpolation = np.stack([np.interp(bins, centres, identity[m]) for m in range(config.n_mels)], axis=1)
    return weights, torch.from_numpy(interpolation)


@functools.lru_cache(maxsize=8)
def _autocorrelation_basis(config: MelConfig, order: int, preemphasis: float, lag_window_hz: float) -> torch.Tensor:
    """[bins, order + 1] float64: power spectrum (one-sided) -> windowed autocorrelation r[0..order]."""
    n = config.n_fft
    bins = torch.arange(n // 2 + 1, dtype=torch.float64)
    omega = 2.0 * math.pi * bins / n
    emphasis = 1.0 + preemphasis**2 - 2.0 * preemphasis * torch.cos(omega)  # |1 - a e^{-jw}|^2
    fold = torch.full_like(bins, 2.0)  # one-sided spectrum: interior bins count twice
    fold[0] = 1.0
    fold[-1] = 1.0
    lags = torch.arange(order + 1, dtype=torch.float64)
    cosine = torch.cos(omega.unsqueeze(1) * lags.unsqueeze(0))  # [bins, order + 1]
    lag_window = torch.exp(-0.5 * (2.0 * math.pi * lag_window_hz * lags / config.sample_rate) ** 2)
    return (emphasis * fold / n).unsqueeze(1) * cosine * lag_window.unsqueeze(0)


def mel_power_spectrum(mel: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """The power spectrum a log-mel implies. mel [B, n_mels, F] -> [B, F, n_fft // 2 + 1] float64."""
    weights, interpolation = _spectrum_basis(config)
    values = mel.double() * config.std + config.mean
    values = values / config.log_multiplier
    linear = torch.exp(values) if config.log_base == "e" else torch.pow(10.0, values)
    levels = linear.transpose(1, 2) / weights.to(mel.device)  # [B, F, n_mels]: mean magnitude^power
    magnitude = linear_rows(levels, interpolation.to(mel.device)).clamp_min(0.0) ** (1.0 / config.power)
    return magnitude.square()


def levinson(autocorrelation: torch.Tensor, with_error: bool = False):
    """Levinson-Durbin. r [..., order + 1] (r[0] > 0) -> predictor c [..., order], p_t = sum_k c_k x_{t-k}.

    with_error: also return the prediction error power [...] (in r's units), as (c, error).
    Elementwise over the leading axes, so every row is computed the same whatever it is batched with.
    """
    r = autocorrelation
    order = r.shape[-1] - 1
    coeffs = r.new_zeros(*r.shape[:-1], order)
    error = r[..., 0].clone()
    for i in range(order):
        acc = r[..., i + 1].clone()
        for j in range(i):
            acc = acc - coeffs[..., j] * r[..., i - j]
        reflection = acc / error
        previous = coeffs[..., :i].clone()
        for j in range(i):
            coeffs[..., j] = previous[..., j] - reflection * previous[..., i - 1 - j]
        coeffs[..., i] = reflection
        error = error * (1.0 - reflection * reflection)
    return (coeffs, error) if with_error else coeffs


def window_energy(config: MelConfig) -> float:
    """sum(w^2) of the STFT's Hann window: a white signal of variance v has E|X(k)|^2 = v sum(w^2)."""
    return float(torch.hann_window(config.win_length, dtype=torch.float64).square().sum())


def lpc_from_mel(
    mel: torch.Tensor,
    config: MelConfig,
    order: int = 16,
    preemphasis: float = 0.85,
    lag_window_hz: float = 50.0,
    white_noise: float = 1e-4,
    with_gain: bool = False,
):
    """Per-frame predictor coefficients of the pre-emphasised signal. mel [B, n_mels, F] -> [B, F, order] float32.

    lag_window_hz: Gaussian lag window width (widens formant bandwidths so sharp peaks of a smeared
        estimate do not ring); white_noise: r[0] scale-up (a noise floor of that fraction of the
        power, about -40 dB) that keeps the recursion well conditioned.
    with_gain: also return each frame's residual gain [B, F] float32, the RMS per sample of the
        prediction error the spectrum implies (sqrt of Levinson's error power over the window's
        energy), as (c, gain). On cs-male-22k it is within 0.8 dB (std) of the true residual's
        frame RMS on frames above -60 dB; below, the mel's floor holds it up.
    """
    power = mel_power_spectrum(mel, config)
    basis = _autocorrelation_basis(config, order, float(preemphasis), float(lag_window_hz)).to(mel.device)
    r = linear_rows(power, basis.t().contiguous())  # [B, F, order + 1]
    r0 = r[..., :1] * (1.0 + white_noise)
    r = torch.cat([r0.clamp_min(torch.finfo(torch.float64).tiny), r[..., 1:]], dim=-1)
    coeffs, error = levinson(r, with_error=True)
    if not with_gain:
        return coeffs.float()
    return coeffs.float(), (error.clamp_min(0.0) / window_energy(config)).sqrt().float()


def envelope_mel(
    mel: torch.Tensor, config: MelConfig, order: int = 16, preemphasis: float = 0.85, lag_window_hz: float = 50.0
) -> torch.Tensor:
    """The log-mel (the config's own units) that white excitation of each frame's gain implies after
    the all-pole synthesis filter and the de-emphasis: how much of the mel the envelope alone carries
    (whatever it misses, the excitation must). mel [B, n_mels, F] -> [B, n_mels, F] float64.

    Expected STFT magnitudes stand in for a noise excitation's random ones: |X(k)| = g sqrt(sum w^2)
    / |A(k)| / |1 - alpha e^{-jw_k}|.
    """
    coeffs, gain = lpc_from_mel(mel, config, order, preemphasis, lag_window_hz, with_gain=True)
    bins = config.n_fft // 2 + 1
    a = torch.cat([torch.ones_like(coeffs[..., :1]), -coeffs], dim=-1).double()  # A(z) = 1 - sum c_k z^-k
    response = torch.fft.rfft(a, n=config.n_fft).abs()  # [B, F, bins]
    emphasis = torch.fft.rfft(torch.tensor([1.0, -float(preemphasis)], dtype=torch.float64), n=config.n_fft).abs()
    magnitude = gain.double().unsqueeze(-1) * math.sqrt(window_energy(config)) / (response * emphasis[:bins])
    linear = linear_rows(magnitude**config.power, mel_filterbank(config).to(mel.device)).clamp_min(config.log_floor)
    values = (torch.log(linear) if config.log_base == "e" else torch.log10(linear)) * config.log_multiplier
    return ((values - config.mean) / config.std).transpose(1, 2)


def predict(signal: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """The linear prediction p_t = sum_k c_{t,k} s_{t-k} of every sample from the ones before it.

    signal [B, T]; coeffs [B, T, order] (each sample's own filter), zero history before the start.
    Sums over k in increasing order, one elementwise product at a time: the generation step sums in
    the same order, so both get the same float32 value.
    """
    order = coeffs.shape[-1]
    padded = torch.nn.functional.pad(signal, (order, 0))
    steps = signal.shape[-1]
    prediction = torch.zeros_like(signal)
    for k in range(1, order + 1):
        prediction = prediction + coeffs[..., k - 1] * padded[..., order - k : order - k + steps]
    return prediction


def predict_step(history: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """One sample of `predict`. history [B, order] (s_{t-1} first); coeffs [B, order] -> [B]."""
    prediction = torch.zeros_like(history[:, 0])
    for k in range(coeffs.shape[-1]):
        prediction = prediction + coeffs[:, k] * history[:, k]
    return prediction


# ---- long-term prediction ------------------------------------------------------------------------
def lowpass_taps(cutoff_hz: float, sample_rate: int, half_width: int) -> torch.Tensor:
    """[2 * half_width + 1] float32: a Hann-windowed sinc low-pass at `cutoff_hz`, unit gain at DC."""
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"cutoff must be in (0, {sample_rate / 2}) Hz, got {cutoff_hz}")
    n = np.arange(-half_width, half_width + 1, dtype=np.float64)
    sinc = np.sinc(2.0 * cutoff_hz / sample_rate * n)
    window = 0.5 + 0.5 * np.cos(np.pi * n / (half_width + 1))
    taps = sinc * window
    return torch.from_numpy(taps / taps.sum()).float()


def long_term_predict(
    residual: torch.Tensor, period: torch.Tensor, gain: torch.Tensor, taps: torch.Tensor, limit: float = 0.0
) -> torch.Tensor:
    """The long-term prediction g_t * sum_j h_j r_{t - T_t + j - M} of every sample (M = half the taps).

    residual r [B, T] (the short-term residual), period T_t [B, T] int64 (> M), gain g_t [B, T],
    taps h [2M + 1] (`lowpass_taps`): the low band of the residual one period back, centred on
    t - T_t, all of it in the past. Zero before the start. Sums over j in increasing order from
    zero, one product at a time, as `long_term_step` does, so both give the same float32 value.
    limit > 0 clips the filtered band to [-limit, limit] before the gain (a bound on the comb's
    feedback that the low band of real speech stays below).
    """
    half = taps.shape[0] // 2
    t = torch.arange(residual.shape[1], device=residual.device)
    total = torch.zeros_like(residual)
    for j in range(taps.shape[0]):
        index = t - period + (j - half)
        value = residual.gather(1, index.clamp_min(0))
        total = total + taps[j] * torch.where(index >= 0, value, torch.zeros_like(value))
    if limit > 0:
        total = total.clamp(-limit, limit)
    return gain * total


def long_term_step(
    memory: torch.Tensor, period: torch.Tensor, gain: torch.Tensor, taps: torch.Tensor, limit: float = 0.0
) -> torch.Tensor:
    """One sample of `long_term_predict`. memory [B, R] (r_{t-1} first, R >= max period + M), period [B]
    int64, gain [B] -> [B]."""
    half = taps.shape[0] // 2
    total = torch.zeros_like(memory[:, 0])
    for j in range(taps.shape[0]):
        total = total + taps[j] * memory.gather(1, (period - (j - half) - 1).unsqueeze(1)).squeeze(1)
    if limit > 0:
        total = total.clamp(-limit, limit)
    return gain * total
