"""The real corpus, when present: the manifest loads, features are sane, a few training steps run.

Skips cleanly when ../shared/data/cs-male-22k (or $VOCODERS_TEST_DATA) is absent.
"""

import numpy as np
from hydra import compose, initialize_config_module

from vocoders.data import FeatureCache, find_utterances, load_features
from vocoders.features import MelConfig
from vocoders.training import train


def test_manifest_lists_the_corpus_split(shared_data):
    utts = find_utterances(shared_data / "metadata.csv")
    assert len(utts) == 533
    assert sum(u.split == "valid" for u in utts) == 30
    assert all(u.audio_path.suffix == ".flac" and u.audio_path.is_file() for u in utts)


def test_features_of_real_speech(shared_data, tmp_path):
    utts = [u for u in find_utterances(shared_data / "metadata.csv") if u.split == "valid"][:5]
    feats, skipped = load_features(utts, FeatureCache(tmp_path, MelConfig()))
    assert not skipped and len(feats) == 5
    lo, hi = MelConfig().value_range()
    for f in feats:
        assert len(f.audio) == f.frames * 256
        assert lo - 1e-4 <= float(np.min(f.mel)) and float(np.max(f.mel)) <= hi
        assert 0.05 < np.abs(f.audio).max() / 32768 <= 1.0


def test_a_few_steps_on_the_corpus(shared_data, tmp_path):
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "recipe=wavernn",
                "debug=tiny",
                f"data.path={shared_data / 'metadata.csv'}",
                f"data.cache_dir={tmp_path / 'cache'}",
                f"run_dir={tmp_path / 'run'}",
            ],
        )
    result = train(cfg)
    assert result.step == 4 and result.checkpoint.is_file() and result.validation_audio.is_file()
