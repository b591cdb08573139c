"""vocoders.diagnose: the overfit, conditioning and agreement checks, on synthetic harmonic audio."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from vocoders import diagnose
from vocoders.data import mel_window
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


def test_an_lpc_models_conditioning_check_keeps_the_true_mels_targets(tiny_lpcnet, tones):
    """The mel also sets an LPC model's excitation target; the check varies only what the network reads."""
    model = tiny_lpcnet.eval()
    utt = _utterances(model, tones)[0]
    ctx, frames = model.mel_context, 4
    mel = torch.from_numpy(mel_window(utt.mel, -ctx, frames + ctx)).unsqueeze(0)
    targets = model.encode(torch.from_numpy(utt.audio[: frames * model.hop_length]).unsqueeze(0))
    zeroed = torch.full_like(mel, float(np.log(model.mel_config.log_floor)))
    with torch.no_grad():
        logits, excitation, _ = model._teacher_forced(mel, targets)
        held_logits, held_excitation, _ = model._teacher_forced(zeroed, targets, dsp_mel=mel)
        _, own_excitation, _ = model._teacher_forced(zeroed, targets)
    assert torch.equal(held_excitation, excitation)  # the same targets as under the true mel
    assert not torch.equal(own_excitation, excitation)  # which the zeroed mel's own predictor would change
    assert not torch.allclose(held_logits, logits)  # while the network sees the zeroed mel
    gap = diagnose.conditioning_gap(model, _utterances(model, tones), segment_frames=4)
    assert all(np.isfinite(v) for v in gap.values()) and gap["zeroed"] != gap["true"]


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


def _filter_mel(config, response, frames=5):
    """The log-mel [1, n_mels, frames] of expected magnitudes 0.01 sqrt(sum w^2) * response(w)."""
    import math

    from vocoders.features import mel_filterbank
    from vocoders.lpc import window_energy

    w = torch.linspace(0, math.pi, config.n_fft // 2 + 1, dtype=torch.float64)
    magnitude = 0.01 * math.sqrt(window_energy(config)) * response(w)
    mel = torch.log((mel_filterbank(config) @ magnitude).clamp_min(config.log_floor))
    return mel[:, None].repeat(1, frames)[None].float()


def _resonance(w, hz=700.0, radius=0.95):
    import math

    theta = 2 * math.pi * hz / 22050
    return 1.0 / (1 - 2 * radius * math.cos(theta) * torch.exp(-1j * w) + radius**2 * torch.exp(-2j * w)).abs()


def test_envelope_mel_gives_back_an_all_pole_spectrum_level_included(mel_config):
    from vocoders.lpc import envelope_mel
    from vocoders.metrics import features_db

    mel = _filter_mel(mel_config, _resonance)
    for preemphasis in (0.0, 0.85):
        envelope = envelope_mel(mel, mel_config, order=16, preemphasis=preemphasis, lag_window_hz=0.0)
        assert envelope.shape == mel.shape
        error = features_db(envelope[0].numpy(), mel_config) - features_db(mel[0].numpy(), mel_config)
        assert np.abs(error).max() < 1.0  # dB, every band: the resonance and the gain come back


def test_envelope_error_grows_where_an_all_pole_model_cannot_follow(mel_config):
    def notched(w):  # a zero near 2 kHz on top of the resonance: no all-pole filter has it exactly
        zero = (1 - 1.9 * torch.cos(torch.tensor(2 * np.pi * 2000 / 22050)) * torch.exp(-1j * w)) + 0.9025 * torch.exp(
            -2j * w
        )
        return _resonance(w) * zero.abs()

    utterances = [diagnose.Utterance(name, np.zeros(1280, np.float32), _filter_mel(mel_config, r)[0].numpy())
                  for name, r in (("pole", _resonance), ("zero", notched))]  # fmt: skip
    pole = diagnose.envelope_error(utterances[:1], mel_config, order=16, preemphasis=0.0, lag_window_hz=0.0)
    assert pole["rms_db"] < 0.5 and pole["frames"] == 5 and len(pole["bias_db"]) == mel_config.n_mels
    low, high = (
        diagnose.envelope_error(utterances[1:], mel_config, order=o, preemphasis=0.0, lag_window_hz=0.0)
        for o in (4, 32)
    )
    assert high["rms_db"] < low["rms_db"] and low["rms_db"] > 1.0
    assert low["order"] == 4 and high["order"] == 32


def test_envelope_cli_refuses_a_model_without_lpc(tmp_path, tiny_wavernn, capsys):
    from vocoders.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "w.safetensors", tiny_wavernn, step=1)
    (tmp_path / "m.csv").write_text("id|path|split\n")
    assert diagnose.main(["envelope", str(path), str(tmp_path / "m.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: a WaveRNN has no LPC envelope"
