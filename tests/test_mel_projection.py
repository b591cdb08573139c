"""The mel projection: a fixed point at consistent audio, convergence onto the given mel, the bins it
leaves alone, refusals, and its place in `vocoders.load`, the evaluation and the ship tool."""

import numpy as np
import pytest
import torch

import vocoders
from vocoders import evaluate
from vocoders.checkpoint import read_checkpoint, save_checkpoint
from vocoders.errors import CheckpointError
from vocoders.features import MelConfig, MelSpectrogram
from vocoders.mel_projection import (
    MelProjector,
    mel_magnitude,
    mel_projection,
    projection_lag_samples,
    reference_mel_projection,
)
from vocoders.metrics import log_mel_distance

from .conftest import SAMPLE


def speech(frames: int = 60) -> torch.Tensor:
    """[1, frames * 256] of the bundled sample's speech."""
    import soundfile as sf

    audio, _ = sf.read(sorted((SAMPLE / "wavs").glob("*.flac"))[0], dtype="float32")
    return torch.from_numpy(audio[8000 : 8000 + frames * 256]).unsqueeze(0)


def test_audio_that_already_has_the_mel_comes_back_unchanged():
    audio = speech()
    mel = MelSpectrogram()(audio)
    assert mel.shape == (1, 80, 60)
    out = mel_projection(audio, mel, MelConfig(), 1)
    assert out.shape == audio.shape and out.dtype == torch.float32
    assert torch.allclose(out, audio, atol=2e-4)
    assert mel_projection(audio, mel, MelConfig(), 0) is audio


def test_iterations_bring_other_audio_onto_the_given_mel_keeping_its_phase():
    config = MelConfig()
    audio = speech()
    mel = MelSpectrogram()(audio)
    rng = np.random.default_rng(0)
    # the same speech with each 256-sample stretch scaled by up to +-10 dB: band energies off, phase kept
    gains = torch.from_numpy(10.0 ** (rng.uniform(-0.5, 0.5, 60) / 2)).float().repeat_interleave(256)
    other = (audio * gains).clamp(-1, 1)
    distances = [
        log_mel_distance(audio[0].numpy(), mel_projection(other, mel, config, n)[0].numpy(), config) for n in (0, 1, 5)
    ]
    assert distances[0] > 2.0 and distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.5 * distances[0]
    # noise has no phase of speech to keep: projected, it fits the mel far less closely
    noise = torch.from_numpy(rng.standard_normal(other.shape).astype(np.float32)) * 0.05
    noisy = log_mel_distance(audio[0].numpy(), mel_projection(noise, mel, config, 5)[0].numpy(), config)
    assert noisy > distances[2]


def test_bins_above_the_mel_s_fmax_are_left_alone():
    config = MelConfig()  # fmax 8 kHz at 22.05 kHz
    t = torch.arange(60 * 256) / 22050.0
    high = 0.1 * torch.sin(2 * np.pi * 10_000.0 * t)
    audio = speech() + high
    target = MelSpectrogram()(speech() * 0.5)  # every band asks for half the amplitude
    out = mel_projection(audio, target, config, 3)[0]
    spectrum = torch.fft.rfft(out[1024:-1024].double()).abs()
    before = torch.fft.rfft(audio[0, 1024:-1024].double()).abs()
    freqs = torch.fft.rfftfreq(out[1024:-1024].numel(), 1 / 22050.0)
    near = (freqs > 9_900) & (freqs < 10_100)
    assert spectrum[near].max() == pytest.approx(before[near].max().item(), rel=0.05)
    low = (freqs > 200) & (freqs < 4000)
    assert spectrum[low].square().sum() < 0.4 * before[low].square().sum()


