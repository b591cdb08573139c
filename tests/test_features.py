import numpy as np
import pytest
import torch

from vocoders.audio import read_audio
from vocoders.features import PRESETS, MelConfig, MelSpectrogram


def librosa_reference(audio: np.ndarray, c: MelConfig) -> np.ndarray:
    """The same mel definition computed independently in float64 with numpy/librosa."""
    import librosa

    x = np.pad(audio.astype(np.float64), (c.padding, c.padding), mode="reflect")
    spec = librosa.stft(
        x,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        window="hann",
        center=False,
        dtype=np.complex128,
    )
    magnitude = np.sqrt(spec.real**2 + spec.imag**2 + c.magnitude_eps)
    basis = librosa.filters.mel(
        sr=c.sample_rate,
        n_fft=c.n_fft,
        n_mels=c.n_mels,
        fmin=c.fmin,
        fmax=c.fmax,
        norm="slaney",
        htk=False,
        dtype=np.float64,
    )
    return np.log(np.maximum(basis @ magnitude, c.log_floor))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_matches_float64_librosa_on_noise(preset):
    c = MelConfig.preset(preset)
    rng = np.random.default_rng(1)
    audio = rng.uniform(-0.8, 0.8, c.sample_rate // 2).astype(np.float32)
    ours = MelSpectrogram(c)(torch.from_numpy(audio)).numpy()
    ref = librosa_reference(audio, c)
    assert ours.shape == ref.shape == (c.n_mels, len(audio) // c.hop_length)
    assert np.abs(ours - ref).max() <= 1e-4


def test_matches_float64_librosa_on_speech(sample_dir):
    c = MelConfig()
    audio, rate = read_audio(next((sample_dir / "wavs").glob("*.flac")))
    assert rate == c.sample_rate
    ours = MelSpectrogram(c)(torch.from_numpy(audio)).numpy()
    ref = librosa_reference(audio, c)
    assert np.abs(ours - ref).max() <= 1e-4


def test_hifigan_preset_is_the_documented_contract():
    c = MelConfig.preset("hifigan")
    assert (c.sample_rate, c.n_fft, c.hop_length, c.win_length, c.n_mels) == (22050, 1024, 256, 1024, 80)
    assert (c.fmin, c.fmax, c.log_floor, c.log_base, c.center, c.pad_mode) == (0.0, 8000.0, 1e-5, "e", False, "reflect")
    assert c.padding == (1024 - 256) // 2
    assert PRESETS["24k"].sample_rate == 24000


@pytest.mark.parametrize("samples", [512, 1000, 22050, 22050 + 255])
def test_frames_are_samples_over_hop(samples):
    c = MelConfig()
    audio = torch.randn(2, samples) * 0.1
    mel = MelSpectrogram(c)(audio)
    assert mel.shape == (2, c.n_mels, samples // c.hop_length)
    assert c.num_frames(samples) == samples // c.hop_length


def test_batch_equals_single():
    m = MelSpectrogram()
    audio = torch.randn(3, 4096) * 0.3
    batch = m(audio)
    for i in range(3):
        assert torch.allclose(batch[i], m(audio[i]), atol=1e-5)


def test_dict_round_trip_and_fingerprint():
    c = MelConfig.preset("24k")
    assert MelConfig.from_dict(c.to_dict()) == c
    assert MelConfig.from_dict({"preset": "24k", "n_mels": 80}).n_mels == 80
    assert c.fingerprint() != MelConfig().fingerprint()
    assert MelConfig().differences(c)  # lists the fields that differ
    assert any("n_mels" in d for d in MelConfig().differences(c))


@pytest.mark.parametrize(
    "bad",
    [{"hop_length": 0}, {"n_mels": 0}, {"fmax": 20000.0}, {"log_base": "2"}, {"win_length": 2048}, {"nonsense": 1}],
)
def test_bad_configs_refused(bad):
    with pytest.raises(ValueError):
        MelConfig.from_dict(bad)


def test_value_range_holds_real_audio(sample_dir):
    c = MelConfig()
    lo, hi = c.value_range()
    audio, _ = read_audio(next((sample_dir / "wavs").glob("*.flac")))
    mel = MelSpectrogram(c)(torch.from_numpy(audio))
    full_scale = MelSpectrogram(c)(torch.from_numpy(np.sign(np.sin(np.arange(22050) * 0.3)).astype(np.float32)))
    assert lo == pytest.approx(np.log(1e-5))
    assert mel.min() >= lo - 1e-5 and mel.max() <= hi
    assert full_scale.max() <= hi
