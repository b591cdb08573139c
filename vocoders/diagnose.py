"""Diagnostics that tell a training budget from a bug: `python -m vocoders.diagnose CHECK ...`.

- overfit: train a recipe on one or two utterances until the teacher-forced loss is low, then
  generate free-running from the same mels with every CPU engine and compare the pitch with the
  ground truth (F0 RMSE on frames voiced in both, V/UV error) and as spectrogram PNGs. A model that
  cannot follow the harmonics of audio it has memorised points at a bug in generation.
- conditioning: validation cross-entropy with the true mel against a zeroed and a shuffled one.
  A small gap means the model ignores its conditioning.
- agreement: the engine's teacher-forced logits against the training forward pass on the same mel
  and audio (a whole utterance, its first frames included).
- starts: generate the first frames of every utterance with a few seeds and list the starts that
  stay silent through speech (generated RMS under a tenth of the truth's on its speech frames): a
  model that has learned to continue digital silence with certainty never leaves the all-zero state
  generation starts from.
- bands: where generated audio's log-mel departs from the truth's, band by band: the mean error
  over speech frames (a static bias that a fixed filter would remove) against its spread from frame
  to frame (what only a better model removes), for the WAVs an evaluation wrote.
- envelope: for an LPC model, how much of the mel its all-pole envelope carries: the shape error of
  the envelope (white excitation at each frame's gain) against the mel, band by band; the rest is
  what the network's excitation has to colour. `--order`, `--preemphasis`, `--lag-window-hz`
  compare other envelopes on the same mels.

Each prints one JSON object; the library functions below are what the tests call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import read_audio
from .checkpoint import add_settings_argument
from .data import F0_FRAME_MS, FeatureCache, Features, f0_window, find_utterances, mel_window
from .engines import ENGINES, make_engine
from .metrics import frame_f0
from .models.base import VocoderModel
from .sampling import draw_noise, sample_categorical


@dataclass
class Utterance:
    """A ground-truth utterance for the checks: audio [samples] float32 and its mel [n_mels, frames]."""

    id: str
    audio: np.ndarray
    mel: np.ndarray


def load_utterances(manifest: str | Path, model: VocoderModel, split: str, limit: int) -> list[Utterance]:
    """The first `limit` utterances of a manifest's split, as features of the model's mel contract."""
    chosen = [u for u in find_utterances(manifest) if u.split == split]
    if not chosen:
        raise ValueError(f"{manifest}: no utterances in split {split}")
    cache = FeatureCache(None, model.mel_config)
    out = []
    for utt in chosen[:limit]:
        feats: Features = cache.load(utt)
        out.append(Utterance(utt.id, np.asarray(feats.audio, dtype=np.float32) / 32768.0, np.asarray(feats.mel)))
    return out


def cpu_engines(model: VocoderModel) -> list[str]:
    """Every engine that can run `model` on the CPU."""
    return [name for name, cls in ENGINES.items() if cls.available(model, "cpu") is None]


@torch.no_grad()
def free_running(
    model: VocoderModel, utterances: list[Utterance], engine: str, seed: int = 0, seconds: float | None = None
) -> list[dict[str, Any]]:
    """Generate each utterance from its mel with `engine`; pitch metrics against the ground truth.

    Returns one row per utterance: id, engine, f0_rmse_cents, vuv_error, samples_per_second, and the
    generated audio (key "audio", float32 [samples]) for plotting.
    """
    from .metrics import f0_metrics

    model = model.eval()
    runner = make_engine(engine, model, "cpu")
    rows = []
    for utt in utterances:
        frames = utt.mel.shape[1]
        if seconds:
            frames = min(frames, max(1, int(seconds * model.sample_rate / model.hop_length)))
        ctx = model.mel_context
        mel = torch.from_numpy(mel_window(utt.mel, -ctx, frames + ctx)).unsqueeze(0)
        cond = model.conditioning(mel)
        noise = draw_noise(1, model.num_samples(cond), model.noise_per_step, seed=seed)
        started = time.perf_counter()
        audio = runner.synthesize(cond, noise)[0].numpy()
        elapsed = time.perf_counter() - started
        truth = utt.audio[: len(audio)]
        rows.append(
            {
                "id": utt.id,
                "engine": engine,
                **f0_metrics(truth, audio, model.sample_rate),
                "samples_per_second": len(audio) / max(elapsed, 1e-9),
                "audio": audio,
            }
        )
    return rows


@torch.no_grad()
def conditioning_gap(model: VocoderModel, utterances: list[Utterance], segment_frames: int, seed: int = 0):
    """Teacher-forced loss on fixed segments with the true mel, a zeroed mel (the log floor) and a
    shuffled one (the frames of another utterance). Returns {"true": .., "zeroed": .., "shuffled": ..}
    with each the mean loss (nats) over the same segments and targets. A model trained on the reference
    tracker's F0 (`reads_f0`) gets the true F0 of each segment with every mel (the mel is what varies);
    a model whose mel also sets its targets (LPC) keeps them at the true mel's (`conditioning_loss`)."""
    model = model.eval()
    generator = torch.Generator().manual_seed(seed)
    ctx, hop = model.mel_context, model.hop_length
    mels, audios, f0s = [], [], []
    for utt in utterances:
        spare = max(0, utt.mel.shape[1] - segment_frames)
        start = int(torch.randint(0, spare + 1, (), generator=generator))
        mels.append(mel_window(utt.mel, start - ctx, start + segment_frames + ctx))
        piece = np.zeros(segment_frames * hop, dtype=np.float32)
        chunk = utt.audio[start * hop : (start + segment_frames) * hop]
        piece[: len(chunk)] = chunk
        audios.append(piece)
        if model.reads_f0:  # the tracker over the whole utterance, as training's feature cache runs it
            track = frame_f0(utt.audio, model.mel_config.sample_rate, model.hop_length, F0_FRAME_MS)
            f0s.append(f0_window(track, start, segment_frames))
    mel = torch.from_numpy(np.stack(mels))
    audio = torch.from_numpy(np.stack(audios))
    extra = (torch.from_numpy(np.stack(f0s)),) if f0s else ()
    floor = float(np.log(model.mel_config.log_floor)) if model.mel_config.log_base == "e" else None
    zeroed = torch.full_like(mel, floor if floor is not None else float(mel.min()))
    shuffled = mel.roll(1, dims=0) if len(utterances) > 1 else mel.flip(-1)
    return {
        name: float(model.conditioning_loss(m, mel, audio, *extra)[0])
        for name, m in (("true", mel), ("zeroed", zeroed), ("shuffled", shuffled))
    }


