"""Effect of reduced-precision weights in the cpu engine: logits and free-running samples vs float32.

    python tools/precision_effect.py --hidden 896            # random weights
    python tools/precision_effect.py --checkpoint last.safetensors --mel speech.flac
    python tools/precision_effect.py --checkpoint sparse.safetensors --engine sparse-cpu --dtypes bfloat16 float16

Prints one JSON line per weight dtype: the largest |logit difference| under teacher forcing (same
inputs, float32 vs reduced weights), and the fraction of free-running samples equal to the float32
engine's from the same noise, with the step where they first differ.
"""

from __future__ import annotations

import argparse
import json

import torch

from vocoders.audio import read_audio
from vocoders.checkpoint import model_from_checkpoint, read_checkpoint
from vocoders.engines import make_engine
from vocoders.features import MelSpectrogram
from vocoders.models import WaveRNN
from vocoders.sampling import draw_noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--mel", default=None, help="audio file whose mel conditions the run (default: random mel)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", default="cpu", help="cpu or sparse-cpu (both store reduced weights)")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "int8"])
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.checkpoint:
        model = model_from_checkpoint(read_checkpoint(args.checkpoint)).eval()
    else:
        model = WaveRNN(hidden_size=args.hidden).eval()
    with torch.inference_mode():
        if args.mel:
            audio, _ = read_audio(args.mel, model.sample_rate)
            mel = MelSpectrogram(model.mel_config)(torch.from_numpy(audio).unsqueeze(0))[..., : args.frames]
            mel = model.pad_mel(mel)
        else:
            low, high = model.mel_config.value_range()
            mel = low + (high - low) * torch.rand(1, model.n_mels, args.frames + 2 * model.mel_context)
        cond = model.conditioning(mel)
    noise = draw_noise(1, model.num_samples(cond), model.noise_per_step, seed=args.seed)
    full = make_engine(args.engine, model)
    samples = full.generate(cond, noise)
    logits = full.forced_logits(cond, samples)
    finite = torch.isfinite(logits)
    for dtype in args.dtypes:
        engine = make_engine(args.engine, model, dtype=dtype)
        reduced = engine.forced_logits(cond, samples)
        free = engine.generate(cond, noise)
        differ = (free != samples).nonzero()
        print(
            json.dumps(
                {
                    "model_kwargs": model.kwargs,
                    "checkpoint": args.checkpoint,
                    "engine": args.engine,
                    "dtype": dtype,
                    "max_abs_logit_diff": float((reduced[finite] - logits[finite]).abs().max()),
                    "mean_abs_logit_diff": float((reduced[finite] - logits[finite]).abs().mean()),
                    "samples": samples.numel(),
                    "agreement": float((free == samples).double().mean()),
                    "first_difference": int(differ[0, 1]) if len(differ) else None,
                }
            )
        )


if __name__ == "__main__":
    main()
