"""`python -m vocoders.demo`: vocode a held-out utterance with the shipped model.

It takes the validation utterances of the speech sample shipped with the package (none of them was
trained on), computes their mels, vocodes them with the shipped checkpoint on the fastest CPU engine,
and writes the WAVs, a spectrogram PNG against the ground truth and a few copy-synthesis figures.
`./run demo` runs this, then shows training (`python -m vocoders.train recipe=demo`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import pretrained
from .audio import read_audio, write_wav
from .data import find_utterances
from .inference import load
from .training import embedded_sample

DEFAULT_MODEL = "cs-male-22k"


def held_out_utterances(manifest: Path) -> list:
    """The sample's validation utterances (the corpus's own valid split: never trained on)."""
    return [u for u in find_utterances(manifest) if u.split == "valid"]


def run(model: str, out_dir: Path, engine: str = "auto", seed: int = 0, limit: int = 1) -> dict:
    """Vocode `limit` held-out utterances; returns what was written and measured."""
    from .diagnose import plot_spectrograms
    from .metrics import db_distance, f0_metrics, mel_db

    voc = load(model, engine=engine)
    rows = []
    for utt in held_out_utterances(embedded_sample())[:limit]:
        audio, _ = read_audio(utt.audio_path, voc.sample_rate)
        audio = audio[: len(audio) // voc.hop_length * voc.hop_length]
        mel = voc.mel(torch.from_numpy(audio))
        started = time.perf_counter()
        raw = voc(mel, seed=seed, mel_projection=0)
        vocoded = voc.project(raw[None], mel[None])[0].numpy()  # the checkpoint's default projection
        elapsed = time.perf_counter() - started
        wav = write_wav(out_dir / f"{utt.id}_vocoded.wav", vocoded, voc.sample_rate)
        panels = {"ground truth": audio, f"vocoded ({voc.engine.name})": vocoded}
        if voc.mel_projection:
            panels = {
                "ground truth": audio,
                f"network ({voc.engine.name})": raw.numpy(),
                f"+ mel projection ({voc.mel_projection})": vocoded,
            }
        png = plot_spectrograms(
            out_dir / f"{utt.id}.png",
            panels,
            voc.sample_rate,
            f"{utt.id}: held out, vocoded by {model}",
        )
        pitch = f0_metrics(audio, vocoded, voc.sample_rate)
        config = voc.mel_config
        rows.append(
            {
                "utterance": utt.id,
                "wav": str(wav),
                "spectrogram": str(png),
                "seconds": len(vocoded) / voc.sample_rate,
                "real_time_factor": elapsed / (len(vocoded) / voc.sample_rate),
                "engine": voc.engine.name,
                "mel_projection": voc.mel_projection,
                "log_mel_distance_db": db_distance(mel_db(audio, config), mel_db(vocoded, config)),
                "f0_rmse_cents": pitch["f0_rmse_cents"],
                "vuv_error": pitch["vuv_error"],
            }
        )
    return {"model": model, "checkpoint": str(voc.checkpoint_path), "step": voc.step, "utterances": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vocoders.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a checkpoint path or a shipped model's name")
    parser.add_argument("-o", "--out", type=Path, default=Path("runs/demo/vocoded"))
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--utterances", type=int, default=1)
    args = parser.parse_args(argv)
    if not pretrained.resolve(args.model).is_file():
        print(
            f"demo: {args.model}: no such checkpoint (shipped: {', '.join(pretrained.available()) or 'none'})",
            file=sys.stderr,
        )
        return 2
    result = run(args.model, args.out, args.engine, limit=args.utterances)
    for row in result["utterances"]:
        speed = 1 / max(row["real_time_factor"], 1e-9)
        print(
            f"vocoded {row['utterance']} ({row['seconds']:.1f} s, held out) with {result['model']} "
            f"(step {result['step']}, engine {row['engine']}, {speed:.1f}x real time): "
            f"{row['wav']}\n  spectrogram against the ground truth: {row['spectrogram']}\n"
            f"  F0 RMSE {row['f0_rmse_cents']:.0f} cents, V/UV error {100 * row['vuv_error']:.1f}%, "
            f"log-mel distance {row['log_mel_distance_db']:.2f} dB"
        )
    (args.out / "demo.json").write_text(json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
