"""tools/compare_vocoders.py: the HiFi-GAN generators have the published shape and size, and the tool
runs end to end. No timing is asserted: speed lives in the tool's JSON, not in tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "compare_vocoders.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("compare_vocoders", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Parameters without weight norm, counted by this test: V1 13,926,017 and V3 1,462,273 (the HiFi-GAN
# paper: 13.92M and 1.46M).
@pytest.mark.parametrize(("version", "published", "counted"), [("v1", 13.92e6, 13_926_017), ("v3", 1.46e6, 1_462_273)])
def test_hifigan_generator_shape_and_size(version, published, counted):
    tool = load_tool()
    torch.manual_seed(0)
    generator = getattr(tool, f"hifigan_{version}")().eval()
    assert generator.hop_length == 256
    n = sum(p.numel() for p in generator.parameters())
    assert n == counted
    assert abs(n - published) / published < 0.01
    with torch.inference_mode():
        for frames in (1, 5, 12):
            audio = generator(torch.randn(1, 80, frames))
            assert audio.shape == (1, 1, frames * 256)
            assert audio.abs().max() <= 1.0


def test_tool_runs_end_to_end(tmp_path):
    out = tmp_path / "compare.json"
    command = [
        sys.executable, str(TOOL), "--tiny", "--seconds", "0.03", "--reference-seconds", "0.012",
        "--repeats", "1", "--threads", "1", "2", "--skip-pip-check", "--notes", "test run", "-o", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert json.loads(done.stdout) == record
    assert {"machine", "notes", "settings", "mel", "systems", "results", "not_measured"} <= set(record)
    assert record["notes"] == "test run"
    assert {"cpu", "torch", "cores"} <= set(record["machine"])
    assert record["mel"]["frames"] == 3 and record["mel"]["samples"] == 3 * 256
    assert "fatchord_wavernn" in record["not_measured"]
    assert set(record["results"]) == {"1", "2"}
    timed = {"sparse_wavernn_896", "wavernn_896", "wavenet", "reference_wavernn_896", "hifigan_v1", "hifigan_v3"}
    for threads, result in record["results"].items():
        assert result["threads"] == int(threads) == result["torch_threads"]
        systems = result["systems"]
        assert timed | {"fatchord_wavernn"} == set(systems)
        for name in timed:
            assert systems[name]["samples_per_second"] > 0 and systems[name]["real_time_factor"] > 0
        assert systems["fatchord_wavernn"]["samples_per_second"] is None
        assert systems["reference_wavernn_896"]["samples"] == 256  # the short stretch, not the whole mel
        assert systems["sparse_wavernn_896"]["engine"] == "sparse-cpu"
        for ratio in ("sparse_wavernn_896_over_hifigan_v1", "sparse_wavernn_896_over_hifigan_v3"):
            assert result[ratio] > 0
    assert record["systems"]["sparse_wavernn_896"]["sparsity"]["block"] == [16, 1]
