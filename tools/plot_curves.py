"""Validation cross-entropy against CPU-minutes for several training runs, as a PNG and a Markdown table.

    python tools/plot_curves.py -o curves.png "8+2 lr 1e-3=/runs/a:1" "8+2 lr 2e-3=/runs/b:1"

Each run is LABEL=RUN_DIR:THREADS. CPU-minutes are the run's training wall time (`train_seconds` in
metrics.jsonl, times the `threads` recorded beside it; for records older than those fields, step /
steps_per_second times THREADS). Only runs whose losses share a unit (the same sample classes) compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cpu_minutes_by_step(records: list[dict], threads: int) -> dict[int, float]:
    """CPU-minutes at each logged training step. A record with `train_seconds` counts its session's
    wall time times its `threads`; older records estimate it as step / steps_per_second. A resumed
    session (steps going back) replaces the records of the steps it repeats."""
    by_step: dict[int, dict] = {}
    for r in records:
        if r["kind"] == "train":
            by_step[r["step"]] = r
    out, cpu, previous = {}, 0.0, None
    for step in sorted(by_step):
        r = by_step[step]
        used = int(r.get("threads", threads))
        if "train_seconds" not in r:
            cpu = step / r["steps_per_second"] * used
        elif previous is None or "train_seconds" not in previous or r["train_seconds"] < previous["train_seconds"]:
            cpu += (step - (previous["step"] if previous else 0)) / r["steps_per_second"] * used  # a new session
        else:
            cpu += (r["train_seconds"] - previous["train_seconds"]) * used
        out[step] = cpu / 60.0
        previous = r
    return out


def read_curve(run_dir: Path, threads: int, key: str = "loss") -> list[tuple[int, float, float]]:
    """[(step, cpu_minutes, valid `key`)] of a run directory, one point per validated step (the last)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    minutes = cpu_minutes_by_step(records, threads)
    valid = {r["step"]: r[key] for r in records if r["kind"] == "valid" and key in r}
    steps = sorted(minutes)
    out = []
    for step, loss in sorted(valid.items()):
        nearest = min(steps, key=lambda s: abs(s - step))
        out.append((step, minutes[nearest], loss))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR:THREADS")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--title", default="validation cross-entropy (nats per sample)")
    parser.add_argument("--x", choices=("cpu", "step"), default="cpu", help="CPU-minutes (default) or steps")
    parser.add_argument("--key", default="loss", help="the validation record to plot (e.g. excitation_ce)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    print("| run | step | CPU-minutes | valid CE (nats) |\n|---|---|---|---|")
    for spec in args.runs:
        label, rest = spec.split("=", 1)
        path, threads = rest.rsplit(":", 1)
        curve = read_curve(Path(path), int(threads), args.key)
        ax.plot([c[1] if args.x == "cpu" else c[0] for c in curve], [c[2] for c in curve], marker="o", label=label)
        for step, minutes, loss in curve:
            print(f"| {label} | {step} | {minutes:.1f} | {loss:.3f} |")
    ax.set_xlabel("CPU-minutes of training (wall time x threads)" if args.x == "cpu" else "training steps")
    ax.set_ylabel("valid CE (nats)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
