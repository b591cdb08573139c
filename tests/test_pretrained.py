"""The shipped checkpoint: loads by short name and by path, ships as package data, and its engines
reproduce its training forward pass; `python -m vocoders.demo` vocodes a held-out utterance with it."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

import vocoders
from vocoders import pretrained
from vocoders.audio import read_audio
from vocoders.checkpoint import CheckpointError
from vocoders.diagnose import Utterance, conditioning_gap, cpu_engines, logit_agreement

from .conftest import SAMPLE

NAME = "cs-male-22k"


@pytest.fixture(scope="module")
def shipped():
    return vocoders.load(NAME)


def held_out(voc, ids=("briefcase_kuf-v-hod", "briefcase_kuf-v-restart")):
    out = []
    for uid in ids:
        audio, _ = read_audio(SAMPLE / "wavs" / f"{uid}.flac", voc.sample_rate)
        frames = len(audio) // voc.hop_length
        audio = audio[: frames * voc.hop_length]
        out.append(Utterance(uid, audio, voc.mel(torch.from_numpy(audio)).numpy()))
    return out


def test_loads_by_short_name_and_by_path(shipped):
    assert NAME in pretrained.available()
    path = pretrained.pretrained_dir() / f"{NAME}.safetensors"
    assert path.stat().st_size <= 20 * 1024 * 1024
    by_path = vocoders.load(path)
    assert by_path.step == shipped.step > 0
    for a, b in zip(shipped.model.state_dict().values(), by_path.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    card = pretrained.model_card(NAME)
    for fact in ("steps", "CPU hours", "licence", "Griffin-Lim", "PESQ", "STOI", "DNSMOS"):
        assert fact in card


def test_unknown_names_are_refused_with_the_shipped_ones_listed():
    with pytest.raises(CheckpointError, match=f"no such checkpoint file, nor a shipped model name.*{NAME}"):
        vocoders.load("no-such-voice")
    with pytest.raises(FileNotFoundError, match="no shipped model"):
        pretrained.model_card("no-such-voice")


def test_a_file_of_the_same_name_wins(tmp_path, monkeypatch, tiny_checkpoint):
    monkeypatch.chdir(tiny_checkpoint.parent)
    (tiny_checkpoint.parent / NAME).write_bytes(tiny_checkpoint.read_bytes())
    assert vocoders.load(NAME).step == 7  # the tiny checkpoint, not the shipped one


def test_engines_reproduce_the_training_forward_pass_of_the_trained_model(shipped):
    """Trained (not random) weights: every CPU engine's teacher-forced logits equal the training
    forward pass on a whole held-out utterance, its first frames and the upsampler's alignment included."""
    utterance = held_out(shipped)[0]
    engines = cpu_engines(shipped.model)
    assert "cpu" in engines and "reference" in engines
    for engine in engines:
        frames = 12 if engine == "reference" else None  # the reference loop is slow: its first 3072 samples
        row = logit_agreement(shipped.model, utterance, engine, frames)
        # Float32 sums in another order, over 56k recurrent steps: measured 1.2e-3 at most (the cpu
        # engine, logits up to 92), 7e-5 in the first frame, 99.99% of draws equal; the draws must agree.
        assert row["max_abs"] <= 1e-4 * row["max_logit"] + 1e-3, row
        assert row["first_frame_max_abs"] <= 2e-4, row
        assert row["draw_agreement"] >= 0.999, row


def test_the_shipped_model_projects_its_output_onto_the_mel_by_default(shipped):
    """The default mel projection brings a held-out utterance's vocoded mel far closer to the truth's
    than the network's own audio, and `mel_projection=0` gives that audio back."""
    from vocoders.metrics import log_mel_distance

    assert shipped.mel_projection == 20
    utterance = held_out(shipped)[1]
    mel = torch.from_numpy(utterance.mel[:, :120])
    truth = utterance.audio[: 120 * shipped.hop_length]
    raw = shipped(mel, seed=0, mel_projection=0)
    projected = shipped(mel, seed=0)
    assert projected.shape == raw.shape == (120 * shipped.hop_length,)
    assert torch.equal(projected, shipped.project(raw[None], mel[None])[0])
    raw_distance = log_mel_distance(truth, raw.numpy(), shipped.mel_config)
    assert log_mel_distance(truth, projected.numpy(), shipped.mel_config) < 0.5 * raw_distance


