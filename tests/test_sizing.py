"""Sizing for a device: the grid's overrides, the real-time verdicts, the table's order, and the CLI."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from vocoders.sizing import best_fit, format_table, point_overrides, run_sizing

TINY_GRID = [
    "sizing.hidden_sizes=[64,32]",
    "sizing.sparsities=[0,0.9]",
    "sizing.threads=[1]",
    "sizing.seconds=0.02",
    "model.cond_channels=16",
    "model.cond_blocks=1",
]


def sizing_cfg(*overrides):
    return compose(config_name="sizing", overrides=[*TINY_GRID, *overrides])


def test_point_overrides_build_dense_and_pruned_models():
    assert point_overrides(512, 0.0, "block16x1", ["gru_hh"]) == ["model.hidden_size=512"]
    assert point_overrides(896, 0.95, "block4x4", ["gru_hh", "O1"]) == [
        "model.hidden_size=896",
        "sparsity=block4x4",
        "sparsity.final_sparsity=0.95",
        "sparsity.targets=[gru_hh,O1]",
    ]


def row(hidden, sparsity, multiple, threads=1):
    return {
        "hidden_size": hidden, "sparsity": sparsity, "threads": threads, "streams": threads, "engine": "cpu",
        "samples_per_second_per_stream": 22050 * multiple, "realtime_multiple": multiple, "fits": multiple >= 1,
        "weight_bytes_per_step": 1e6, "fraction_of_floor": 0.5,
    }  # fmt: skip


def test_largest_fitting_point_and_table_order():
    rows = [row(512, 0.0, 1.4), row(1024, 0.95, 1.1), row(1024, 0.9, 0.8), row(1024, 0.0, 0.3), row(2048, 0.95, 0.6)]
    rows.append({"hidden_size": 4096, "sparsity": 0.95, "threads": 1, "streams": 1, "skipped": "too slow"})
    assert best_fit(rows)["hidden_size"] == 1024 and best_fit(rows)["sparsity"] == 0.95
    result = {"sample_rate": 22050, "margin": 1.0, "points": rows, "largest_realtime": {"1": best_fit(rows)}}
    lines = format_table(result, 1).splitlines()
    body = [line.split() for line in lines[2:-1]]
    assert [(b[0], b[1]) for b in body] == [
        ("4096", "0.95"), ("2048", "0.95"), ("1024", "0.00"), ("1024", "0.90"), ("1024", "0.95"), ("512", "0.00"),
    ]  # fmt: skip
    assert lines[2].endswith("not measured: too slow") and body[4][-1] == "yes" and body[3][-1] == "no"
    assert lines[-1].startswith("largest in real time: hidden 1024 at sparsity 0.95 (1.10x")
    assert best_fit([row(256, 0.0, 0.5)]) is None


def test_a_tiny_grid_is_measured_with_the_real_engines():
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        result = run_sizing(sizing_cfg("sizing.margin=1e-6"))
        strict = run_sizing(sizing_cfg("sizing.margin=1e6", "sizing.skip_below=0.5", "sizing.sparsities=[0.9]"))
    points = result["points"]
    assert [(p["hidden_size"], p["sparsity"]) for p in points] == [(64, 0.0), (64, 0.9), (32, 0.0), (32, 0.9)]
    for p in points:
        assert p["fits"] and p["samples_per_second_per_stream"] > 0 and p["streams"] == 1
        assert p["realtime_multiple"] == pytest.approx(p["samples_per_second_per_stream"] / 22050e-6, rel=1e-3)
    engines = {p["sparsity"]: p["engine"] for p in points}
    assert engines[0.0] in ("cpu", "reference") and engines[0.9] in ("sparse-cpu", "cpu", "reference")
    assert result["largest_realtime"]["1"]["hidden_size"] == 64 and result["largest_realtime"]["1"]["sparsity"] == 0
    assert result["sample_rate"] == 22050
    assert strict["largest_realtime"] == {"1": None}
    assert [("skipped" in p) for p in strict["points"]] == [True, False]  # 64 skipped once 32 was far too slow
    assert "no point of the grid keeps real time" in format_table(strict, 1)


def test_cli_prints_the_tables_then_one_json_line(tmp_path):
    out = tmp_path / "sizing.json"
    command = [sys.executable, "-m", "vocoders.sizing", *TINY_GRID, "sizing.sparsities=[0]", f"sizing.json={out}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("1 thread(s), 1 stream(s): real time = 22050 samples/s per stream")
    assert json.loads(lines[-1]) == json.loads(out.read_text())
    bad = subprocess.run([*command[:3], "sizing.margin=0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "vocoders.sizing: error: sizing.margin must be > 0, got 0.0"
    ]