@torch.no_grad()
def logit_agreement(
    model: VocoderModel, utterance: Utterance, engine: str, frames: int | None = None
) -> dict[str, Any]:
    """The engine's teacher-forced logits against `model.forward_logits` on an utterance's own mel and
    audio (edge-padded like inference): the largest difference over all samples and over the first
    frame, the largest logit (for scale), and the fraction of draws (one uniform number per draw, the
    same for both) that pick the same class from the two. Draws from single-softmax logits [B, T, K]
    and the dual softmax [B, T, 2, K]; other shapes report draw_agreement None."""
    model = model.eval()
    frames = min(frames or utterance.mel.shape[1], utterance.mel.shape[1])
    mel = torch.from_numpy(utterance.mel[:, :frames]).unsqueeze(0)
    padded = model.pad_mel(mel)
    targets = model.encode(torch.from_numpy(utterance.audio[: frames * model.hop_length]).unsqueeze(0))
    training = model.forward_logits(padded, targets)
    runner = make_engine(engine, model, "cpu")
    forced = runner.forced_logits(model.conditioning(padded), targets)
    finite = torch.isfinite(training)
    diff = (forced - training).abs().where(finite, torch.zeros_like(training))
    first = diff[:, : model.hop_length]
    agreement = None
    if training.dim() == 3:
        uniform = torch.rand(training.shape[1], generator=torch.Generator().manual_seed(0))
        a = sample_categorical(forced[0].float(), uniform)
        b = sample_categorical(training[0].float(), uniform)
        agreement = float((a == b).float().mean())
    if training.dim() == 4:
        generator = torch.Generator().manual_seed(0)
        same = []
        for half in range(training.shape[2]):
            uniform = torch.rand(training.shape[1], generator=generator)
            a = sample_categorical(forced[0, :, half].float(), uniform)
            b = sample_categorical(training[0, :, half].float(), uniform)
            same.append(a == b)
        agreement = float(torch.cat(same).float().mean())
    return {
        "engine": engine,
        "max_abs": float(diff.max()),
        "first_frame_max_abs": float(first.max()),
        "max_logit": float(training.where(finite, torch.zeros_like(training)).abs().max()),
        "draw_agreement": agreement,
        "samples": targets.shape[1],
    }


