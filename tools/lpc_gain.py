"""How much of the spectral envelope the mel-derived predictor removes, against each frame's own.

    python tools/lpc_gain.py .../cs-male-22k/metadata.csv --split valid --limit 10

For each utterance: the prediction gain (signal energy over residual energy, dB) of the pre-emphasised
signal under (a) the predictor `vocoders.lpc.lpc_from_mel` derives from the utterance's mel, one per
frame, as LPCNet's split uses it, and (b) the autocorrelation-method predictor of each frame's own
Hann-windowed audio (the frame the mel was computed from): the best a per-frame filter of that order
does, which the mel can only approach. Prints one JSON line per utterance and a summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vocoders.audio import preemphasize, read_audio  # noqa: E402
from vocoders.data import find_utterances  # noqa: E402
from vocoders.features import MelConfig, MelSpectrogram  # noqa: E402
from vocoders.lpc import levinson, lpc_from_mel, predict  # noqa: E402


def gain_db(signal: torch.Tensor, residual: torch.Tensor) -> float:
    return float(10.0 * torch.log10(signal.double().square().sum() / residual.double().square().sum()))


def own_frame_predictor(signal: torch.Tensor, config: MelConfig, order: int, frames: int) -> torch.Tensor:
    """[1, T] pre-emphasised signal -> [1, frames, order]: Levinson on each mel frame's windowed audio."""
    pad = config.padding
    padded = torch.nn.functional.pad(signal.double().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    windows = padded.unfold(1, config.n_fft, config.hop_length)[:, :frames]
    windows = windows * torch.hann_window(config.n_fft, dtype=torch.float64)
    lags = torch.stack([(windows[..., : config.n_fft - k] * windows[..., k:]).sum(-1) for k in range(order + 1)], -1)
    lags[..., 0] = lags[..., 0] * 1.0001 + 1e-12
    return levinson(lags).float()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--order", type=int, default=16)
    parser.add_argument("--preemphasis", type=float, default=0.85)
    args = parser.parse_args(argv)

    config = MelConfig()
    mel_of = MelSpectrogram(config)
    rows = []
    for utterance in [u for u in find_utterances(args.manifest) if u.split == args.split][: args.limit]:
        audio, _ = read_audio(utterance.audio_path, config.sample_rate)
        frames = len(audio) // config.hop_length
        x = torch.from_numpy(audio[: frames * config.hop_length]).unsqueeze(0)
        mel = mel_of(x)[..., :frames]
        signal = preemphasize(x, args.preemphasis)
        from_mel = lpc_from_mel(mel, config, args.order, args.preemphasis)
        own = own_frame_predictor(signal, config, args.order, frames)
        row = {"utterance": utterance.id}
        for name, predictor in (("mel", from_mel), ("own_frame", own)):
            per_sample = predictor.repeat_interleave(config.hop_length, dim=1)
            row[f"gain_db_{name}"] = round(gain_db(signal, signal - predict(signal, per_sample)), 2)
        rows.append(row)
        print(json.dumps(row))
    mel_gain = np.mean([r["gain_db_mel"] for r in rows])
    own_gain = np.mean([r["gain_db_own_frame"] for r in rows])
    print(json.dumps({"utterances": len(rows), "mean_gain_db_mel": round(float(mel_gain), 2),
                      "mean_gain_db_own_frame": round(float(own_gain), 2)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
