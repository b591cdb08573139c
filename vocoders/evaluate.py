"""`python -m vocoders.evaluate CHECKPOINT DATA -o REPORT_DIR`: copy-synthesis quality of a vocoder.

For each utterance of DATA (a folder of audio, a CSV manifest and its split, or GTA pairs: whatever
training accepts) the mel is computed with the checkpoint's own contract (or read from the GTA
`.npy`), vocoded by the checkpoint and inverted by Griffin-Lim as a baseline. Both are scored
against the ground truth (see `vocoders.metrics`), DNSMOS also scores the ground truth itself.

REPORT_DIR receives report.json (per utterance, mean and 95% interval), report.md (the table),
summary.png, figures/<utterance>.png (stacked mel spectrograms) and audio/<utterance>_*.wav.
Metrics whose packages are missing are left out with a note naming the extra to install.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .checkpoint import add_settings_argument, parse_settings
from .report import SYSTEM_TITLES, plot_mels, plot_summary, safe_name, write_report

log = logging.getLogger(__name__)

VALID_SPLITS = ("valid", "validation", "dev")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vocoders.evaluate",
        description="Copy-synthesis metrics of a vocoder against ground truth, with a Griffin-Lim baseline.",
    )
    parser.add_argument("checkpoint", type=Path, help="a vocoders .safetensors checkpoint")
    parser.add_argument("data", type=Path, help="folder of audio, CSV manifest, or folder of GTA pairs")
    parser.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    parser.add_argument("--kind", default="auto", help="data kind: auto, folder, csv or gta (default: auto)")
    parser.add_argument("--split", default="valid", help="split to evaluate: valid, train, test or all")
    parser.add_argument("--valid-size", type=int, default=10, help="validation size for manifests without a split")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many utterances")
    parser.add_argument("--engine", default="auto", help="sampling engine (default: auto, the fastest available)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="sampling noise and Griffin-Lim phase seed")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (1 = the model's own)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="utterances vocoded together, similar lengths grouped (default: 8)"
    )
    parser.add_argument("--griffin-lim-iters", type=int, default=60, help="Griffin-Lim iterations (default: 60)")
    parser.add_argument(
        "--mel-projection",
        type=int,
        default=None,
        help="iterations of the mel projection on the vocoder's output (default: the checkpoint's; 0 = none)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: ~/.cache/vocoders)")
    add_settings_argument(parser)
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even if EMA ones exist")
    parser.add_argument("--no-audio", action="store_true", help="do not write the vocoded and Griffin-Lim WAVs")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (the slowest metric)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.griffin_lim_iters < 1:
        parser.error("--griffin-lim-iters must be at least 1")
    if args.mel_projection is not None and args.mel_projection < 0:
        parser.error("--mel-projection must be at least 0")
    return args


def select_utterances(data: Path, kind: str, split: str, valid_size: int, limit: int | None):
    """The utterances of `split` (valid also matches validation/dev; all takes every one)."""
    from .data import ManifestError, find_utterances

    utterances = find_utterances(data, kind, valid_size)
    if split != "all":
        wanted = VALID_SPLITS if split in VALID_SPLITS else (split,)
        chosen = [u for u in utterances if u.split in wanted]
        if not chosen:
            found = ", ".join(sorted({u.split for u in utterances}))
            raise ManifestError(f"{data}: no utterances in split {split!r} (splits found: {found}; or use --split all)")
        utterances = chosen
    return utterances[:limit] if limit else utterances


def vocode_batches(vocoder, mels: list[np.ndarray], batch_size: int, seed: int, temperature: float = 1.0):
    """Vocode mels [n_mels, frames_i] in batches of similar length; yields (index, audio [frames_i * hop]).

    Each batch is edge-padded to its longest mel by repeating the last frame, which is what the
    model's own padding does at an utterance's end, so the padding changes no kept sample; the
    padded tail is cut off. Batching shares the per-step cost of the autoregressive loop. The
    vocoder's mel projection, which looks at neighbouring frames, runs on each utterance alone.
    """
    import torch

    order = sorted(range(len(mels)), key=lambda i: mels[i].shape[1])
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        longest = max(mels[i].shape[1] for i in chosen)
        batch = np.stack([np.pad(mels[i], ((0, 0), (0, longest - mels[i].shape[1])), mode="edge") for i in chosen])
        audio = vocoder(torch.from_numpy(batch), seed=seed + start, temperature=temperature, mel_projection=0)
        for row, i in enumerate(chosen):
            own = audio[row : row + 1, : mels[i].shape[1] * vocoder.hop_length]
            yield i, vocoder.project(own, torch.from_numpy(mels[i])[None])[0].numpy()


class Scorer:
    """Computes every available metric; knows which packages are missing and says so once."""

    def __init__(self, config, use_dnsmos: bool = True) -> None:
        self.config = config
        self.rate = config.sample_rate
        self.missing = {name: metrics.missing_packages(name) for name in ("pesq", "stoi", "dnsmos")}
        if not use_dnsmos:
            self.missing["dnsmos"] = []
        self.dnsmos = metrics.DNSMOS() if use_dnsmos and not self.missing["dnsmos"] else None
        self.f0_tracker = metrics.f0_tracker_name()

    def notes(self) -> list[str]:
        """One line per group of skipped metrics, naming the packages and the extra to install."""
        out = []
        absent = {name: pkgs for name, pkgs in self.missing.items() if pkgs}
        if absent:
            names = ", ".join(n.upper() if n != "dnsmos" else "DNSMOS" for n in absent)
            packages = ", ".join(sorted({p for pkgs in absent.values() for p in pkgs}))
            out.append(f"{names} skipped: missing package(s) {packages}; install them with: {metrics.EVAL_EXTRA_HINT}")
        if self.f0_tracker == "librosa-pyin":
            out.append(f"F0 by librosa's pYIN (pyworld unavailable, slower); for pyworld: {metrics.EVAL_EXTRA_HINT}")
        return out

    def intrusive(self, reference: np.ndarray, test: np.ndarray, reference_db: np.ndarray, test_db: np.ndarray):
        row = {
            "log_mel_distance_db": metrics.db_distance(reference_db, test_db),
            "mcd_db": metrics.mel_cepstral_distortion(reference, test, self.rate),
            **metrics.f0_metrics(reference, test, self.rate),
        }
        if not self.missing["pesq"]:
            row["pesq_wb"] = metrics.pesq_wb(reference, test, self.rate)
        if not self.missing["stoi"]:
            row["stoi"] = metrics.stoi(reference, test, self.rate)
        return row

    def non_intrusive(self, audio: np.ndarray) -> dict[str, float]:
        return self.dnsmos(audio, self.rate) if self.dnsmos is not None else {}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole evaluation described by parsed CLI arguments; returns the report document."""
    from tqdm import tqdm

    from . import check_mel, load
    from .audio import write_wav
    from .data import FeatureCache, load_features
    from .griffinlim import griffin_lim

    settings = parse_settings(args.settings)
    vocoder = load(
        args.checkpoint,
        device=args.device,
        engine=args.engine,
        use_ema=not args.no_ema,
        settings=settings,
        mel_projection=args.mel_projection,
    )
    config = vocoder.mel_config
    utterances = select_utterances(args.data, args.kind, args.split, args.valid_size, args.limit)
    cache = FeatureCache(args.cache_dir, config)
    features, skipped = load_features(utterances, cache, 1, progress=not args.no_progress)
    if not features:
        raise ValueError(f"{args.data}: none of the {len(utterances)} selected utterances is usable")
    scorer = Scorer(config, use_dnsmos=not args.no_dnsmos)
    notes = scorer.notes()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    figures = not metrics.missing_packages("figures")
    if not figures:
        notes.append(f"figures skipped: matplotlib is not installed; install it with: {metrics.EVAL_EXTRA_HINT}")
        print(f"note: {notes[-1]}", file=sys.stderr)
    if skipped:
        notes.append("skipped utterances: " + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())))

    out = args.output
    mels = [np.array(f.mel, dtype=np.float32) for f in features]  # a writable copy of the cached memmap
    for feats, mel in zip(features, mels, strict=True):  # refuse a bad GTA mel before the long loop
        check_mel(mel, config, str(feats.utterance.mel_path or feats.utterance.audio_path))
    rows_by_index: dict[int, dict[str, Any]] = {}
    vocoded_samples = 0
    bar = tqdm(total=len(features), desc="evaluating", unit="utt", disable=args.no_progress, dynamic_ncols=True)
    started = time.perf_counter()
    vocoder_seconds = 0.0
    for index, voc_audio in vocode_batches(vocoder, mels, args.batch_size, args.seed, args.temperature):
        vocoder_seconds += time.perf_counter() - started
        vocoded_samples += len(voc_audio)
        feats, mel = features[index], mels[index]
        utt = feats.utterance
        reference = np.asarray(feats.audio, dtype=np.float32) / 32768.0
        gl_audio = griffin_lim(mel, config, args.griffin_lim_iters, args.seed)
        signals = {"ground_truth": reference, "vocoder": voc_audio, "griffin_lim": gl_audio}
        mel_dbs = {name: metrics.mel_db(audio, config) for name, audio in signals.items()}
        row: dict[str, Any] = {"id": utt.id, "seconds": len(reference) / config.sample_rate}
        for name in ("vocoder", "griffin_lim"):
            row[name] = scorer.intrusive(reference, signals[name], mel_dbs["ground_truth"], mel_dbs[name])
            row[name].update(scorer.non_intrusive(signals[name]))
        row["ground_truth"] = scorer.non_intrusive(reference)
        rows_by_index[index] = row
        name = safe_name(utt.id)
        if not args.no_audio:
            write_wav(out / "audio" / f"{name}_vocoder.wav", voc_audio, config.sample_rate)
            write_wav(out / "audio" / f"{name}_griffin_lim.wav", gl_audio, config.sample_rate)
        if figures:
            plot_mels(
                out / "figures" / f"{name}.png",
                f"{utt.id}: log-mel (dB)",
                {SYSTEM_TITLES[k]: mel_dbs[k] for k in ("ground_truth", "vocoder", "griffin_lim")},
                config.sample_rate,
                config.hop_length,
            )
        bar.update(1)
        bar.set_postfix(voc_lmd=f"{row['vocoder']['log_mel_distance_db']:.2f}")
        started = time.perf_counter()  # the next vocoder time excludes the scoring above
    bar.close()
    rows = [rows_by_index[i] for i in sorted(rows_by_index)]

    info = {
        "checkpoint": str(args.checkpoint),
        "checkpoint_name": args.checkpoint.name,
        "model": vocoder.model.name,
        "model_kwargs": vocoder.model.kwargs,
        "step": vocoder.step,
        "data": str(args.data),
        "split": args.split,
        "utterances": len(rows),
        "engine": vocoder.engine.name,
        "device": str(vocoder.device),
        "seed": args.seed,
        "temperature": args.temperature,
        "settings": settings,
        "batch_size": args.batch_size,
        "griffin_lim_iterations": args.griffin_lim_iters,
        "mel_projection": vocoder.mel_projection,
        "f0_tracker": scorer.f0_tracker,
        "sample_rate": config.sample_rate,
        "vocoder_seconds": vocoder_seconds,
        "vocoder_samples_per_second": vocoded_samples / max(vocoder_seconds, 1e-9),
        "metric_definitions": METRIC_DEFINITIONS,
        "notes": notes,
    }
    document = write_report(out, info, rows)
    if figures:
        plot_summary(out / "summary.png", document["summary"], f"{args.checkpoint.name}: {len(rows)} utterances")
    return document


