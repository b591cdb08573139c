"""tools/lpc_gain.py on the shipped speech sample: both predictors remove envelope, the frame's own more."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_mel_predictor_removes_envelope_and_the_frames_own_removes_more(sample_dir):
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "lpc_gain.py"), str(sample_dir), "--split", "valid", "--limit", "2"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3 and lines[-1]["utterances"] == 2
    for row in lines[:2]:
        assert 3.0 < row["gain_db_mel"] <= row["gain_db_own_frame"] + 0.5, row
