"""Mel projection: bring a vocoder's output to the mel it was given, keeping its phase.

A sampled excitation leaves each mel band's energy off the mel's by a few dB from frame to frame
(the network's distribution, not the mel, decides it), and intelligibility and quality measures
follow band energies closely. One iteration takes the STFT of the audio in the mel's own framing,
measures its mel, scales every bin by the ratio of the given mel to the measured one over the bands
the bin belongs to (the filterbank's transpose, normalised), and overlap-adds back. The audio keeps
its own phase and, within each band, its own fine structure (the harmonics the vocoder made); only
the band energies move. Iterating converges on audio whose mel is the given one, as Griffin-Lim's
iterations do, but started from the vocoder's phase rather than a random one. Bins above the
filterbank's fmax are left alone: the mel says nothing about them.

Whole-utterance synthesis only: each iteration reads n_fft / hop frames around a frame, so a
stream would have to hold back that many more frames per iteration (`vocoders.streaming` emits the
network's output unprojected).
"""

from __future__ import annotations

import torch

from .features import MelConfig, mel_filterbank

__all__ = ["mel_projection", "mel_magnitude"]

MAX_GAIN = 20.0  # per-band correction bound per iteration (26 dB): a silent band is not blown up to noise


def mel_magnitude(mel: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Log-mel of `config` [.., n_mels, F] -> the filterbank's output it was the log of (float64)."""
    values = mel.double() * config.std + config.mean
    values = values / config.log_multiplier
    return torch.exp(values) if config.log_base == "e" else torch.pow(10.0, values)


def _window(config: MelConfig, device: torch.device) -> torch.Tensor:
    """The forward STFT's window: a Hann window of win_length zero-padded to n_fft, centred."""
    window = torch.zeros(config.n_fft, dtype=torch.float64, device=device)
    offset = (config.n_fft - config.win_length) // 2
    hann = torch.hann_window(config.win_length, dtype=torch.float64, device=device)
    window[offset : offset + config.win_length] = hann
    return window


def mel_projection(audio: torch.Tensor, mel: torch.Tensor, config: MelConfig, iterations: int) -> torch.Tensor:
    """audio [B, T] float, mel [B, n_mels, F] (the log-mel it was vocoded from, unpadded) -> audio [B, T]
    float32 in [-1, 1] after `iterations` projections (0 returns the audio unchanged).

    T must be F * hop (`center=False`) or (F - 1) * hop (`center=True`), the lengths a vocoder gives.
    """
    if iterations < 0:
        raise ValueError(f"mel projection iterations must be >= 0, got {iterations}")
    if audio.dim() != 2 or mel.dim() != 3 or mel.shape[0] != audio.shape[0] or mel.shape[1] != config.n_mels:
        raise ValueError(
            f"need audio [B, T] and mel [B, {config.n_mels}, F] of the same batch, got {tuple(audio.shape)} "
            f"and {tuple(mel.shape)}"
        )
    frames, hop, n_fft = mel.shape[2], config.hop_length, config.n_fft
    length = (frames - 1) * hop if config.center else frames * hop
    if audio.shape[1] != length:
        raise ValueError(f"a mel of {frames} frames gives {length} samples, got audio of {audio.shape[1]}")
    if iterations == 0:
        return audio
    pad = n_fft // 2 if config.center else config.padding
    if audio.shape[1] <= pad:
        raise ValueError(f"audio of {audio.shape[1]} samples is too short for the STFT (needs more than {pad})")
    device = audio.device
    window = _window(config, device)
    filters = mel_filterbank(config).to(device=device, dtype=torch.float64)  # [n_mels, K]
    coverage = filters.sum(0)  # [K]: 0 above fmax
    covered = coverage > 0
    target = mel_magnitude(mel.to(device), config).transpose(1, 2)  # [B, F, n_mels]: the filterbank's output
    span = (frames - 1) * hop + n_fft
    starts = torch.arange(frames, device=device) * hop
    index = (starts[:, None] + torch.arange(n_fft, device=device)).flatten()  # [F * n_fft]
    overlap = torch.zeros(span, dtype=torch.float64, device=device).index_add_(0, index, window.square().repeat(frames))
    x = audio.double()
    for _ in range(iterations):
        padded = torch.nn.functional.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spectrum = torch.fft.rfft(padded.unfold(-1, n_fft, hop)[:, :frames] * window, dim=-1)  # [B, F, K]
        magnitude = spectrum.abs().pow(config.power)
        measured = magnitude @ filters.t()  # [B, F, n_mels]
        ratio = (target / measured.clamp_min(1e-12)).clamp(1.0 / MAX_GAIN, MAX_GAIN)
        gain = torch.where(covered, (ratio @ filters) / coverage.clamp_min(1e-12), torch.ones_like(coverage))
        pieces = torch.fft.irfft(spectrum * gain.pow(1.0 / config.power), n=n_fft, dim=-1) * window  # [B, F, n_fft]
        summed = torch.zeros(x.shape[0], span, dtype=torch.float64, device=device)
        summed.index_add_(1, index, pieces.flatten(1))
        x = (summed / overlap.clamp_min(1e-8))[:, pad : pad + length]
    return x.clamp(-1.0, 1.0).float()