METRIC_DEFINITIONS = {
    "log_mel_distance_db": "mean over frames of the RMS over mel bands of 20*log10 mel-magnitude differences "
    "(the checkpoint's mel definition, floor included)",
    "mcd_db": "(10/ln10)*sqrt(2*sum_{d=1..24}(c_d-c'_d)^2) averaged over ground-truth frames within 40 dB of the "
    "loudest; c = mel-cepstrum (all-pass warping, alpha 0.455 at 22.05 kHz) of the 1024-point STFT log amplitude "
    "floored 80 dB below the ground truth's peak; c0 excluded",
    "f0_rmse_cents": "RMS of 1200*log2(f0/f0_ref) on 5 ms frames voiced in both",
    "vuv_error": "fraction of frames whose voiced/unvoiced decision differs from the ground truth",
    "pesq_wb": "ITU-T P.862.2 wide-band PESQ, both signals resampled to 16 kHz",
    "stoi": "short-time objective intelligibility (pystoi, classic)",
    "dnsmos_*": "DNSMOS P.835 SIG/BAK/OVRL and P.808 (speechmos ONNX models, local), at 16 kHz",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .audio import AudioError
    from .checkpoint import CheckpointError
    from .data import ManifestError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        document = evaluate(args)
    except (CheckpointError, ManifestError, AudioError, ValueError, RuntimeError) as exc:
        print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print((args.output / "report.md").read_text(encoding="utf-8"))
    print(f"wrote report for {document['utterances']} utterance(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