def plot_spectrograms(path: Path, rows: dict[str, np.ndarray], sample_rate: int, title: str, fmax: float = 4000.0):
    """Stacked linear-frequency spectrograms (dB, 0..fmax Hz) where harmonics are visible as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft, hop = 2048, 256
    window = torch.hann_window(n_fft, dtype=torch.float64)
    specs = {}
    for name, audio in rows.items():
        x = torch.from_numpy(np.asarray(audio, dtype=np.float64))
        s = torch.stft(x, n_fft, hop, window=window, return_complex=True).abs()
        specs[name] = 20 * np.log10(np.maximum(s.numpy(), 1e-5))
    bins = int(fmax / (sample_rate / n_fft))
    peak = max(float(s[:bins].max()) for s in specs.values())
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.2 * len(specs)), sharex=True, constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, (name, s) in zip(axes, specs.items(), strict=True):
        seconds = s.shape[1] * hop / sample_rate
        ax.imshow(
            s[:bins],
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=peak - 70,
            vmax=peak,
            extent=(0, seconds, 0, fmax),
        )
        ax.set_ylabel(f"{name}\nHz")
    axes[0].set_title(title)
    axes[-1].set_xlabel("time (s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---- overfit --------------------------------------------------------------------------------------


def write_manifest(folder: Path, utterances: list[tuple[str, Path]]) -> Path:
    """A CSV manifest listing each (id, audio path) twice: once to train on, once to validate on."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["id|path|split"]
    for split in ("train", "valid"):
        lines += [f"{uid}|{path.resolve()}|{split}" for uid, path in utterances]
    manifest = folder / "overfit.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def overfit(
    recipe: str,
    audio_files: list[Path],
    steps: int,
    run_dir: Path,
    overrides: list[str] = (),
    cache_dir: Path | None = None,
):
    """Train `recipe` on `audio_files` only (the same files validate). Returns the TrainResult."""
    from hydra import compose, initialize_config_module

    from .training import train

    manifest = write_manifest(run_dir / "data", [(p.stem, p) for p in audio_files])
    extra = [f"data.cache_dir={cache_dir}"] if cache_dir else []
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"recipe={recipe}",
                f"data.path={manifest}",
                f"run_dir={run_dir}",
                f"trainer.max_steps={steps}",
                "trainer.progress=false",
                *extra,
                *overrides,
            ],
        )
    return train(cfg)


