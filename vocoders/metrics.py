"""Copy-synthesis quality metrics: a test signal against the ground truth it should reproduce.

All functions take time-aligned float32 mono audio in [-1, 1] at the same sample rate (copy
synthesis keeps samples aligned, so there is no time warping). Lower is better except where noted.

- `log_mel_distance`: RMS over mel bands of the difference in dB, averaged over frames.
- `mel_cepstral_distortion`: MCD in dB on mel-cepstra of order 24, c0 excluded:
      MCD = (10 / ln 10) * sqrt(2 * sum_{d=1..24} (c_d - c'_d)^2), averaged over speech frames,
  where c are the mel-cepstra of the STFT log-amplitude spectrum (floored 80 dB below the ground
  truth's peak, so empty bands count as a bounded error) on a frequency axis warped by the all-pass
  constant alpha (0.455 at 22.05 kHz), i.e. ln|X(w)| = c_0 + 2 sum_m c_m cos(m * warp(w)). Speech
  frames are those of the ground truth within 40 dB of its loudest frame. STFT: 1024-point Hann
  window, hop 256 at the audio's own rate.
- `f0_metrics`: F0 RMSE in cents on frames voiced in both, and the voiced/unvoiced decision error
  rate (pyworld's DIO + StoneMask when installed, else librosa's pYIN).
- `pesq_wb` (higher is better): ITU-T P.862.2 wide-band PESQ at 16 kHz (package `pesq`).
- `stoi` (higher is better): short-time objective intelligibility (package `pystoi`).
- `DNSMOS` (higher is better): Microsoft's non-intrusive DNSMOS P.835 (SIG, BAK, OVRL) and P.808,
  from the ONNX models the `speechmos` package ships, run locally by onnxruntime.
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import torch

from .features import MelConfig, MelSpectrogram

__all__ = [
    "DNSMOS",
    "EVAL_EXTRA_HINT",
    "MCD_ORDER",
    "f0_metrics",
    "log_mel_distance",
    "mel_cepstral_distortion",
    "missing_packages",
    "pesq_wb",
    "stoi",
]

MCD_ORDER = 24
SPEECH_FRAME_RANGE_DB = 40.0
SPECTRUM_RANGE_DB = 80.0
DB_PER_NEPER = 20.0 / math.log(10.0)  # amplitude: 20 log10(x) = DB_PER_NEPER * ln(x)
EVAL_EXTRA_HINT = "pip install 'vocoders[eval]'"

# metric -> the import names it needs (beyond the core dependencies)
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "pesq": ("pesq",),
    "stoi": ("pystoi",),
    "dnsmos": ("speechmos", "onnxruntime"),
    "f0": ("pyworld",),  # optional: librosa's slower pYIN is used without it
    "figures": ("matplotlib",),
}


def missing_packages(metric: str) -> list[str]:
    """Import names that `metric` (a key of REQUIREMENTS) needs and that are not installed."""
    return [name for name in REQUIREMENTS.get(metric, ()) if importlib.util.find_spec(name) is None]


def _check_pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float32).reshape(-1)
    test = np.asarray(test, dtype=np.float32).reshape(-1)
    n = min(len(reference), len(test))
    if n == 0:
        raise ValueError("cannot compare empty signals")
    return reference[:n], test[:n]


# ---- spectral distances ------------------------------------------------------------------------


def mel_db(audio: np.ndarray, config: MelConfig) -> np.ndarray:
    """Mel magnitude of `config` in dB (20 log10), floored by the config's log floor. [n_mels, frames]."""
    mel = MelSpectrogram(config)(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))).double().numpy()
    return features_db(mel, config)


def features_db(mel: np.ndarray, config: MelConfig) -> np.ndarray:
    """A log-mel in the config's own units (normalised, any base and multiplier) as magnitude dB."""
    mel = (np.asarray(mel, dtype=np.float64) * config.std + config.mean) / config.log_multiplier
    log10 = mel / math.log(10.0) if config.log_base == "e" else mel
    return (20.0 / config.power) * log10


def log_mel_distance(reference: np.ndarray, test: np.ndarray, config: MelConfig) -> float:
    """Mean over frames of the RMS over mel bands of the log-mel difference, in dB."""
    reference, test = _check_pair(reference, test)
    return db_distance(mel_db(reference, config), mel_db(test, config))


