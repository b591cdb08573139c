"""Validation cross-entropy against CPU-minutes for several training runs, as a PNG and a Markdown table.

    python tools/plot_curves.py -o curves.png "8+2 lr 1e-3=/runs/a:1" "8+2 lr 2e-3=/runs/b:1"

Each run is LABEL=RUN_DIR:THREADS. CPU-minutes are the run's training wall time (`train_seconds` in
metrics.jsonl; for runs older than that field, step / steps_per_second of the nearest training
record) times its threads. Only runs whose losses share a unit (the same sample classes) compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curve(run_dir: Path, threads: int) -> list[tuple[int, float, float]]:
    """[(step, cpu_minutes, valid loss)] of a run directory."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r["kind"] == "train"]
    out = []
    for r in (r for r in records if r["kind"] == "valid"):
        seconds = r.get("train_seconds")
        if seconds is None:
            nearest = min(train, key=lambda t: abs(t["step"] - r["step"]))
            seconds = r["step"] / nearest["steps_per_second"]
        out.append((r["step"], seconds * threads / 60.0, r["loss"]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR:THREADS")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--title", default="validation cross-entropy (nats per sample)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    print("| run | step | CPU-minutes | valid CE (nats) |\n|---|---|---|---|")
    for spec in args.runs:
        label, rest = spec.split("=", 1)
        path, threads = rest.rsplit(":", 1)
        curve = read_curve(Path(path), int(threads))
        ax.plot([c[1] for c in curve], [c[2] for c in curve], marker="o", label=label)
        for step, minutes, loss in curve:
            print(f"| {label} | {step} | {minutes:.1f} | {loss:.3f} |")
    ax.set_xlabel("CPU-minutes of training (wall time x threads)")
    ax.set_ylabel("valid CE (nats)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
