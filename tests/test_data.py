import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from vocoders.data import (
    FeatureCache,
    ManifestError,
    SegmentDataset,
    find_utterances,
    load_features,
    summary_line,
)
from vocoders.features import MelConfig, MelSpectrogram

from .conftest import tone


def make_corpus(root, n=4, rate=22050):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        sf.write(sub / f"u{i}.wav", tone(0.4 + 0.1 * i, rate, 200 + 30 * i), rate)
    return root


def test_folder_manifest_is_recursive_with_stable_valid_split(tmp_path):
    root = make_corpus(tmp_path / "c", 6)
    (root / "notes.txt").write_text("ignored")
    utts = find_utterances(root, valid_size=2)
    assert len(utts) == 6
    assert sum(u.split == "valid" for u in utts) == 2
    assert utts == find_utterances(root, valid_size=2)  # deterministic


def test_csv_manifest_with_split_column(tmp_path):
    root = make_corpus(tmp_path / "c", 3)
    wavs = root / "wavs"
    wavs.mkdir()
    for i, p in enumerate(sorted(root.rglob("u*.wav"))):
        p.rename(wavs / f"id{i}.wav")
    (root / "metadata.csv").write_text("id|seconds|split|text\nid0|0.4|train|a\nid1|0.5|valid|b\nid2|0.6|train|c\n")
    utts = find_utterances(root / "metadata.csv")
    assert [(u.id, u.split) for u in utts] == [("id0", "train"), ("id1", "valid"), ("id2", "train")]
    assert all(u.audio_path.is_file() for u in utts)


def test_bad_manifests_refused(tmp_path):
    with pytest.raises(ManifestError, match="no such"):
        find_utterances(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio"):
        find_utterances(tmp_path / "empty")
    (tmp_path / "m.csv").write_text("name|x\na|b\n")
    with pytest.raises(ManifestError, match="'id' or 'path'"):
        find_utterances(tmp_path / "m.csv")


def test_bad_files_are_skipped_and_counted(tmp_path, caplog):
    root = make_corpus(tmp_path / "c", 3)
    (root / "broken.wav").write_bytes(b"RIFF nonsense")
    sf.write(root / "silent.wav", np.zeros(22050, dtype=np.float32), 22050)
    sf.write(root / "short.wav", tone(0.005), 22050)
    sf.write(root / "other_rate.wav", tone(0.5, 16000), 16000)
    utts = find_utterances(root, valid_size=0)
    cache = FeatureCache(tmp_path / "cache", MelConfig(), allow_resample=False)
    with caplog.at_level(logging.WARNING):
        feats, skipped = load_features(utts, cache, min_frames=4)
    assert len(feats) == 3
    assert skipped == {"unreadable": 1, "silent": 1, "too short": 1, "sample rate": 1}
    assert "broken.wav" in caplog.text and "silent.wav" in caplog.text
    line = summary_line("c", feats, [], skipped, 256, 22050)
    assert "3 train" in line and "skipped 4" in line


def test_features_align_and_cache_is_reused_and_rebuilt(tmp_path):
    root = make_corpus(tmp_path / "c", 2)
    utts = find_utterances(root, valid_size=0)
    config = MelConfig()
    cache = FeatureCache(tmp_path / "cache", config)
    feats, _ = load_features(utts, cache)
    for f in feats:
        assert f.audio.dtype == np.int16 and len(f.audio) == f.frames * config.hop_length
        # the cached mel saw the whole file; frames whose window stays inside the kept audio must agree
        expected = MelSpectrogram(config)(torch.from_numpy(f.audio.astype(np.float32) / 32768)).numpy()
        inner = f.frames - 3
        assert np.abs(expected[:, :inner] - f.mel[:, :inner]).max() < 1e-3
    files = sorted(cache.root.iterdir())
    assert len(files) == 4
    mtimes = [p.stat().st_mtime_ns for p in files]
    load_features(utts, FeatureCache(tmp_path / "cache", config))
    assert [p.stat().st_mtime_ns for p in files] == mtimes  # reused, not recomputed
    other = FeatureCache(tmp_path / "cache", MelConfig.preset("hifigan", n_mels=64))
    feats64, _ = load_features(utts, other)
    assert other.root != cache.root and feats64[0].mel.shape[0] == 64


def test_gta_pairs(tmp_path):
    root = make_corpus(tmp_path / "c", 2)
    config = MelConfig()
    for p in root.rglob("*.wav"):
        audio, _ = sf.read(p, dtype="float32")
        frames = len(audio) // config.hop_length
        np.save(p.with_suffix(".npy"), np.full((config.n_mels, frames), -3.0, dtype=np.float32))
    utts = find_utterances(root, kind="gta", valid_size=0)
    assert all(u.mel_path is not None for u in utts)
    feats, skipped = load_features(utts, FeatureCache(tmp_path / "cache", config))
    assert not skipped and all(np.all(f.mel == -3.0) for f in feats)
    bad = next(root.rglob("*.npy"))
    np.save(bad, np.zeros((config.n_mels, 3), dtype=np.float32))
    _, skipped = load_features(find_utterances(root, kind="gta", valid_size=0), FeatureCache(tmp_path / "c2", config))
    assert skipped == {"GTA mel": 1}


def test_segments_are_hop_aligned_with_context(tmp_path):
    root = make_corpus(tmp_path / "c", 2)
    feats, _ = load_features(find_utterances(root, valid_size=0), FeatureCache(tmp_path / "cache", MelConfig()))
    ds = SegmentDataset(feats, segment_frames=4, context=3, hop=256)
    for i in range(len(ds)):
        mel, audio = ds[i]
        assert mel.shape == (80, 4 + 6) and audio.shape == (1024,)
    f = feats[0]
    mel, audio = ds.segment(f, 5)
    assert np.array_equal(mel[:, 3:7].numpy(), np.asarray(f.mel[:, 5:9]))
    assert np.allclose(audio.numpy(), np.asarray(f.audio[5 * 256 : 9 * 256]) / 32768)
    mel0, _ = ds.segment(f, 0)  # before the start: the first frame repeated
    assert np.array_equal(mel0[:, 0].numpy(), np.asarray(f.mel[:, 0]))
