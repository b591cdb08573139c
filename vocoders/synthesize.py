"""`vocoders-synthesize CHECKPOINT INPUT... -o OUTDIR`: mel or audio files in, 16-bit WAV files out.

Inputs: mel files (`.npy`, `.pt`, shape [n_mels, frames], the checkpoint's mel contract) or audio
files (wav/flac/ogg: copy synthesis through the checkpoint's own mel definition). Folders are
searched recursively and their structure is kept under OUTDIR. Each output is named after its
input, has exactly frames x hop samples at the checkpoint's rate, and is written atomically.

A bad input gets one line on stderr naming the file and the problem; the other inputs still run,
and the exit status is 1 when any failed (2 when nothing could start).

`--stream INPUT -o OUT.wav`: mel frames from a pipe or a growing .npy, audio written as it comes
(vocoders.synthesize_stream).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .audio import AUDIO_EXTENSIONS, AudioError, read_audio, write_wav
from .checkpoint import add_settings_argument, parse_settings

MEL_EXTENSIONS = (".npy", ".pt")
INPUT_EXTENSIONS = MEL_EXTENSIONS + AUDIO_EXTENSIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vocoders-synthesize", description="Turn mel spectrograms (or audio, for copy synthesis) into WAV files."
    )
    parser.add_argument(
        "checkpoint", type=Path, help="a vocoders .safetensors checkpoint, or a shipped model by name (cs-male-22k)"
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="mel files (.npy/.pt), audio files, or folders of them")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder for the WAV files")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--engine", default="auto", help="sampling engine: auto (fastest available), reference, ...")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (the same seed gives the same audio)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = argmax")
    parser.add_argument(
        "--fold",
        nargs=2,
        type=int,
        metavar=("SEGMENT", "OVERLAP"),
        help="fold batching: generate each input as a batch of SEGMENT-frame segments overlapping by OVERLAP "
        "frames, cross-faded on the decoded audio (e.g. --fold 40 4; faster, slightly different audio)",
    )
    parser.add_argument("--speaker", type=int, default=None, help="speaker id, for multi-speaker checkpoints only")
    parser.add_argument(
        "--mel-projection",
        type=int,
        default=None,
        help="iterations of the mel projection on each output (default: the checkpoint's; 0 = none; "
        "with --stream, each iteration holds back 3 more frames at n_fft 1024, hop 256)",
    )
    add_settings_argument(parser)
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights even if the checkpoint has EMA ones")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="streaming: one INPUT, '-' (stdin) or a .npy still being written, of float32 frames [frames, n_mels]; "
        "-o names the WAV file, written as the audio comes (see vocoders.synthesize_stream)",
    )
    parser.add_argument(
        "--stream-timeout", type=float, default=10.0, help="--stream from a file: end after this many idle seconds"
    )
    return parser.parse_args(argv)


def expand_inputs(inputs: list[Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input file, output path relative to OUTDIR) pairs, and errors for inputs that do not exist."""
    jobs, errors = [], []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_EXTENSIONS)
            if not found:
                errors.append(f"{item}: folder holds no mel or audio files")
            jobs += [(p, p.relative_to(item).with_suffix(".wav")) for p in found]
        elif item.is_file():
            jobs.append((item, Path(item.stem + ".wav")))
        else:
            errors.append(f"{item}: no such file or folder")
    return jobs, errors


def read_mel_file(path: Path) -> np.ndarray | torch.Tensor:
    """Load a `.npy` (no pickles) or `.pt` (weights_only) mel."""
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read .npy ({_one_line(exc)})") from None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read .pt ({_one_line(exc)})") from None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: .pt file must hold one tensor, found {type(value).__name__}")
    return value


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def vocode_file(vocoder, path: Path, seed: int, temperature: float, speaker: int | None = None) -> torch.Tensor:
    """Audio [samples] for one input file."""
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        audio, _ = read_audio(path, vocoder.sample_rate)
        if len(audio) < vocoder.hop_length or len(audio) <= vocoder.mel_config.padding:
            raise AudioError(f"{path}: too short for one mel frame ({len(audio)} samples)")
        mel = vocoder.mel(torch.from_numpy(audio).to(vocoder.device))
    else:
        mel = read_mel_file(path)
        if getattr(mel, "ndim", 0) != 2:
            raise ValueError(f"{path}: mel must be [n_mels, frames], got shape {tuple(mel.shape)}")
    return vocoder(mel, seed=seed, temperature=temperature, source=str(path), speaker=speaker)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from . import load
    from .checkpoint import CheckpointError

    try:
        settings = parse_settings(args.settings)
        vocoder = load(
            args.checkpoint,
            device=args.device,
            engine=args.engine,
            use_ema=not args.no_ema,
            fold=args.fold,
            settings=settings,
            mel_projection=args.mel_projection,
        )
    except (CheckpointError, ValueError, RuntimeError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    if args.stream:
        return _stream(args, vocoder)
    jobs, errors = expand_inputs(args.inputs)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    written = 0
    for path, relative in tqdm(jobs, desc="vocoding", unit="file", disable=args.no_progress or not jobs):
        try:
            audio = vocode_file(vocoder, path, args.seed, args.temperature, args.speaker)
            write_wav(args.output / relative, audio, vocoder.sample_rate)
            written += 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # one bad file must not stop the batch
            errors.append(str(path))
            message = _one_line(exc)
            if str(path) not in message:
                message = f"{path}: {message}"
            print(f"error: {message}", file=sys.stderr)
    failed = len(errors)
    print(f"wrote {written} WAV file(s) to {args.output}" + (f"; {failed} input(s) failed" if failed else ""))
    return 1 if failed else 0


def _stream(args: argparse.Namespace, vocoder) -> int:
    from .synthesize_stream import stream_file

    if len(args.inputs) != 1 or args.fold:
        print("error: --stream takes exactly one INPUT ('-' or a .npy file) and no --fold", file=sys.stderr)
        return 2
    output = args.output if args.output.suffix.lower() == ".wav" else args.output / "stream.wav"
    if vocoder.mel_projection:
        network = vocoder.model.lookahead_frames
        print(
            f"note: {vocoder.mel_projection} iterations of the mel projection: audio runs "
            f"{vocoder.lookahead_frames} frames behind the mel ({network} with --mel-projection 0)",
            file=sys.stderr,
        )
    try:
        return stream_file(
            vocoder, str(args.inputs[0]), output, args.seed, args.temperature, args.speaker, args.stream_timeout
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
