"""Ship a trained checkpoint as package data: vocoders/assets/pretrained/NAME.safetensors + NAME.md.

    python tools/ship_pretrained.py RUN/checkpoints/step-N.safetensors --name cs-male-22k \
        --report REPORT_DIR --cpu-hours 2.1 --command "the training command"

The shipped file holds the inference weights only (the EMA average when the checkpoint has one) and
the checkpoint's metadata; the model card beside it is written from the facts given here and from
a `python -m vocoders.evaluate` report (report.json) of the same checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vocoders.checkpoint import (  # noqa: E402
    add_settings_argument,
    model_from_checkpoint,
    parse_settings,
    read_checkpoint,
    save_checkpoint,
    total_steps,
)
from vocoders.pretrained import pretrained_dir  # noqa: E402
from vocoders.report import markdown  # noqa: E402

MAX_BYTES = 20 * 1024 * 1024
LICENCE = (
    "Trained on cs-male-22k, which came to the project without a licence file; its file names follow "
    "the Czech voice-over of the free game Fish Fillets NG, whose data files are distributed under the "
    "GNU GPL v2 (inferred from the names, not confirmed). The weights are a derivative of that data: "
    "check its terms before redistributing them outside this project. The code is Apache-2.0."
)


def steps_before(source: dict) -> int:
    """Training steps behind an init_from source: its total where recorded, else its step plus, while
    the source files are at hand, the steps behind them (runs recorded before `total_steps` existed)."""
    if "total_steps" in source or not source:
        return int(source.get("total_steps", 0))
    path = Path(source.get("path", ""))
    earlier = read_checkpoint(path).meta.get("init_from") if path.is_file() else None
    return int(source.get("step", 0)) + (steps_before(earlier) if earlier else 0)


def pitch_refit_lines(record: dict | None) -> list[str]:
    """The card's line on a period head refit by `python -m vocoders.refit_pitch` (none without one)."""
    if not record:
        return []
    before, after = record["valid_before"], record["valid_after"]
    return [
        f"- pitch head: refit with `python -m vocoders.refit_pitch --input {record['period_input']} "
        f"--epochs {record['epochs']}` on {record['train_frames']:,} training frames against the evaluation's "
        f"pitch tracker; on {record['valid_frames']:,} valid frames, voicing agreement "
        f"{before['vuv_agreement']:.1%} -> {after['vuv_agreement']:.1%}, within 50 cents "
        f"{before['within_50_cents']:.1%} -> {after['within_50_cents']:.1%}, octave errors "
        f"{before['octave_errors']:.1%} -> {after['octave_errors']:.1%}"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True, help="short name users load it by")
    parser.add_argument("--report", type=Path, required=True, help="a vocoders.evaluate report folder")
    parser.add_argument("--cpu-hours", type=float, required=True, help="training CPU hours (wall x cores)")
    parser.add_argument("--command", required=True, help="the training command, for the card")
    parser.add_argument("--notes", default="", help="a paragraph for the card (what it still lacks)")
    parser.add_argument(
        "--mel-projection",
        type=int,
        default=0,
        help="iterations of the mel projection the shipped model applies by default (as the report was made with)",
    )
    add_settings_argument(parser)  # the settings the shipped model carries, as the report was made with
    args = parser.parse_args(argv)

    checkpoint = read_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, use_ema=True, settings=parse_settings(args.settings))
    folder = pretrained_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{args.name}.safetensors"
    meta = {k: v for k, v in checkpoint.meta.items() if k in ("recipe", "data", "sparsity", "pitch_refit")}
    # A run started with trainer.init_from continues another's training: count the steps of both. The
    # shipped file's step is that total, recorded as such, and it carries no init_from (a run started
    # from it would count the chain twice).
    steps = total_steps(checkpoint.meta, steps_before)  # older sources: their files
    before = steps - checkpoint.step
    if args.mel_projection < 0:
        parser.error("--mel-projection must be at least 0")
    if args.mel_projection:
        meta["synthesis"] = {"mel_projection": args.mel_projection}
    save_checkpoint(target, model, steps, total_steps=steps, **meta)
    target.chmod(0o644)  # package data: readable by whoever installs it (the atomic write made it 0600)
    if target.stat().st_size > MAX_BYTES:
        target.unlink()
        print(f"{target}: {target.stat().st_size} bytes is over the 20 MB limit; not shipped", file=sys.stderr)
        return 2
    report = json.loads((args.report / "report.json").read_text(encoding="utf-8"))
    parameters = sum(p.numel() for p in model.parameters())
    card = [
        f"# {args.name}: {model.name}, step {steps}",
        "",
        f'Load it with `vocoders.load("{args.name}")` or `vocoders-synthesize {args.name} mels/ -o out/`.',
        "",
        f"- model: `{model.name}` {json.dumps(model.kwargs)}, {parameters:,} parameters",
        f"- mel contract: {json.dumps(model.mel_config.to_dict())}",
        f"- data: {str(checkpoint.meta.get('data', 'unknown')).removeprefix('data: ')}",
        f"- training: {steps} steps"
        + (
            f" ({before} before this run, which started from them with trainer.init_from, and {checkpoint.step} in it)"
            if before
            else ""
        )
        + f", {args.cpu_hours:.2f} CPU hours (wall time x cores), weights are the EMA",
        f"- command: `{args.command}`",
        *pitch_refit_lines(checkpoint.meta.get("pitch_refit")),
        *(
            [
                f"- synthesis: {args.mel_projection} iterations of the mel projection (`vocoders.mel_projection`) on "
                "every output by default; `vocoders.load(NAME, mel_projection=0)` gives the network's own audio"
            ]
            if args.mel_projection
            else []
        ),
        f"- licence: {LICENCE}",
        "",
        "## Copy synthesis on held-out utterances",
        "",
        markdown(report, report["summary"]).split("\n", 2)[2].strip(),
        "",
    ]
    if args.notes:
        card += ["## What it still lacks", "", args.notes, ""]
    (folder / f"{args.name}.md").write_text("\n".join(card), encoding="utf-8")
    print(f"shipped {target} ({target.stat().st_size:,} bytes) and {folder / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
