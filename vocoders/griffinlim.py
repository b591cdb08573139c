"""Griffin-Lim: the baseline every vocoder is compared against, inverting the same log-mel.

The log-mel of a `MelConfig` is undone step by step: normalisation, log multiplier and base give
the mel magnitude; librosa's non-negative least squares inverts the mel filters to a linear
magnitude spectrogram; Griffin-Lim (librosa, fast variant with momentum) finds a phase. The STFT
framing mirrors the forward transform: with `center=False` the signal was reflect-padded by
`(n_fft - hop) / 2` on each side, so the inverse runs uncentred and that padding is cut off again,
which gives exactly `frames * hop` samples aligned with the ground truth.
"""

from __future__ import annotations

import numpy as np

from .features import MelConfig

__all__ = ["griffin_lim", "mel_to_magnitude"]


def mel_to_magnitude(mel: np.ndarray, config: MelConfig) -> np.ndarray:
    """Log-mel [n_mels, frames] of `config` -> linear STFT magnitude [n_fft // 2 + 1, frames] (float32)."""
    import librosa

    values = np.asarray(mel, dtype=np.float64) * config.std + config.mean
    values = values / config.log_multiplier
    mel_power = np.exp(values) if config.log_base == "e" else np.power(10.0, values)  # mel of |X|^power
    magnitude = librosa.feature.inverse.mel_to_stft(
        mel_power,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        power=1.0,  # invert the filters on the scale they were applied to ...
        fmin=config.fmin,
        fmax=config.fmax,
        htk=config.mel_scale == "htk",
        norm=config.mel_norm,
    )
    return (magnitude ** (1.0 / config.power)).astype(np.float32)  # ... then undo the power


def griffin_lim(mel: np.ndarray, config: MelConfig, iterations: int = 60, seed: int = 0) -> np.ndarray:
    """Invert a log-mel [n_mels, frames] of `config` to audio [frames * hop] float32 in [-1, 1].

    iterations: Griffin-Lim iterations (librosa's fast variant, momentum 0.99); seed: its random
    initial phase, so the same call gives the same audio.
    """
    import librosa

    if iterations < 1:
        raise ValueError(f"Griffin-Lim needs at least one iteration, got {iterations}")
    frames = mel.shape[1]
    magnitude = mel_to_magnitude(mel, config)
    window = np.zeros(config.n_fft)  # the forward STFT zero-pads a win_length Hann window to n_fft
    offset = (config.n_fft - config.win_length) // 2
    window[offset : offset + config.win_length] = np.hanning(config.win_length + 1)[:-1]
    if config.center:
        length = (frames - 1) * config.hop_length
        audio = librosa.griffinlim(
            magnitude,
            n_iter=iterations,
            hop_length=config.hop_length,
            n_fft=config.n_fft,
            window=window,
            center=True,
            length=length,
            random_state=seed,
        )
        audio = np.pad(audio, (0, frames * config.hop_length - len(audio)))
    else:
        padded_length = (frames - 1) * config.hop_length + config.n_fft
        audio = librosa.griffinlim(
            magnitude,
            n_iter=iterations,
            hop_length=config.hop_length,
            n_fft=config.n_fft,
            window=window,
            center=False,
            length=padded_length,
            random_state=seed,
        )
        pad = config.padding
        audio = audio[pad : pad + frames * config.hop_length]
        audio = np.pad(audio, (0, frames * config.hop_length - len(audio)))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
