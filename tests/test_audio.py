import numpy as np
import pytest
import soundfile as sf
import torch

from vocoders.audio import (
    AudioError,
    join_coarse_fine,
    mulaw_decode,
    mulaw_encode,
    pcm_to_float,
    read_audio,
    split_coarse_fine,
    write_wav,
)

from .conftest import tone


def test_coarse_fine_round_trip_over_all_16_bit_values():
    pcm = torch.arange(-32768, 32768, dtype=torch.int64)
    audio = pcm.double() / 32768.0
    coarse, fine = split_coarse_fine(audio)
    assert coarse.min() == 0 and coarse.max() == 255 and fine.min() == 0 and fine.max() == 255
    assert torch.equal(coarse * 256 + fine, pcm + 32768)  # high byte, low byte of the offset sample
    back = join_coarse_fine(coarse, fine)
    assert torch.equal(torch.round(back.double() * 32768).long(), pcm)


@pytest.mark.parametrize("bits", [16, 10, 9])
def test_pcm_to_float_equals_joining_the_split(bits):
    """The decoders' short form gives join_coarse_fine's floats bit for bit (outside the range too)."""
    low = bits // 2
    far = torch.randint(-(1 << 23), 1 << 23, (4096,), generator=torch.Generator().manual_seed(0))
    u = torch.cat([torch.arange(1 << bits), torch.tensor([-5, 1 << bits, (1 << bits) + 1000]), far])
    joined = join_coarse_fine(u >> low, u & ((1 << low) - 1), bits)
    assert pcm_to_float(u, bits).dtype == torch.float32
    assert torch.equal(pcm_to_float(u, bits), joined)


def test_coarse_fine_clips_out_of_range():
    coarse, fine = split_coarse_fine(torch.tensor([-2.0, 2.0]))
    assert coarse.tolist() == [0, 255] and fine.tolist() == [0, 255]


def test_mulaw_round_trip_and_companding():
    classes = torch.arange(256)
    assert torch.equal(mulaw_encode(mulaw_decode(classes)), classes)
    x = torch.linspace(-1, 1, 10001)
    err = (mulaw_decode(mulaw_encode(x)) - x).abs()
    assert err.max() < 0.04  # coarsest step near full scale
    small = x.abs() < 0.01
    assert err[small].max() < 0.001  # fine resolution near zero: the point of companding
    assert mulaw_encode(torch.tensor([0.0])).item() in (127, 128)


@pytest.mark.parametrize("fmt,ext", [("WAV", ".wav"), ("FLAC", ".flac"), ("OGG", ".ogg")])
def test_read_formats_downmix_and_resample(tmp_path, fmt, ext):
    mono = tone(0.5, 16000)
    stereo = np.stack([mono, mono * 0.5], axis=1)
    path = tmp_path / f"x{ext}"
    sf.write(path, stereo, 16000, format=fmt)
    audio, rate = read_audio(path)
    assert rate == 16000 and audio.ndim == 1 and len(audio) == len(mono)
    tol = 0.05 if fmt == "OGG" else 1e-3
    assert np.abs(audio - 0.75 * mono).max() < tol
    resampled, rate = read_audio(path, 22050)
    assert rate == 22050 and abs(len(resampled) - round(len(mono) * 22050 / 16000)) <= 1


def test_unreadable_and_empty_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="bad.wav"):
        read_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 22050)
    with pytest.raises(AudioError, match="empty.wav"):
        read_audio(empty)


def test_write_wav_is_16_bit_and_leaves_no_temporary(tmp_path):
    audio = tone(0.1)
    out = write_wav(tmp_path / "sub" / "o.wav", audio, 22050)
    info = sf.info(out)
    assert info.subtype == "PCM_16" and info.samplerate == 22050 and info.frames == len(audio)
    back, _ = read_audio(out)
    assert np.abs(back - audio).max() <= 1 / 32768 + 1e-7
    assert [p.name for p in out.parent.iterdir()] == ["o.wav"]


def test_preemphasis_and_its_inverse():
    from vocoders.audio import deemphasize, preemphasize

    x = torch.randn(2, 3000, generator=torch.Generator().manual_seed(0)) * 0.1  # no clipping
    y = preemphasize(x, 0.86)
    assert y.shape == x.shape
    assert torch.allclose(y[:, 1:], x[:, 1:] - 0.86 * x[:, :-1], atol=1e-6)
    assert torch.allclose(y[:, 0], x[:, 0])
    back = deemphasize(y, 0.86)
    expected = torch.zeros_like(y)  # the recursion written out
    for t in range(y.shape[1]):
        expected[:, t] = y[:, t] + (0.86 * expected[:, t - 1] if t else 0.0)
    assert torch.allclose(back, expected, atol=1e-6)
    assert torch.allclose(back, x, atol=1e-6)
    assert torch.equal(deemphasize(y, 0.0), y)
