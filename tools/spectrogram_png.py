"""Stack the log-mel spectrograms of audio files into one PNG, to look at generated audio.

    python tools/spectrogram_png.py truth.wav generated.wav -o compare.png --titles "ground truth" "WaveNet"

Each file is read at its own sample rate, cut to the shortest, and drawn with the hifigan mel
definition (80 bands to 8 kHz, natural log) on a shared colour scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio", nargs="+", type=Path, help="audio files, drawn top to bottom")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG to write")
    parser.add_argument("--titles", nargs="*", help="one title per file (default: the file names)")
    args = parser.parse_args(argv)
    if args.titles and len(args.titles) != len(args.audio):
        parser.error("give one title per audio file")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vocoders.audio import read_audio
    from vocoders.features import MelConfig, MelSpectrogram

    config = MelConfig()
    mel = MelSpectrogram(config)
    signals = [read_audio(path, config.sample_rate)[0] for path in args.audio]
    length = min(len(s) for s in signals)
    mels = [mel(torch.from_numpy(s[:length])).numpy() for s in signals]
    low, high = min(m.min() for m in mels), max(m.max() for m in mels)
    seconds = length / config.sample_rate
    figure, axes = plt.subplots(len(mels), 1, figsize=(10, 2.4 * len(mels)), squeeze=False)
    for axis, values, path, index in zip(axes[:, 0], mels, args.audio, range(len(mels)), strict=True):
        image = axis.imshow(
            values, origin="lower", aspect="auto", vmin=low, vmax=high, extent=(0, seconds, 0, config.n_mels)
        )
        axis.set_title(args.titles[index] if args.titles else path.name)
        axis.set_ylabel("mel band")
    axes[-1, 0].set_xlabel("seconds")
    figure.colorbar(image, ax=axes[:, 0].tolist(), label="log mel")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