def projected_in_chunks(audio, mel, config, iterations, seed):
    """The projection fed random pieces: mel chunks of 1-7 frames, each followed by a random share of
    the audio those frames allow (0 samples to all of it), then the rest and close."""
    rng = np.random.default_rng(seed)
    projector = MelProjector(config, iterations, batch=audio.shape[0])
    pieces, frames, samples = [], 0, 0
    while frames < mel.shape[2]:
        step = int(min(rng.integers(1, 8), mel.shape[2] - frames))
        projector.push_mel(mel[:, :, frames : frames + step])
        frames += step
        upto = int(rng.integers(samples, min(frames * config.hop_length, audio.shape[1]) + 1))
        pieces.append(projector.push(audio[:, samples:upto]))
        samples = upto
    pieces += [projector.push(audio[:, samples:]), projector.close()]
    assert all(piece.dtype == torch.float32 for piece in pieces)
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize(
    "config",
    [
        MelConfig(),
        MelConfig(center=True),
        MelConfig(pad_mode="replicate"),
        MelConfig(pad_mode="constant", n_fft=900, win_length=800),
    ],
    ids=["default", "centred", "replicate", "constant-n_fft-900-win-800"],
)
def test_a_streamed_projection_equals_the_whole_utterance_s_for_any_chunking(config):
    """Every frame is computed once per iteration with sums in a fixed order, so pieces of any size give
    the whole utterance's projection sample for sample (two independent streams in one batch)."""
    frames = 40
    length = (frames - 1) * 256 if config.center else frames * 256
    clean = speech(frames)[:, :length]
    mel = MelSpectrogram(config)(torch.cat([clean, clean.flip(1) * 0.5]))
    assert mel.shape == (2, 80, frames)
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal((2, length)).astype(np.float32))
    audio = (torch.cat([clean, clean]) + 0.02 * noise).clamp(-1, 1)
    whole = mel_projection(audio, mel, config, 6)
    assert whole.shape == audio.shape and not torch.allclose(whole, audio, atol=1e-3)
    for seed in range(3):
        assert torch.equal(projected_in_chunks(audio, mel, config, 6, seed), whole), seed
    assert torch.equal(mel_projection(audio[1:], mel[1:], config, 6), whole[1:])  # streams do not mix


@pytest.mark.parametrize(
    "config",
    [MelConfig(), MelConfig(center=True), MelConfig(pad_mode="constant", n_fft=900, win_length=800)],
    ids=["default", "centred", "constant-n_fft-900-win-800"],
)
def test_the_projector_agrees_with_the_plain_whole_signal_reference(config):
    """MelProjector (frame by frame, fixed-order band sums) against the plain projection (matrix
    products, index_add_ over the whole signal): the same to float64 rounding after 20 iterations."""
    frames = 40
    length = config.num_samples(frames)
    clean = speech(frames)[:, :length]
    mel = MelSpectrogram(config)(clean)
    noise = torch.from_numpy(np.random.default_rng(2).standard_normal((1, length)).astype(np.float32))
    audio = (clean + 0.05 * noise).clamp(-1, 1)
    fast, reference = mel_projection(audio, mel, config, 20), reference_mel_projection(audio, mel, config, 20)
    assert not torch.allclose(reference, audio, atol=1e-3)  # the projection moved it
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=0)


def test_a_streamed_projection_runs_its_lag_behind_and_no_further():
    config = MelConfig()
    # each iteration needs n_fft - hop = 768 samples (3 frames) past the last; rounded to frames, 20 of
    # them hold back 60.5 frames (15,488 samples)
    assert projection_lag_samples(config, 0) == 0 and projection_lag_samples(config, 1) == 896
    assert projection_lag_samples(config, 20) == 15_488
    frames, iterations = 60, 5
    lag = projection_lag_samples(config, iterations)
    audio = speech(frames)
    mel = MelSpectrogram()(audio)
    whole = mel_projection(audio, mel, config, iterations)
    projector = MelProjector(config, iterations)
    assert projector.lag_samples == lag
    projector.push_mel(mel)
    out = []
    for frame in range(frames):
        out.append(projector.push(audio[:, frame * 256 : (frame + 1) * 256]))
        done = sum(piece.shape[1] for piece in out)
        assert done == max(0, (frame + 1) * 256 - lag), frame
    assert torch.equal(torch.cat([*out, projector.close()], dim=1), whole)


def test_a_streamed_projection_refuses_what_the_whole_one_refuses_and_passes_short_audio_through():
    config = MelConfig()
    audio, mel = speech(10), MelSpectrogram()(speech(10))
    projector = MelProjector(config, 2)
    projector.push_mel(mel)
    projector.push(audio[:, :-5])
    with pytest.raises(ValueError, match="gives 2560 samples, got audio of 2555"):
        projector.close()
    with pytest.raises(RuntimeError, match="closed"):
        projector.push(audio)
    with pytest.raises(ValueError, match="mel \\[1, 80, frames\\]"):
        MelProjector(config, 2).push_mel(mel[:, :40])
    with pytest.raises(ValueError, match=">= 0"):
        MelProjector(config, -1)
    # one frame (256 samples) is no longer than the edge padding (384): nothing to frame, nothing changed
    short, short_mel = speech(1), torch.randn(1, 80, 1) - 5
    assert mel_projection(short, short_mel, config, 3) is short
    projector = MelProjector(config, 3)
    projector.push_mel(short_mel)
    assert projector.push(short).shape == (1, 0) and torch.equal(projector.close(), short)


