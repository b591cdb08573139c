"""vocoders.diagnose: the overfit, conditioning and agreement checks, on synthetic harmonic audio."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from vocoders import diagnose
from vocoders.features import MelSpectrogram


def harmonic(path, f0_start, f0_end, seconds=0.6, rate=22050):
    """A gliding harmonic tone with a noise gap in the middle (voiced, unvoiced, voiced)."""
    n = int(seconds * rate)
    phase = 2 * np.pi * np.cumsum(np.linspace(f0_start, f0_end, n)) / rate
    voiced = sum((0.6 / h) * np.sin(h * phase) for h in range(1, 10))
    gap = np.zeros(n, dtype=bool)
    gap[n // 3 : n // 2] = True
    noise = np.random.default_rng(0).standard_normal(n) * 0.02
    sf.write(path, np.where(gap, noise, 0.3 * voiced).astype(np.float32), rate)
    return path


@pytest.fixture
def tones(tmp_path):
    return [harmonic(tmp_path / "a.wav", 110, 170), harmonic(tmp_path / "b.wav", 180, 130)]


def test_overfit_trains_on_the_files_and_every_cpu_engine_generates_them(tmp_path, tones):
    result = diagnose.overfit(
        "wavernn_cpu",
        tones,
        steps=3,
        run_dir=tmp_path / "run",
        overrides=["model.hidden_size=32", "model.cond_channels=8", "model.out_hidden=16", "trainer.threads=1"],
        cache_dir=tmp_path / "cache",
    )
    assert result.step == 3 and result.checkpoint.is_file()
    manifest = (tmp_path / "run" / "data" / "overfit.csv").read_text().splitlines()
    assert manifest[0] == "id|path|split" and len(manifest) == 5  # each file to train on and to validate on
    report = diagnose.overfit_report(result.checkpoint, tones, tmp_path / "out", seconds=0.3, reference_seconds=0.1)
    engines = {row["engine"] for row in report["rows"]}
    assert {"reference", "cpu"} <= engines
    by_engine = {(r["id"], r["engine"]): r for r in report["rows"]}
    for uid in ("a", "b"):  # same noise, same weights: the engines' audio is the reference's
        assert by_engine[(uid, "cpu")]["same_as_reference"] is True
        assert by_engine[(uid, "cpu")]["seconds"] > by_engine[(uid, "reference")]["seconds"] > 0.05
        assert 0.0 <= by_engine[(uid, "cpu")]["vuv_error"] <= 1.0
    assert len(report["figures"]) == 2 and all((tmp_path / "out" / f"overfit_{u}.png").is_file() for u in "ab")


def _utterances(model, tones):
    mel = MelSpectrogram(model.mel_config)
    out = []
    for p in tones:
        audio, _ = sf.read(p, dtype="float32")
        audio = audio[: len(audio) // 256 * 256]
        out.append(diagnose.Utterance(p.stem, audio, mel(torch.from_numpy(audio)).numpy()))
    return out


def test_conditioning_gap_compares_the_same_targets_under_three_mels(tiny_wavernn, tones):
    gap = diagnose.conditioning_gap(tiny_wavernn, _utterances(tiny_wavernn, tones), segment_frames=4)
    assert set(gap) == {"true", "zeroed", "shuffled"}
    assert all(np.isfinite(v) and v > 0 for v in gap.values())
    assert gap["zeroed"] != gap["true"]  # the mel reaches the loss


def test_logit_agreement_of_every_cpu_engine(tiny_wavernn, tones):
    utterance = _utterances(tiny_wavernn, tones)[0]
    for engine in diagnose.cpu_engines(tiny_wavernn):
        row = diagnose.logit_agreement(tiny_wavernn, utterance, engine, frames=6)
        assert row["samples"] == 6 * 256 and row["max_abs"] <= 1e-4, row


def test_cli_refuses_a_missing_file_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "vocoders.diagnose", "overfit", str(tmp_path / "nope.wav"), "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.wav'}: no such audio file"]


def test_silent_starts_lists_a_model_that_stays_silent_and_not_one_that_speaks(tiny_lpcnet, tones):
    from vocoders.inference import Vocoder

    utterances = _utterances(tiny_lpcnet, tones)
    speaking = diagnose.silent_starts(Vocoder(tiny_lpcnet, engine="cpu"), utterances, frames=20)
    assert speaking["checked"] == 4 and speaking["silent"] == []

    class QuietOnB(Vocoder):
        """The tiny model, but the second utterance of the batch comes out 40 dB down."""

        def __call__(self, mel, seed=None, **kwargs):
            audio = super().__call__(mel, seed=seed, **kwargs).clone()
            audio[1] *= 0.01
            return audio

    quiet = diagnose.silent_starts(QuietOnB(tiny_lpcnet, engine="cpu"), utterances, frames=20)
    assert sorted((row["id"], row["seed"]) for row in quiet["silent"]) == [("b", 0), ("b", 1)]
    assert all(row["ratio"] < 0.1 for row in quiet["silent"])
    with pytest.raises(ValueError, match="no utterance has 999 frames"):
        diagnose.silent_starts(Vocoder(tiny_lpcnet, engine="cpu"), utterances, frames=999)


def _noisy_speech_like(model, seconds=0.5, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * 22050) // 256 * 256
    t = np.arange(n) / 22050
    audio = (0.3 * np.sin(2 * np.pi * 140 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    return diagnose.Utterance("u", audio, MelSpectrogram(model.mel_config)(torch.from_numpy(audio)).numpy())


def test_band_error_tells_a_fixed_gain_from_frame_to_frame_error(tiny_wavernn):
    config = tiny_wavernn.mel_config
    utt = _noisy_speech_like(tiny_wavernn)
    same = diagnose.band_error([utt], {"u": utt.audio}, config)
    assert same["rms_db"] == pytest.approx(0.0, abs=1e-6) and same["frames"] > 10
    louder = diagnose.band_error([utt], {"u": 2.0 * utt.audio}, config)
    assert np.allclose(louder["bias_db"], 20 * np.log10(2.0), atol=0.01)  # every band, the same 6.02 dB
    assert louder["rms_without_bias_db"] < 0.01 < 6.0 < louder["rms_db"]
    other = _noisy_speech_like(tiny_wavernn, seed=1).audio  # same spectrum, other noise: spread, little bias
    noisy = diagnose.band_error([utt], {"u": other}, config)
    assert noisy["rms_without_bias_db"] > 0.5 and max(noisy["spread_db"]) > 0.5
    assert len(noisy["band_centre_hz"]) == config.n_mels and noisy["band_centre_hz"] == sorted(noisy["band_centre_hz"])
    with pytest.raises(ValueError, match="no generated audio"):
        diagnose.band_error([utt], {"other": utt.audio}, config)


def test_read_generated_finds_each_utterance_file_and_refuses_a_folder_without_any(tiny_wavernn, tmp_path):
    utt = _noisy_speech_like(tiny_wavernn)
    with pytest.raises(ValueError, match=r"no file named <utterance id>_vocoder.wav"):
        diagnose.read_generated(tmp_path, [utt], "_vocoder.wav", 22050)
    sf.write(tmp_path / "u_vocoder.wav", utt.audio, 22050, subtype="FLOAT")
    found = diagnose.read_generated(tmp_path, [utt], "_vocoder.wav", 22050)
    assert list(found) == ["u"] and np.array_equal(found["u"], utt.audio)