def overfit_report(
    checkpoint: Path,
    audio_files: list[Path],
    out_dir: Path,
    seconds: float | None,
    seed: int = 0,
    reference_seconds: float = 1.0,
):
    """Free-running generation of the overfitted checkpoint with every CPU engine; metrics and PNGs.

    The reference engine (a Python loop per sample) generates only the first `reference_seconds`;
    every other engine's row says whether its audio equals the reference's over that prefix
    (`same_as_reference`: same noise, same weights, so it must). Figures show the fastest engine's.
    """
    from .inference import load

    loaded = load(checkpoint, engine="reference")
    model, mel = loaded.model, loaded.mel
    utterances = []
    for path in audio_files:
        audio, _ = read_audio(path, model.sample_rate)
        frames = len(audio) // model.hop_length
        audio = audio[: frames * model.hop_length]
        utterances.append(Utterance(path.stem, audio, mel(torch.from_numpy(audio)).numpy()[:, :frames]))
    results, waves = [], {u.id: {"ground truth": u.audio} for u in utterances}
    reference = {}
    for row in free_running(model, utterances, "reference", seed=seed, seconds=reference_seconds):
        reference[row["id"]] = row.pop("audio")
        results.append({**row, "seconds": len(reference[row["id"]]) / model.sample_rate})
    for engine in (e for e in cpu_engines(model) if e != "reference"):
        for row in free_running(model, utterances, engine, seed=seed, seconds=seconds):
            audio = row.pop("audio")
            prefix = reference[row["id"]]
            row["same_as_reference"] = bool(np.array_equal(audio[: len(prefix)], prefix))
            results.append({**row, "seconds": len(audio) / model.sample_rate})
            waves[row["id"]].setdefault(engine, audio)
    figures = []
    for uid, rows in waves.items():
        n = min(len(a) for a in rows.values())
        figures.append(
            str(
                plot_spectrograms(
                    out_dir / f"overfit_{uid}.png",
                    {k: v[:n] for k, v in rows.items()},
                    model.sample_rate,
                    f"{uid}: free-running after overfitting",
                )
            )
        )
    return {"rows": results, "figures": figures}


def silent_starts(
    vocoder, utterances: list[Utterance], frames: int = 40, seeds: tuple[int, ...] = (0, 1), speech_rms: float = 0.02
) -> dict[str, Any]:
    """Generate the first `frames` frames of each utterance (one batch per seed) and find the starts
    whose audio stays silent where the truth speaks: mean frame RMS over the truth's speech frames
    (RMS > speech_rms) under a tenth of the truth's. Returns {"checked", "silent": [{id, seed, ratio}]}."""
    hop = vocoder.hop_length
    usable = [u for u in utterances if u.mel.shape[1] >= frames]
    if not usable:
        raise ValueError(f"no utterance has {frames} frames")
    mel = torch.stack([torch.from_numpy(np.ascontiguousarray(u.mel[:, :frames])) for u in usable])
    silent = []
    for seed in seeds:
        audio = vocoder(mel, seed=seed).numpy()
        for utt, generated in zip(usable, audio, strict=True):
            truth = np.sqrt((utt.audio[: frames * hop].reshape(-1, hop) ** 2).mean(1))
            ours = np.sqrt((generated[: frames * hop].reshape(-1, hop) ** 2).mean(1))
            speech = truth > speech_rms
            if speech.any():
                ratio = float(ours[speech].mean() / truth[speech].mean())
                if ratio < 0.1:
                    silent.append({"id": utt.id, "seed": seed, "ratio": round(ratio, 4)})
    return {"checked": len(usable) * len(seeds), "frames": frames, "silent": silent}


def band_error(utterances: list[Utterance], generated: dict[str, np.ndarray], config) -> dict[str, Any]:
    """Per mel band, the generated audio's log-mel error against the truth (dB, generated minus
    truth) over the truth's speech frames: see `_band_statistics`. `generated` maps utterance id ->
    audio [samples]; utterances without an entry are skipped, and none at all is refused."""
    from .metrics import mel_db

    errors = []
    for utt in utterances:
        if utt.id not in generated:
            continue
        n = min(len(utt.audio), len(generated[utt.id]))
        truth, ours = mel_db(utt.audio[:n], config), mel_db(np.asarray(generated[utt.id][:n], np.float32), config)
        errors.append((ours - truth)[:, _speech_frames(truth)])
    if not errors:
        raise ValueError("no generated audio for any of the utterances")
    return _band_statistics(errors, config)


