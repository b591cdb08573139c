"""Training an LPCNet against the reference pitch tracker (`pitch_target="reference"`): the F0 from
the data pipeline, its cache, its segments, the loss that reads it, and a whole training run."""

import json

import numpy as np
import pytest
import torch

from vocoders.checkpoint import read_checkpoint
from vocoders.data import FeatureCache, SegmentDataset, find_utterances
from vocoders.features import MelConfig
from vocoders.metrics import frame_f0
from vocoders.models import LPCNet
from vocoders.pitch import PeriodRange, periods_from_f0
from vocoders.training import train

from .conftest import tone
from .test_training import tiny_cfg


def small(**kwargs):
    torch.manual_seed(0)
    return LPCNet(hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16, pitch_phase=8, **kwargs)


def test_periods_from_f0_round_the_lag_and_call_zero_and_out_of_range_unvoiced():
    lags = PeriodRange(22050, 60.0, 500.0)
    f0 = torch.tensor([[0.0, 100.0, 147.0, 30.0, 900.0]])
    period, voiced = periods_from_f0(f0, lags)
    assert period.dtype == torch.long and voiced.dtype == torch.bool
    assert voiced.tolist() == [[False, True, True, False, False]]
    assert period[0, 1:3].tolist() == [round(22050 / 100.0), round(22050 / 147.0)]
    assert torch.all((period >= lags.min_lag) & (period <= lags.max_lag))


def test_the_loss_trains_on_the_given_pitch_where_the_tracker_model_measures_its_own():
    audio = torch.from_numpy(tone(8 * 256 / 22050, freq=147.0, amp=0.3)).float()[None]
    tracker, reference = small(), small(pitch_target="reference")
    assert not tracker.reads_f0 and reference.reads_f0
    reference.load_state_dict(tracker.state_dict())
    tracker.eval(), reference.eval()
    mel = tracker.pad_mel(torch.randn(1, 80, 8) - 4)
    periods, voiced, _ = tracker.true_periods(audio)
    f0 = torch.where(voiced, 22050.0 / periods.double(), 0.0).float()  # the tracker's own pitch, as F0
    with torch.no_grad():
        _, ours = tracker.loss(mel, audio)
        _, same = reference.loss(mel, audio, f0)
        _, other = reference.loss(mel, audio, torch.zeros_like(f0))  # all unvoiced: no comb, no pulses
    assert same["excitation_ce"] == pytest.approx(ours["excitation_ce"], abs=1e-6)
    assert other["excitation_ce"] != pytest.approx(ours["excitation_ce"], abs=1e-4)
    assert other["voiced"] == 0.0 and same["voiced"] == pytest.approx(float(voiced.float().mean()))


def test_the_reference_loss_refuses_a_missing_or_bad_f0():
    model = small(pitch_target="reference")
    audio = torch.zeros(1, 4 * 256)
    mel = model.pad_mel(torch.randn(1, 80, 4) - 4)
    with pytest.raises(ValueError, match="needs the reference F0"):
        model.loss(mel, audio)
    with pytest.raises(ValueError, match=r"f0 must be \[B, 4\]"):
        model.loss(mel, audio, torch.zeros(1, 5))
    with pytest.raises(ValueError, match="finite"):
        model.loss(mel, audio, torch.tensor([[100.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="pitch_target"):
        small(pitch_target="dio")


def test_the_f0_is_computed_once_per_utterance_and_cut_with_each_segment(tmp_path, sample_dir):
    config = MelConfig()
    cache = FeatureCache(tmp_path / "cache", config)
    utt = find_utterances(sample_dir)[0]
    feats = cache.with_f0(cache.load(utt))
    expected = frame_f0(np.asarray(feats.audio, np.float64) / 32768.0, config.sample_rate, config.hop_length)
    assert feats.f0.shape == (feats.frames,) and np.allclose(feats.f0, expected)
    assert (feats.f0 > 0).any() and (feats.f0 == 0).any()
    cached = next(cache.root.glob("*.f0-5ms.npy"))
    cached.write_bytes(b"not an array")  # a corrupt entry is recomputed
    assert np.array_equal(cache.with_f0(cache.load(utt)).f0, feats.f0)
    assert np.array_equal(np.load(cached), feats.f0)
    dataset = SegmentDataset([feats], 8, 2, config.hop_length)
    mel, audio, f0 = dataset.segment(feats, 5)
    assert mel.shape == (config.n_mels, 12) and audio.shape == (8 * 256,)
    assert torch.equal(f0, torch.from_numpy(feats.f0[5:13]))
    _, _, tail = dataset.segment(feats, feats.frames - 3)  # past the end: unvoiced padding
    assert torch.equal(tail[:3], torch.from_numpy(feats.f0[-3:])) and torch.all(tail[3:] == 0)
    assert len(SegmentDataset([cache.load(utt)], 8, 2, config.hop_length).segment(feats, 0)) == 2


def test_a_training_run_against_the_reference_pitch(tmp_path):
    cfg = tiny_cfg(tmp_path, "model=lpcnet", "++model.pitch_target=reference")
    result = train(cfg)
    assert result.step == 4
    assert len(list((tmp_path / "cache").rglob("*.f0-5ms.npy"))) >= 2  # train and valid utterances
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert valid and all(np.isfinite(r["period_ce"]) and 0 <= r["vuv_agree"] <= 1 for r in valid)
    assert read_checkpoint(result.checkpoint).meta["model_kwargs"]["pitch_target"] == "reference"
