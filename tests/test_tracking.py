"""Training progress sinks: TensorBoard scalars, validation audio and its mel image."""

import numpy as np
import pytest
import torch

from vocoders.features import MelConfig, MelSpectrogram
from vocoders.tracking import MetricSink, TensorBoardSink, make_sink, mel_image

from .conftest import tone
from .test_training import tiny_cfg


def test_make_sink_follows_the_setting(tmp_path, monkeypatch):
    assert type(make_sink(False, tmp_path)) is MetricSink
    assert type(make_sink("false", tmp_path)) is MetricSink
    import importlib.util

    real_find_spec = importlib.util.find_spec
    hidden = lambda name, *rest: None if name == "tensorboard" else real_find_spec(name, *rest)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    assert type(make_sink("auto", tmp_path)) is MetricSink
    with pytest.raises(RuntimeError, match=r"vocoders\[tensorboard\]"):
        make_sink(True, tmp_path)


def test_mel_image_stacks_generated_over_target():
    config = MelConfig()
    audio = torch.from_numpy(tone(0.2))
    mel = MelSpectrogram(config)(audio).numpy()
    image = mel_image(mel, audio, config)
    assert image.shape == (2 * 80 + 2, mel.shape[1])
    assert image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_allclose(image[:80], image[82:], atol=1e-5)  # the audio's own mel: both halves agree


def test_training_writes_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vocoders.training import train

    train(tiny_cfg(tmp_path, "trainer.tensorboard=true"))
    log_dir = tmp_path / "run" / "tensorboard"
    events = EventAccumulator(str(log_dir), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "valid/loss", "valid/coarse"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    (audio_tag,) = tags["audio"]
    (image_tag,) = tags["images"]
    assert audio_tag.startswith("valid/audio/") and image_tag.startswith("valid/mel/")
    assert events.Audio(audio_tag)[0].sample_rate == 22050
    assert isinstance(make_sink("auto", tmp_path), TensorBoardSink)
