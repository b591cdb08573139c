"""Shared fixtures: tiny models, synthetic audio, and the optional real corpus."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vocoders.features import MelConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VOCODERS_TEST_DATA", REPO.parent / "shared" / "data" / "cs-male-22k"))
SAMPLE = REPO / "vocoders" / "assets" / "cs-male-22k-sample"


@pytest.fixture(autouse=True)
def _quiet_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def mel_config() -> MelConfig:
    return MelConfig()


@pytest.fixture
def tiny_wavernn(mel_config):
    from vocoders.models import WaveRNN

    torch.manual_seed(0)
    return WaveRNN(mel=mel_config.to_dict(), hidden_size=32, cond_channels=8, cond_blocks=1, out_hidden=24).eval()


def tone(seconds: float = 0.5, rate: int = 22050, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "metadata.csv").is_file():
        pytest.skip(f"real corpus not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def tiny_wavenet(mel_config):
    from vocoders.models import WaveNet

    torch.manual_seed(0)
    return WaveNet(
        mel=mel_config.to_dict(), layers=6, cycles=2, residual_channels=8, gate_channels=12, skip_channels=8,
        head_channels=16, cond_channels=8, cond_blocks=1,
    ).eval()  # fmt: skip


@pytest.fixture
def tiny_lpcnet(mel_config):
    from vocoders.models import LPCNet

    torch.manual_seed(0)
    model = LPCNet(
        mel=mel_config.to_dict(), hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16,
        pitch_phase=4,
    ).eval()  # fmt: skip
    with torch.no_grad():  # voiced and unvoiced frames both (the head's unvoiced class is the last)
        model.period_head[2].bias[-1] += 6.0
    return model


@pytest.fixture(params=["wavernn", "wavenet", "lpcnet"])
def tiny_model(request):
    """Each model family in a tiny size, for the tests every model must pass."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    from vocoders.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path / "tiny.safetensors", tiny_model, step=7)
