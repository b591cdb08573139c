"""The period head that reads the mel, and `python -m vocoders.refit_pitch` on the bundled speech sample."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vocoders.checkpoint import read_checkpoint, save_checkpoint
from vocoders.models import LPCNet
from vocoders.pitch import PeriodRange
from vocoders.training.pitch_head import reference_pitch

from .conftest import tone

REPO = Path(__file__).resolve().parents[1]


def small(**kwargs):
    torch.manual_seed(0)
    return LPCNet(hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16, pitch_phase=4, **kwargs)


def test_the_mel_head_reads_only_the_mel_frames_its_features_read():
    model = small(period_input="features+mel").eval()
    window = 2 * model.cond_net.context + 1
    assert model.period_head_inputs == 8 + 80 * window
    assert model.period_head[0].in_features == model.period_head_inputs
    mel = model.pad_mel(torch.randn(1, 80, 12) - 5)
    with torch.no_grad():
        rows = model.cond_net(mel)
        inputs = model.period_head_input(rows, mel)
        assert inputs.shape == (1, rows.shape[1], model.period_head_inputs)
        changed = mel.clone()
        changed[..., 9] += 3.0  # mel frame 9 is read by rows 9 - (window - 1) .. 9 only
        moved = model.period_head_input(model.cond_net(changed), changed)
    differs = (moved - inputs).abs().amax(-1)[0] > 0
    assert differs.nonzero().flatten().tolist() == list(range(9 - window + 1, 10))
    with pytest.raises(ValueError, match="needs the mel"):
        model.period_head_input(rows)
    with pytest.raises(ValueError, match="period_input"):
        small(period_input="mel")


def test_training_teaches_the_mel_head_and_the_kwarg_round_trips(tmp_path):
    model = small(period_input="features+mel")
    t = torch.arange(8 * 256, dtype=torch.float64)
    audio = (0.3 * torch.exp(-torch.remainder(t, 150) / 40.0) * torch.cos(2 * np.pi * t / 18.0)).float()[None]
    mel = model.pad_mel(torch.randn(1, 80, 8) - 4)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = model.loss(mel, audio)[1]
    for _ in range(20):
        loss, parts = model.loss(mel, audio)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert first["period_ce"] > parts["period_ce"] + 1.0 and parts["period_within_50c"] == 1.0
    path = save_checkpoint(tmp_path / "m.safetensors", model, 20)
    from vocoders.checkpoint import model_from_checkpoint

    loaded = model_from_checkpoint(read_checkpoint(path))
    assert loaded.period_input == "features+mel"
    assert torch.equal(loaded.period_input_scale, model.period_input_scale)


def test_reference_pitch_finds_a_tone_and_calls_silence_unvoiced():
    rate, hop = 22050, 256
    audio = np.concatenate([tone(0.6, rate, 150.0, 0.5), np.zeros(int(0.4 * rate), np.float32)])
    periods = PeriodRange(rate, 60.0, 500.0)
    lag, voiced = reference_pitch(audio, rate, hop, periods)
    frames = len(audio) // hop
    assert lag.shape == voiced.shape == (frames,)
    inner = slice(5, int(0.6 * rate / hop) - 5)
    assert voiced[inner].all() and np.all(np.abs(lag[inner] - rate / 150.0) <= 1.5)
    assert not voiced[int(0.7 * rate / hop) :].any()


def _refit(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "vocoders.refit_pitch", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip


def test_the_cli_refits_the_head_and_keeps_every_other_weight(tmp_path, sample_dir):
    source = small(ltp_gain=0.5).eval()
    with torch.no_grad():  # an untrained head that calls every frame unvoiced
        source.period_head[2].bias[-1] += 8.0
    src = save_checkpoint(tmp_path / "src.safetensors", source, 123, init_from={"step": 7})
    out = tmp_path / "refit.safetensors"
    result = _refit(src, sample_dir, "-o", out, "--epochs", "3", "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert record["period_input"] == "features+mel" and record["train_frames"] > 1000
    before, after = record["valid_before"], record["valid_after"]
    assert before["voiced_head"] < 0.05 < before["voiced_reference"]
    assert after["vuv_agreement"] > before["vuv_agreement"] + 0.2
    refit = read_checkpoint(out)
    assert refit.step == 123 and refit.meta["init_from"] == {"step": 7}
    assert refit.meta["pitch_refit"]["valid_after"] == after
    assert refit.model_kwargs["period_input"] == "features+mel" and refit.model_kwargs["ltp_gain"] == 0.5
    original = read_checkpoint(src).tensors
    for name, tensor in refit.tensors.items():
        if not name.startswith("period_"):
            assert torch.equal(tensor, original[name]), name
    assert refit.tensors["period_head.0.weight"].shape[1] == 8 + 80 * 5
    again = tmp_path / "again.safetensors"  # the same seed gives the same head
    assert _refit(src, sample_dir, "-o", again, "--epochs", "3", "--cache-dir", tmp_path / "cache").returncode == 0
    assert all(torch.equal(t, read_checkpoint(again).tensors[k]) for k, t in refit.tensors.items())

    import vocoders

    voc = vocoders.load(out, engine="cpu")
    audio = voc(torch.randn(80, 6) - 5, seed=0)
    assert audio.shape == (6 * 256,) and torch.isfinite(audio).all()


def test_the_cli_refuses_a_model_without_a_head_and_overwriting_its_source(tmp_path, sample_dir):
    plain = LPCNet(hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16)
    src = save_checkpoint(tmp_path / "plain.safetensors", plain, 1)
    result = _refit(src, sample_dir, "-o", tmp_path / "out.safetensors", timeout=120)
    assert result.returncode == 2 and "plain.safetensors" in result.stderr and "period head" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()
    result = _refit(src, sample_dir, "-o", src, timeout=120)
    assert result.returncode == 2 and "must not be the checkpoint" in result.stderr
    assert read_checkpoint(src).step == 1