def envelope_error(
    utterances: list[Utterance], config, order: int, preemphasis: float, lag_window_hz: float
) -> dict[str, Any]:
    """How far the all-pole envelope an LPC model derives from the mel (`vocoders.lpc.envelope_mel`:
    white excitation at each frame's gain) is from the mel itself, in shape: each frame's mean level
    over the bands is removed from the error first, so only what the excitation must still colour is
    left. Over the truth's speech frames; statistics as `_band_statistics`."""
    from .lpc import envelope_mel
    from .metrics import features_db

    errors = []
    for utt in utterances:
        truth = features_db(utt.mel, config)
        mel = torch.tensor(np.asarray(utt.mel, dtype=np.float32)).unsqueeze(0)
        envelope = features_db(envelope_mel(mel, config, order, preemphasis, lag_window_hz)[0].numpy(), config)
        diff = (envelope - truth)[:, _speech_frames(truth)]
        errors.append(diff - diff.mean(axis=0, keepdims=True))
    result = _band_statistics(errors, config)
    result.update(order=order, preemphasis=preemphasis, lag_window_hz=lag_window_hz)
    return result


def _speech_frames(truth_db: np.ndarray) -> np.ndarray:
    """Frames [frames] bool of a truth's mel dB [n_mels, frames] within SPEECH_FRAME_RANGE_DB of its loudest."""
    from .metrics import SPEECH_FRAME_RANGE_DB

    energy = truth_db.mean(axis=0)
    return energy >= energy.max() - SPEECH_FRAME_RANGE_DB


def _band_statistics(errors: list[np.ndarray], config) -> dict[str, Any]:
    """Errors [n_mels, frames] (dB) pooled over utterances -> per band the mean (`bias_db`, what a
    fixed equaliser would remove) and the standard deviation across frames (`spread_db`, what only a
    better model removes); `rms_db` over every band and frame and `rms_without_bias_db` after each
    band's bias is subtracted; each band's centre (its filter's peak bin) in Hz."""
    from .features import mel_filterbank

    err = np.concatenate(errors, axis=1)
    bias = err.mean(axis=1)
    bins = mel_filterbank(config).numpy().argmax(axis=1)
    return {
        "utterances": len(errors),
        "frames": int(err.shape[1]),
        "band_centre_hz": [round(float(b) * config.sample_rate / config.n_fft, 1) for b in bins],
        "bias_db": [round(float(b), 2) for b in bias],
        "spread_db": [round(float(s), 2) for s in err.std(axis=1)],
        "rms_db": float(np.sqrt((err**2).mean())),
        "rms_without_bias_db": float(np.sqrt(((err - bias[:, None]) ** 2).mean())),
    }


def read_generated(folder: Path, utterances: list[Utterance], suffix: str, sample_rate: int) -> dict[str, np.ndarray]:
    """`{id}{suffix}` audio files of `folder` for the utterances that have one (at `sample_rate`)."""
    out = {}
    for utt in utterances:
        path = folder / f"{utt.id}{suffix}"
        if path.is_file():
            out[utt.id] = read_audio(path, sample_rate)[0]
    if not out:
        raise ValueError(f"{folder}: no file named <utterance id>{suffix} for the {len(utterances)} utterances")
    return out


