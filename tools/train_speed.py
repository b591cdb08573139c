"""Trained samples per second of one WaveRNN optimiser step (forward, backward, Adam) on the CPU.

    python tools/train_speed.py --threads 2 --sizes 128:16:1024 256:16:2048 512:32:1024 [model key=value ...]

Each size is H:BATCH:SAMPLES; the model is the 16-bit WaveRNN with conditioning 64 x 2 blocks and
O hidden H/2 unless key=value pairs change it (e.g. bits=10 fine_bits=2 encoding=mulaw). Random mels
and audio; the first step is a warm-up, the next three are timed. Prints one JSON line per size.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vocoders.models.wavernn import WaveRNN


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["128:16:1024", "256:16:2048", "256:32:1024", "512:32:1024"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("model", nargs="*", help="WaveRNN keyword arguments as key=value")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    extra = dict(kv.split("=", 1) for kv in args.model)
    for size in args.sizes:
        hidden, batch, samples = (int(v) for v in size.split(":"))
        kwargs = {"cond_channels": 64, "cond_blocks": 2, "out_hidden": hidden // 2}
        kwargs.update({k: parse_value(v) for k, v in extra.items()})
        model = WaveRNN(hidden_size=hidden, **kwargs)
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        frames = samples // model.hop_length
        mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context) - 5
        audio = torch.rand(batch, frames * model.hop_length) * 0.2 - 0.1
        for i in range(args.steps + 1):
            if i == 1:
                started = time.perf_counter()
            loss, _ = model.loss(mel, audio)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds = (time.perf_counter() - started) / args.steps
        print(
            json.dumps(
                {
                    "hidden": hidden,
                    "batch": batch,
                    "samples": samples,
                    "threads": args.threads,
                    "ms_per_step": round(seconds * 1000, 1),
                    "samples_per_second": round(batch * samples / seconds),
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