def db_distance(reference_db: np.ndarray, test_db: np.ndarray) -> float:
    """log_mel_distance from precomputed `mel_db` arrays [n_mels, frames] (the shorter length wins)."""
    n = min(reference_db.shape[1], test_db.shape[1])
    diff = test_db[:, :n] - reference_db[:, :n]
    return float(np.sqrt(np.mean(diff**2, axis=0)).mean())


def all_pass_alpha(sample_rate: int) -> float:
    """Frequency-warping constant that approximates the mel scale at `sample_rate` (0.455 at 22.05 kHz)."""
    table = {8000: 0.31, 11025: 0.357, 16000: 0.41, 22050: 0.455, 24000: 0.466, 32000: 0.504, 44100: 0.544}
    if sample_rate in table:
        return table[sample_rate]
    rates = sorted(table)
    return float(np.interp(sample_rate, rates, [table[r] for r in rates]))


def stft_magnitude(audio: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """|STFT| [n_fft // 2 + 1, frames] with a Hann window, centred."""
    import librosa

    return np.abs(librosa.stft(np.asarray(audio, dtype=np.float64), n_fft=n_fft, hop_length=hop, window="hann"))


def mel_cepstrum(spectrum: np.ndarray, sample_rate: int, order: int = MCD_ORDER, floor: float = 1e-8) -> np.ndarray:
    """Mel-cepstra c_0..c_order per frame ([frames, order + 1]) of a magnitude spectrum [bins, frames].

    The log-amplitude STFT spectrum is resampled on the all-pass-warped frequency axis and
    transformed by a real inverse FFT, so that ln|X(w)| ~ c_0 + 2 sum_m c_m cos(m * warp(w)).
    """
    alpha = all_pass_alpha(sample_rate)
    log_amplitude = np.log(np.maximum(spectrum, floor))  # [bins, frames]
    bins = spectrum.shape[0]
    n_fft = 2 * (bins - 1)
    warped = np.linspace(0.0, np.pi, bins)  # a uniform grid on the warped (mel-like) axis
    linear = warped - 2.0 * np.arctan(alpha * np.sin(warped) / (1.0 + alpha * np.cos(warped)))  # its inverse warp
    source = np.linspace(0.0, np.pi, bins)
    resampled = np.stack([np.interp(linear, source, column) for column in log_amplitude.T])  # [frames, bins]
    return np.fft.irfft(resampled, n=n_fft, axis=1)[:, : order + 1]


def mel_cepstral_distortion(reference: np.ndarray, test: np.ndarray, sample_rate: int, order: int = MCD_ORDER) -> float:
    """MCD in dB (c0 excluded, see the module docstring) over the ground truth's speech frames."""
    reference, test = _check_pair(reference, test)
    spec_ref, spec_test = stft_magnitude(reference), stft_magnitude(test)
    floor = max(float(spec_ref.max()), 1e-8) * 10.0 ** (-SPECTRUM_RANGE_DB / 20.0)
    c_ref = mel_cepstrum(spec_ref, sample_rate, order, floor)
    c_test = mel_cepstrum(spec_test, sample_rate, order, floor)
    energy = 10.0 * np.log10(np.sum(spec_ref**2, axis=0) + 1e-20)
    speech = energy >= energy.max() - SPEECH_FRAME_RANGE_DB
    diff = c_ref[speech, 1:] - c_test[speech, 1:]
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(diff**2, axis=1))
    return float(per_frame.mean())


# ---- pitch -------------------------------------------------------------------------------------


def f0_track(audio: np.ndarray, sample_rate: int, frame_period_ms: float = 5.0) -> tuple[np.ndarray, str]:
    """F0 in Hz per frame (0 = unvoiced) and the name of the tracker used."""
    audio = np.asarray(audio, dtype=np.float64)
    pyworld = _pyworld()
    if pyworld is not None:
        f0, times = pyworld.dio(audio, sample_rate, f0_floor=60.0, f0_ceil=800.0, frame_period=frame_period_ms)
        return pyworld.stonemask(audio, f0, times, sample_rate), "pyworld-dio-stonemask"
    import librosa

    hop = int(round(sample_rate * frame_period_ms / 1000.0)) * 2
    f0, voiced, _ = librosa.pyin(audio, fmin=60.0, fmax=800.0, sr=sample_rate, frame_length=2048, hop_length=hop)
    return np.where(voiced, np.nan_to_num(f0), 0.0), "librosa-pyin"


