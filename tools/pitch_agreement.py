"""How well the training pitch tracker (`vocoders.pitch`) agrees with pyworld's DIO + StoneMask.

    python tools/pitch_agreement.py .../cs-male-22k/metadata.csv --split valid --limit 10

The pulse input and the period head of `lpcnet` learn from `vocoders.pitch.frame_periods`; the
evaluation measures F0 and voicing with pyworld. For each utterance: on frames both call voiced,
the median absolute difference in cents, the share within 50 cents and beyond 600 (octave errors);
on all frames, the share where the two voicing decisions agree, at each correlation threshold of
`--thresholds`. Prints one JSON line per utterance and a summary line (frames pooled).
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

from vocoders.audio import read_audio  # noqa: E402
from vocoders.data import find_utterances  # noqa: E402
from vocoders.metrics import frame_f0  # noqa: E402
from vocoders.pitch import PeriodRange, frame_periods, voiced_frames  # noqa: E402

HOP = 256


def frame_agreement(audio: np.ndarray, sample_rate: int, thresholds: list[float]) -> dict[str, np.ndarray]:
    """Per-frame arrays: cents (tracker against pyworld, frames voiced in both at the first threshold),
    and per threshold the frames whose voicing agrees."""
    frames = len(audio) // HOP
    x = torch.from_numpy(audio[: frames * HOP].astype(np.float32)).unsqueeze(0)
    period, correlation, _ = frame_periods(x, HOP, PeriodRange(sample_rate))
    reference = frame_f0(audio, sample_rate, HOP)  # at the tracker's window centres
    out = {}
    for threshold in thresholds:
        voiced = voiced_frames(correlation, x, HOP, threshold)[0].numpy()
        out[f"agree@{threshold}"] = voiced == (reference > 0)
        if threshold == thresholds[0]:
            both = voiced & (reference > 0)
            out["cents"] = 1200.0 * np.log2(sample_rate / period[0].numpy()[both] / reference[both])
    return out


def summary(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    cents = np.abs(arrays["cents"])
    row = {
        "frames_voiced_in_both": int(len(cents)),
        "median_cents": round(float(np.median(cents)), 1) if len(cents) else float("nan"),
        "within_50_cents": round(float(np.mean(cents <= 50.0)), 3) if len(cents) else float("nan"),
        "octave_errors": round(float(np.mean(cents > 600.0)), 3) if len(cents) else float("nan"),
    }
    row.update({key: round(float(np.mean(value)), 3) for key, value in arrays.items() if key.startswith("agree")})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.4, 0.6])
    args = parser.parse_args(argv)
    pooled: dict[str, list[np.ndarray]] = {}
    utterances = [u for u in find_utterances(args.manifest) if u.split == args.split][: args.limit]
    if not utterances:
        print(f"{args.manifest}: no utterances in split {args.split!r}", file=sys.stderr)
        return 2
    for utterance in utterances:
        audio, sample_rate = read_audio(utterance.audio_path)
        arrays = frame_agreement(audio, sample_rate, args.thresholds)
        print(json.dumps({"utterance": utterance.id, **summary(arrays)}))
        for key, value in arrays.items():
            pooled.setdefault(key, []).append(value)
    total = summary({key: np.concatenate(value) for key, value in pooled.items()})
    print(json.dumps({"utterances": len(utterances), **total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
