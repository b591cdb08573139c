"""`python -m vocoders.sizing [overrides]`: which WaveRNN sizes this machine samples in real time.

At a fixed cost per sample, large sparse networks beat small dense ones (Kalchbrenner et al. 2018),
and which sizes fit a deployment depends on the device, so this measures them there. For every
hidden size x sparsity of the grid (conf/sizing.yaml) it times, through `vocoders.bench`, the engine
`auto` picks (the block-sparse engine for pruned models, the compiled dense loop otherwise) on random
weights pruned to that sparsity. It prints one table per thread count, largest model first, marking
the points that keep real time at the sample rate with the margin, and as its last line one JSON
object holding every measurement.

    python -m vocoders.sizing                                   # the default grid on 1 and 2 threads
    python -m vocoders.sizing sizing.margin=1.5 sizing.threads=[1] sizing.sample_rate=24000
    python -m vocoders.sizing sizing.hidden_sizes=[512,1024] sizing.sparsities=[0,0.95] bench.dtype=bfloat16

Threads: the engines spread streams over threads, not one stream, so with T threads a point runs T
streams at once and fits when every stream keeps real time.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)

PROBE_FRAMES = 2  # frames generated to estimate a point's speed before the timed run
TIMED_RUN_SECONDS = 2.0  # wall time the timed run aims at, within [PROBE, sizing.seconds] of audio


def point_overrides(hidden: int, sparsity: float, pattern: str, targets: list[str]) -> list[str]:
    """Config overrides that build the grid point: the dense model, or it pruned to `sparsity`."""
    overrides = [f"model.hidden_size={hidden}"]
    if sparsity > 0:
        overrides += [
            f"sparsity={pattern}",
            f"sparsity.final_sparsity={sparsity}",
            f"sparsity.targets=[{','.join(targets)}]",
        ]
    return overrides


def _bench(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose

    from .bench import run_benchmark

    return run_benchmark(compose(config_name="benchmark", overrides=overrides))


def measure_point(
    base: list[str], hidden: int, sparsity: float, threads: int, sizing: DictConfig, audio: DictConfig
) -> dict[str, Any]:
    """Time one grid point: a short probe, then a run sized to take about TIMED_RUN_SECONDS. Returns bench's record."""
    overrides = [*base, *point_overrides(hidden, sparsity, str(sizing.pattern), list(sizing.targets))]
    overrides += [f"bench.threads={threads}", f"bench.batch={threads}", "bench.reference_seconds=0"]
    shortest = PROBE_FRAMES * int(audio.hop_length) / int(audio.sample_rate)
    probe = _bench([*overrides, f"bench.seconds={shortest}"])
    wanted = TIMED_RUN_SECONDS * probe["samples_per_second_per_stream"] / int(audio.sample_rate)
    return _bench([*overrides, f"bench.seconds={min(float(sizing.seconds), max(wanted, shortest))}"])


def summarize_point(
    record: dict[str, Any], hidden: int, sparsity: float, threads: int, required: float
) -> dict[str, Any]:
    """The grid point's row: per-stream speed against `required` samples/s, and what was measured."""
    per_stream = float(record["samples_per_second_per_stream"])
    floor = record.get("floor_samples_per_second")
    kept = record.get("sparsity")
    return {
        "hidden_size": hidden,
        "sparsity": sparsity,
        "threads": threads,
        "streams": int(record["batch"]),
        "engine": record["engine"],
        "dtype": record["dtype"],
        "samples_per_second_per_stream": round(per_stream, 1),
        "realtime_multiple": round(per_stream / required, 3),
        "fits": per_stream >= required,
        "floor_samples_per_second_per_stream": round(floor / record["batch"], 1) if floor else None,
        "fraction_of_floor": record.get("fraction_of_floor"),
        "weight_bytes_per_step": record.get("floor", {}).get("weight_bytes_per_step"),
        "measured_sparsity": kept,
        "audio_seconds_per_stream": record["audio_seconds_per_stream"],
        "seconds": record["seconds"],
    }


def largest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most hidden units first; at equal size, the densest first."""
    return sorted(rows, key=lambda r: (-r["hidden_size"], r["sparsity"]))


def best_fit(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The largest point that keeps real time (None if none does)."""
    fitting = [r for r in largest_first(rows) if r.get("fits")]
    return fitting[0] if fitting else None