def frame_f0(audio: np.ndarray, sample_rate: int, hop: int, frame_period_ms: float = 5.0) -> np.ndarray:
    """F0 in Hz (0 = unvoiced) [F] of audio [F * hop] from `f0_track`, read at each hop-sized frame's centre."""
    frames = len(audio) // hop
    f0, _ = f0_track(np.asarray(audio[: frames * hop], dtype=np.float64), sample_rate, frame_period_ms)
    centre_ms = (np.arange(frames) * hop + hop / 2) / sample_rate * 1000.0
    return f0[np.clip(np.round(centre_ms / frame_period_ms).astype(int), 0, len(f0) - 1)]


def f0_metrics(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> dict[str, float]:
    """{"f0_rmse_cents": RMSE on frames voiced in both (NaN if none), "vuv_error": fraction of frames}."""
    reference, test = _check_pair(reference, test)
    f0_ref, _ = f0_track(reference, sample_rate)
    f0_test, _ = f0_track(test, sample_rate)
    n = min(len(f0_ref), len(f0_test))
    f0_ref, f0_test = f0_ref[:n], f0_test[:n]
    voiced_ref, voiced_test = f0_ref > 0, f0_test > 0
    both = voiced_ref & voiced_test
    cents = 1200.0 * np.log2(f0_test[both] / f0_ref[both]) if both.any() else np.array([])
    return {
        "f0_rmse_cents": float(np.sqrt(np.mean(cents**2))) if len(cents) else float("nan"),
        "vuv_error": float(np.mean(voiced_ref != voiced_test)),
    }


def _pyworld():
    """The pyworld module, or None when it is missing or cannot import (it needs pkg_resources)."""
    if importlib.util.find_spec("pyworld") is None:
        return None
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyworld's own pkg_resources deprecation warning
            import pyworld
    except ImportError:
        return None
    return pyworld


def f0_tracker_name() -> str:
    return "pyworld-dio-stonemask" if _pyworld() is not None else "librosa-pyin"


# ---- packages: PESQ, STOI, DNSMOS --------------------------------------------------------------


def _to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == 16000:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), sample_rate, 16000, quality="HQ").astype(np.float32)


def pesq_wb(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, 1.04..4.64) at 16 kHz; NaN when PESQ finds no speech."""
    from pesq import pesq

    reference, test = _check_pair(reference, test)
    try:
        return float(pesq(16000, _to_16k(reference, sample_rate), _to_16k(test, sample_rate), "wb"))
    except Exception:  # pesq raises for signals without detectable speech
        return float("nan")


def stoi(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """STOI (0..1, higher is better); NaN for clips too short to score."""
    import warnings

    from pystoi import stoi as _stoi

    reference, test = _check_pair(reference, test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(reference.astype(np.float64), test.astype(np.float64), sample_rate, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return float("nan")  # under ~0.4 s of speech: pystoi would return a meaningless 1e-5
    return value


class DNSMOS:
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 from the speechmos package's bundled ONNX models.

    Runs entirely offline. Clips shorter than the models' 9 s window are repeated to fill it (the
    package's own convention).
    """

    def __init__(self) -> None:
        from speechmos import dnsmos

        folder = os.path.join(os.path.dirname(dnsmos.__file__), "dnsmos_models")
        self._model = dnsmos.DNSMOS(os.path.join(folder, "sig_bak_ovr.onnx"), os.path.join(folder, "model_v8.onnx"))

    def __call__(self, audio: np.ndarray, sample_rate: int) -> dict[str, float]:
        audio = np.clip(_to_16k(audio, sample_rate), -1.0, 1.0)
        scores = self._model(audio, 16000, False)
        return {
            "dnsmos_ovrl": float(scores["ovrl_mos"]),
            "dnsmos_sig": float(scores["sig_mos"]),
            "dnsmos_bak": float(scores["bak_mos"]),
            "dnsmos_p808": float(scores["p808_mos"]),
        }
