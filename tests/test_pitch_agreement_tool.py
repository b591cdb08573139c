"""tools/pitch_agreement.py on the shipped speech sample: the tracker mostly agrees with pyworld."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_tracker_agrees_with_pyworld_on_most_voiced_frames(sample_dir):
    pytest.importorskip("pyworld")
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "pitch_agreement.py"), str(sample_dir), "--split", "valid",
         "--limit", "2", "--thresholds", "0.5", "0.9"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3 and lines[-1]["utterances"] == 2
    total = lines[-1]
    assert total["frames_voiced_in_both"] > 50
    assert total["within_50_cents"] > 0.5 and total["median_cents"] < 50
    assert total["agree@0.5"] > 0.55 and total["agree@0.5"] > total["agree@0.9"]  # a strict threshold misses voicing


def test_an_empty_split_is_refused(sample_dir):
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "pitch_agreement.py"), str(sample_dir), "--split", "nosuchsplit"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "no utterances in split 'nosuchsplit'" in out.stderr