# ---- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m vocoders.diagnose", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="check", required=True)
    o = sub.add_parser("overfit", help="train on one or two utterances, then generate them free-running")
    o.add_argument("audio", nargs="+", type=Path, help="audio files to memorise")
    o.add_argument("--recipe", default="wavernn_cpu")
    o.add_argument("--steps", type=int, default=1500)
    o.add_argument("--run-dir", type=Path, required=True)
    o.add_argument("--seconds", type=float, default=None, help="generate only the first seconds of each")
    o.add_argument("--override", nargs="*", default=[], help="Hydra overrides, e.g. model.hidden_size=128")
    r = sub.add_parser("report", help="the free-running part of `overfit` for a checkpoint already trained")
    r.add_argument("checkpoint", type=Path)
    r.add_argument("audio", nargs="+", type=Path)
    r.add_argument("-o", "--out", type=Path, required=True)
    r.add_argument("--seconds", type=float, default=None)
    c = sub.add_parser("conditioning", help="validation loss with the true, a zeroed and a shuffled mel")
    a = sub.add_parser("agreement", help="engine logits under teacher forcing vs the training forward pass")
    st = sub.add_parser("starts", help="utterance starts that stay silent through speech, over a few seeds")
    b = sub.add_parser("bands", help="per-band log-mel bias and spread of generated WAVs against the truth")
    e = sub.add_parser("envelope", help="shape error of an LPC model's all-pole envelope against the mel")
    for p in (c, a, st, b, e):
        p.add_argument("checkpoint", type=Path)
        p.add_argument("manifest", type=Path)
        p.add_argument("--split", default="valid")
        p.add_argument("--limit", type=int, default=30)
    c.add_argument("--segment-frames", type=int, default=8)
    a.add_argument("--frames", type=int, default=40)
    st.add_argument("--frames", type=int, default=40)
    b.add_argument("audio_dir", type=Path, help="folder of generated audio, e.g. an evaluation's REPORT/audio")
    b.add_argument("--suffix", default="_vocoder.wav", help="file name after the utterance id")
    e.add_argument("--order", type=int, default=None, help="default: the model's")
    e.add_argument("--preemphasis", type=float, default=None, help="default: the model's")
    e.add_argument("--lag-window-hz", type=float, default=None, help="default: the model's")
    st.add_argument("--seeds", type=int, default=2, help="noise seeds 0 .. N-1")
    add_settings_argument(st)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    try:
        for p in getattr(args, "audio", []):
            if not p.is_file():
                raise ValueError(f"{p}: no such audio file")
        if args.check == "overfit":
            result = overfit(args.recipe, args.audio, args.steps, args.run_dir, args.override)
            out = {"train": result.metrics, "checkpoint": str(result.checkpoint)}
            out.update(overfit_report(result.checkpoint, args.audio, args.run_dir, args.seconds))
        elif args.check == "report":
            out = overfit_report(args.checkpoint, args.audio, args.out, args.seconds)
        elif args.check == "starts":
            from .checkpoint import parse_settings
            from .inference import load

            vocoder = load(args.checkpoint, settings=parse_settings(args.settings))
            utterances = load_utterances(args.manifest, vocoder.model, args.split, args.limit)
            out = silent_starts(vocoder, utterances, args.frames, tuple(range(args.seeds)))
        elif args.check == "bands":
            from .inference import load

            model = load(args.checkpoint, engine="reference").model
            utterances = load_utterances(args.manifest, model, args.split, args.limit)
            generated = read_generated(args.audio_dir, utterances, args.suffix, model.mel_config.sample_rate)
            out = band_error(utterances, generated, model.mel_config)
        elif args.check == "envelope":
            from .inference import load

            model = load(args.checkpoint, engine="reference").model
            if not hasattr(model, "lpc_order"):
                raise ValueError(f"{args.checkpoint}: a {type(model).__name__} has no LPC envelope")
            utterances = load_utterances(args.manifest, model, args.split, args.limit)
            lpc = {
                "order": model.lpc_order if args.order is None else args.order,
                "preemphasis": model.preemphasis if args.preemphasis is None else args.preemphasis,
                "lag_window_hz": model.lag_window_hz if args.lag_window_hz is None else args.lag_window_hz,
            }
            out = envelope_error(utterances, model.mel_config, **lpc)
        else:
            from .inference import load

            model = load(args.checkpoint, engine="reference").model
            utterances = load_utterances(args.manifest, model, args.split, args.limit)
            if args.check == "conditioning":
                out = conditioning_gap(model, utterances, args.segment_frames)
            else:
                out = {"rows": [logit_agreement(model, utterances[0], e, args.frames) for e in cpu_engines(model)]}
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