def test_the_shipped_model_streams_its_projected_audio(shipped):
    """A stream of the shipped model projects as it goes: 4-frame chunks give the whole utterance's
    projected audio sample for sample; its first samples come once 64 frames have arrived (the network's
    3 frames of look-ahead and the projection's 15,488 samples, 60.5 frames)."""
    assert shipped.lookahead_frames == 3 + 61
    mel = torch.from_numpy(held_out(shipped)[0].mel[:, :100])
    whole = shipped(mel, seed=2)
    stream, pieces, first = shipped.stream(seed=2), [], None
    for start in range(0, 100, 4):
        stream.push(mel[:, start : start + 4])
        pieces.append(stream.pull())
        if first is None and pieces[-1].numel():
            first = start + 4
    assert first == 64
    assert torch.equal(torch.cat([*pieces, stream.close()]), whole)


def test_the_trained_model_uses_its_conditioning(shipped):
    gap = conditioning_gap(shipped.model, held_out(shipped), segment_frames=8)
    assert gap["zeroed"] > gap["true"] + 0.1 and gap["shuffled"] > gap["true"] + 0.1, gap


def test_demo_vocodes_a_held_out_utterance(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "vocoders.demo", "-o", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "held out" in done.stdout and NAME in done.stdout
    result = json.loads((out / "demo.json").read_text())
    row = result["utterances"][0]
    info = sf.info(row["wav"])
    truth = sf.info(SAMPLE / "wavs" / f"{row['utterance']}.flac")
    assert info.samplerate == 22050 and info.frames == truth.frames // 256 * 256
    assert (out / f"{row['utterance']}.png").stat().st_size > 10_000
    assert np.isfinite(row["log_mel_distance_db"]) and 0.0 <= row["vuv_error"] <= 1.0


def test_cli_vocodes_with_the_shipped_model_by_name(tmp_path):
    source = SAMPLE / "wavs" / "briefcase_kuf-v-restart.flac"
    done = subprocess.run(
        [sys.executable, "-m", "vocoders.synthesize", NAME, str(source), "-o", str(tmp_path), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    written = sf.info(tmp_path / "briefcase_kuf-v-restart.wav")
    assert written.samplerate == 22050 and written.frames == sf.info(source).frames // 256 * 256


def test_training_segments_see_the_conditioning_inference_computes(shipped):
    """Frame-to-sample alignment: the per-sample conditioning of a training segment (cut with its mel
    context by the dataset) equals the same samples' conditioning computed from the whole utterance
    as inference pads it, for segments at the start, the middle and the end."""
    from vocoders.data import Features, SegmentDataset
    from vocoders.data import Utterance as Entry

    model = shipped.model
    utterance = held_out(shipped)[0]
    pcm = np.round(utterance.audio * 32768).clip(-32768, 32767).astype(np.int16)
    feats = Features(Entry(utterance.id, SAMPLE), pcm, utterance.mel)
    segments = SegmentDataset([feats], segment_frames=4, context=model.mel_context, hop=model.hop_length)
    with torch.no_grad():
        whole = model.upsample(model.conditioning(model.pad_mel(torch.from_numpy(utterance.mel).unsqueeze(0))))
        for start in (0, feats.frames // 2, feats.frames - 4):
            mel, audio = segments.segment(feats, start)
            piece = model.upsample(model.conditioning(mel.unsqueeze(0)))
            hop = model.hop_length
            assert torch.allclose(piece, whole[:, start * hop : (start + 4) * hop], rtol=1e-5, atol=1e-4)
            assert torch.equal(audio, torch.from_numpy(pcm[start * hop : (start + 4) * hop].astype(np.float32) / 32768))