def run_sizing(cfg: DictConfig, base: list[str] | None = None) -> dict[str, Any]:
    """Measure the grid of `cfg.sizing` (composing `benchmark` with `base` overrides per point)."""
    sizing = cfg.sizing
    margin = float(sizing.margin)
    if margin <= 0:
        raise ValueError(f"sizing.margin must be > 0, got {margin}")
    sparsities = [float(z) for z in sizing.sparsities]
    if any(not 0 <= z < 1 for z in sparsities):
        raise ValueError(f"sizing.sparsities must lie in [0, 1), got {sparsities}")
    rate = int(sizing.sample_rate or cfg.audio.sample_rate)
    required = margin * rate
    base = list(base or [])
    rows: list[dict[str, Any]] = []
    machine = None
    for threads in [int(t) for t in sizing.threads]:
        for sparsity in sparsities:
            too_slow: dict[str, Any] | None = None
            for hidden in sorted(int(h) for h in sizing.hidden_sizes):
                point = {"hidden_size": hidden, "sparsity": sparsity, "threads": threads, "streams": threads}
                if too_slow is not None:
                    rows.append({**point, "skipped": f"hidden {too_slow['hidden_size']} made "
                                 f"{too_slow['realtime_multiple']:.2f}x real time"})  # fmt: skip
                    continue
                try:
                    record = measure_point(base, hidden, sparsity, threads, sizing, cfg.audio)
                except (RuntimeError, ValueError) as exc:
                    rows.append({**point, "error": str(exc).splitlines()[0]})
                    continue
                machine = machine or record.get("machine")
                row = summarize_point(record, hidden, sparsity, threads, required)
                log.info("%s", json.dumps(row))
                rows.append(row)
                if float(sizing.skip_below) > 0 and row["realtime_multiple"] < float(sizing.skip_below):
                    too_slow = row
    by_threads = {str(t): best_fit([r for r in rows if r["threads"] == int(t)]) for t in sizing.threads}
    return {
        "sample_rate": rate,
        "margin": margin,
        "required_samples_per_second_per_stream": required,
        "pattern": str(sizing.pattern),
        "targets": list(sizing.targets),
        "largest_realtime": by_threads,
        "points": largest_first(rows),
        "machine": machine,
    }


def format_table(result: dict[str, Any], threads: int) -> str:
    """One thread count's rows as a text table, largest model first."""
    rows = largest_first([r for r in result["points"] if r["threads"] == threads])
    rate, margin = result["sample_rate"], result["margin"]
    lines = [
        f"{threads} thread(s), {threads} stream(s): real time = {rate} samples/s per stream x margin {margin:g}",
        f"{'hidden':>6} {'sparsity':>8} {'engine':>10} {'MB/step':>8} {'samples/s':>10} {'x real time':>11} "
        f"{'of floor':>8}  fits",
    ]
    for r in rows:
        head = f"{r['hidden_size']:>6} {r['sparsity']:>8.2f}"
        if "skipped" in r or "error" in r:
            lines.append(f"{head}  not measured: {r.get('skipped') or r.get('error')}")
            continue
        size = r["weight_bytes_per_step"] / 1e6 if r["weight_bytes_per_step"] else float("nan")
        floor = f"{r['fraction_of_floor']:.0%}" if r["fraction_of_floor"] else "?"
        lines.append(
            f"{head} {r['engine']:>10} {size:>8.2f} {r['samples_per_second_per_stream']:>10.0f} "
            f"{r['realtime_multiple']:>11.2f} {floor:>8}  {'yes' if r['fits'] else 'no'}"
        )
    best = result["largest_realtime"].get(str(threads))
    if best:
        lines.append(
            f"largest in real time: hidden {best['hidden_size']} at sparsity {best['sparsity']:g} "
            f"({best['realtime_multiple']:.2f}x real time, engine {best['engine']})"
        )
    else:
        lines.append("no point of the grid keeps real time")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://vocoders.conf", config_name="sizing")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("vocoders.sizing").setLevel(logging.INFO)
    base = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("sizing.")]
    try:
        result = run_sizing(cfg, base)
    except (ValueError, RuntimeError) as exc:
        print(f"vocoders.sizing: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for threads in cfg.sizing.threads:
        print(format_table(result, int(threads)) + "\n")
    text = json.dumps(result)
    if cfg.sizing.json:
        Path(cfg.sizing.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