def test_bad_inputs_are_refused():
    config = MelConfig()
    audio, mel = speech(10), MelSpectrogram()(speech(10))
    with pytest.raises(ValueError, match="gives 2560 samples"):
        mel_projection(audio[:, :-1], mel, config, 1)
    with pytest.raises(ValueError, match=">= 0"):
        mel_projection(audio, mel, config, -1)
    with pytest.raises(ValueError, match="n_mels|same batch"):
        mel_projection(audio, mel[:, :40], config, 1)
    assert torch.allclose(mel_magnitude(torch.log(torch.tensor([0.5])), config), torch.tensor([0.5]).double())


def test_load_takes_the_checkpoint_s_default_and_a_call_can_override_it(tmp_path, tiny_wavernn):
    plain = save_checkpoint(tmp_path / "plain.safetensors", tiny_wavernn, 3)
    projected = save_checkpoint(tmp_path / "p.safetensors", tiny_wavernn, 3, synthesis={"mel_projection": 4})
    assert vocoders.load(plain).mel_projection == 0
    voc = vocoders.load(projected)
    assert voc.mel_projection == 4 and vocoders.load(projected, mel_projection=0).mel_projection == 0
    mel = MelSpectrogram()(speech(6))[0]
    raw = voc(mel, seed=3, mel_projection=0)
    assert raw.shape == (6 * 256,)
    expected = mel_projection(raw[None], mel[None], voc.mel_config, 4)[0]
    assert torch.equal(voc(mel, seed=3), expected) and not torch.equal(raw, expected)
    bad = save_checkpoint(tmp_path / "bad.safetensors", tiny_wavernn, 3, synthesis={"mel_projection": -2})
    with pytest.raises(CheckpointError, match="bad.safetensors: bad synthesis record"):
        vocoders.load(bad)
    with pytest.raises(ValueError, match="mel_projection"):
        vocoders.load(plain, mel_projection=1.5)


def _evaluate(tmp_path, checkpoint, *extra):
    """Run `python -m vocoders.evaluate` on one utterance of the bundled speech; returns the report folder."""
    import soundfile as sf

    folder = tmp_path / "corpus"
    if not folder.is_dir():
        folder.mkdir()
        sf.write(folder / "speech.wav", speech(30)[0].numpy(), 22050)
    out = tmp_path / f"report{len(list(tmp_path.glob('report*')))}"
    args = [str(checkpoint), str(folder), "-o", str(out), "--no-progress", "--no-dnsmos", "--split", "all"]
    assert evaluate.main([*args, "--cache-dir", str(tmp_path / "cache"), "--griffin-lim-iters", "2", *extra]) == 0
    return out


def test_the_evaluation_reports_the_projection_it_used(tmp_path, tiny_wavernn):
    import json

    checkpoint = save_checkpoint(tmp_path / "p.safetensors", tiny_wavernn, 3, synthesis={"mel_projection": 2})
    projected = json.loads((_evaluate(tmp_path, checkpoint) / "report.json").read_text())
    raw = json.loads((_evaluate(tmp_path, checkpoint, "--mel-projection", "0") / "report.json").read_text())
    assert projected["mel_projection"] == 2 and raw["mel_projection"] == 0
    metric = "log_mel_distance_db"
    assert projected["summary"]["vocoder"][metric]["mean"] < raw["summary"]["vocoder"][metric]["mean"]


def test_the_ship_tool_records_the_projection_on_the_file_and_the_card(tmp_path, tiny_wavernn, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import ship_pretrained

    monkeypatch.setattr(ship_pretrained, "pretrained_dir", lambda: tmp_path / "shipped")
    source = save_checkpoint(tmp_path / "run.safetensors", tiny_wavernn, 5)
    report = _evaluate(tmp_path, source, "--mel-projection", "7")
    args = [str(source), "--name", "t", "--report", str(report), "--cpu-hours", "0.1", "--command", "c"]
    assert ship_pretrained.main([*args, "--mel-projection", "7"]) == 0
    assert read_checkpoint(tmp_path / "shipped" / "t.safetensors").meta["synthesis"] == {"mel_projection": 7}
    assert "7 iterations of the mel projection" in (tmp_path / "shipped" / "t.md").read_text()
    assert vocoders.load(tmp_path / "shipped" / "t.safetensors").mel_projection == 7
