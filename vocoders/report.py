"""The evaluation report: report.json, report.md and PNG figures, from per-utterance metric rows.

    rows: [{"id": str, "seconds": float, "vocoder": {metric: value}, "griffin_lim": {...},
            "ground_truth": {...}}, ...]

Summaries are the mean over utterances with a 95% Student-t interval (NaN values left out).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write

SYSTEMS = ("vocoder", "griffin_lim", "ground_truth")
SYSTEM_TITLES = {"vocoder": "vocoder", "griffin_lim": "Griffin-Lim", "ground_truth": "ground truth"}

# metric -> (table label, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "log_mel_distance_db": ("log-mel distance", "dB", False),
    "mcd_db": ("MCD, order 24, c0 excluded", "dB", False),
    "f0_rmse_cents": ("F0 RMSE, frames voiced in both", "cents", False),
    "vuv_error": ("V/UV error", "%", False),
    "pesq_wb": ("PESQ wide-band", "MOS", True),
    "stoi": ("STOI", "", True),
    "dnsmos_ovrl": ("DNSMOS OVRL", "MOS", True),
    "dnsmos_sig": ("DNSMOS SIG", "MOS", True),
    "dnsmos_bak": ("DNSMOS BAK", "MOS", True),
    "dnsmos_p808": ("DNSMOS P.808", "MOS", True),
}


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """Mean, 95% t-interval and count of the finite values; None fields when there are none."""
    from scipy import stats

    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(finite)
    if n == 0:
        return {"mean": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = float(finite.mean())
    half = float(stats.t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def summary_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """system -> metric -> summary, for every metric present in the rows."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system in SYSTEMS:
        names = sorted({k for row in rows for k in row.get(system, {})}, key=_metric_order)
        out[system] = {name: summarize([row[system].get(name) for row in rows if system in row]) for name in names}
    return out


def _metric_order(name: str) -> tuple[int, str]:
    order = list(METRICS)
    return (order.index(name) if name in order else len(order), name)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/Inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _format(summary: dict[str, Any], unit: str) -> str:
    if summary is None or summary.get("mean") is None:
        return "–"
    scale = 100.0 if unit == "%" else 1.0
    mean = summary["mean"] * scale
    half = (summary["ci95_high"] - summary["mean"]) * scale if summary["n"] > 1 else float("nan")
    digits = 1 if unit in ("cents", "%") else (3 if unit == "" else 2)
    text = f"{mean:.{digits}f}"
    return text + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def markdown(info: dict[str, Any], summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """report.md: the header facts, then one row per metric with vocoder, Griffin-Lim and ground truth."""
    lines = [f"# Copy-synthesis report: {info.get('checkpoint_name', 'vocoder')}", ""]
    facts = [
        ("checkpoint", info.get("checkpoint")),
        ("model", f"{info.get('model')} (step {info.get('step')})"),
        ("data", f"{info.get('data')} (split {info.get('split')}, {info.get('utterances')} utterances)"),
        (
            "vocoder",
            f"engine {info.get('engine')} on {info.get('device')}, seed {info.get('seed')}, "
            f"temperature {info.get('temperature', 1.0)}"
            + "".join(f", {name} {value}" for name, value in (info.get("settings") or {}).items())
            + (
                f", then {info['mel_projection']} iterations of the mel projection"
                if info.get("mel_projection")
                else ""
            ),
        ),
        ("Griffin-Lim", f"{info.get('griffin_lim_iterations')} iterations from the same mel"),
        ("F0 tracker", info.get("f0_tracker")),
    ]
    lines += [f"- {name}: {value}" for name, value in facts if value is not None]
    lines += ["", "Mean ± 95% interval over utterances. ↓ lower is better, ↑ higher is better.", ""]
    lines += ["| metric | vocoder | Griffin-Lim | ground truth | better |", "|---|---|---|---|---|"]
    metrics = sorted({m for system in summary.values() for m in system}, key=_metric_order)
    for name in metrics:
        label, unit, higher = METRICS.get(name, (name, "", False))
        cells = [_format(summary[s].get(name), unit) for s in SYSTEMS]
        if cells[2] == "–" and name not in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"):
            cells[2] = "(reference)"
        unit_text = f" ({unit})" if unit and unit != "MOS" else ""
        arrow = "↑" if higher else "↓"
        lines.append(f"| {label}{unit_text} {arrow} | {' | '.join(cells)} | {_winner(summary, name)} |")
    for note in info.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def _winner(summary: dict[str, dict[str, dict[str, Any]]], name: str) -> str:
    higher = METRICS.get(name, (name, "", False))[2]
    a, b = summary["vocoder"].get(name, {}).get("mean"), summary["griffin_lim"].get(name, {}).get("mean")
    if a is None or b is None:
        return ""
    if a == b:
        return "tie"
    return "vocoder" if (a > b) == higher else "Griffin-Lim"


def write_report(out_dir: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write report.json and report.md into out_dir; returns the JSON document."""
    summary = summary_table(rows)
    document = _clean({**info, "summary": summary, "per_utterance": rows})
    atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(markdown(info, summary), encoding="utf-8"))
    return document


# ---- figures -----------------------------------------------------------------------------------


def safe_name(utterance_id: str) -> str:
    return re.sub(r"[^\w.-]+", "_", utterance_id)


def plot_mels(path: Path, title: str, mels: dict[str, np.ndarray], sample_rate: int, hop: int) -> Path:
    """Stacked log-mel spectrograms (dB, one shared colour scale) of ground truth, vocoder, Griffin-Lim."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = max(float(m.max()) for m in mels.values())
    low = peak - 80.0
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.4 * len(mels)), sharex=True, constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, (name, mel) in zip(axes, mels.items(), strict=True):
        seconds = mel.shape[1] * hop / sample_rate
        image = ax.imshow(
            mel, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=peak, extent=(0, seconds, 0, mel.shape[0])
        )
        ax.set_ylabel(f"{name}\nmel band")
    axes[0].set_title(title)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=axes, label="dB", shrink=0.9)
    return _save(fig, path)


def plot_summary(path: Path, summary: dict[str, dict[str, dict[str, Any]]], title: str) -> Path:
    """One bar chart per metric: vocoder, Griffin-Lim, ground truth with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in sorted({m for s in summary.values() for m in s}, key=_metric_order)]
    metrics = [m for m in metrics if any(summary[s].get(m, {}).get("mean") is not None for s in SYSTEMS)]
    cols = min(5, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), constrained_layout=True, squeeze=False)
    colours = {"vocoder": "tab:blue", "griffin_lim": "tab:orange", "ground_truth": "tab:green"}
    for ax, name in zip(axes.flat, metrics, strict=False):
        label, unit, higher = METRICS.get(name, (name, "", False))
        scale = 100.0 if unit == "%" else 1.0
        for i, system in enumerate(SYSTEMS):
            s = summary[system].get(name)
            if not s or s.get("mean") is None:
                continue
            mean = s["mean"] * scale
            err = (s["ci95_high"] - s["mean"]) * scale if s["n"] > 1 else 0.0
            ax.bar(i, mean, color=colours[system], yerr=err if math.isfinite(err) else 0.0, capsize=3)
        ax.set_xticks(range(len(SYSTEMS)), ["voc", "GL", "GT"])
        ax.set_title(f"{label} {'↑' if higher else '↓'}", fontsize=9)
        if unit:
            ax.set_ylabel(unit)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path
