import numpy as np
import pytest
import torch

import vocoders
from vocoders import MelError, MelSpectrogram


def real_mel(frames=4, batch=None):
    audio = torch.sin(torch.arange(frames * 256 + 512) * 0.05) * 0.3
    mel = MelSpectrogram()(audio)[:, :frames]
    return mel if batch is None else mel.unsqueeze(0).repeat(batch, 1, 1)


def test_load_and_call(tiny_checkpoint):
    voc = vocoders.load(tiny_checkpoint, device="cpu")
    assert voc.sample_rate == 22050 and voc.hop_length == 256 and voc.step == 7
    assert isinstance(voc.mel, MelSpectrogram)
    audio = voc(real_mel(3), seed=0)
    assert audio.shape == (3 * 256,) and audio.dtype == torch.float32 and audio.abs().max() <= 1
    batch = voc(real_mel(2, batch=2).numpy(), seed=0)
    assert batch.shape == (2, 512)
    assert torch.equal(voc(real_mel(3), seed=5), voc(real_mel(3), seed=5))


def test_copy_synthesis_length(tiny_checkpoint):
    voc = vocoders.load(tiny_checkpoint)
    audio = torch.sin(torch.arange(3000) * 0.05) * 0.3
    out = voc.copy_synthesis(audio, seed=0)
    assert out.shape == ((3000 // 256) * 256,)


@pytest.mark.parametrize(
    "mel,match",
    [
        (real_mel(5).T, "transposed"),
        (torch.randn(64, 5), "64 bands"),
        (torch.full((80, 5), float("nan")), "NaN"),
        (torch.zeros(80, 0), "empty"),
        (torch.full((80, 5), -100.0), "cannot be a log-mel"),  # dB-scaled
        (torch.full((80, 5), 500.0), "cannot be a log-mel"),  # linear magnitudes
        (torch.zeros(2, 3, 80, 5), "must be"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_bad_mels_refused(tiny_checkpoint, mel, match):
    voc = vocoders.load(tiny_checkpoint)
    with pytest.raises(MelError, match=match):
        voc(mel, source="x.npy")
    with pytest.raises(MelError, match="x.npy"):
        voc(mel, source="x.npy")


def test_unknown_engine_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="unknown engine"):
        vocoders.load(tiny_checkpoint, engine="nope")
