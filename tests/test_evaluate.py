"""`python -m vocoders.evaluate` end to end on a tiny checkpoint and a folder of short files."""

import json

import numpy as np
import pytest
import soundfile as sf

from vocoders import evaluate, metrics
from vocoders.checkpoint import model_from_checkpoint, read_checkpoint
from vocoders.engines import make_engine

from .conftest import SAMPLE, tone


@pytest.fixture
def corpus(tmp_path):
    """Two short utterances: a tone and a slice of real speech."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    sf.write(folder / "tone.wav", tone(0.25, freq=180.0), 22050)
    speech, rate = sf.read(sorted((SAMPLE / "wavs").glob("*.flac"))[0], dtype="float32")
    sf.write(folder / "speech.wav", speech[rate // 2 : rate // 2 + 6000], rate)
    return folder


def run(tmp_path, checkpoint, data, *extra):
    out = tmp_path / "report"
    args = [str(checkpoint), str(data), "-o", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    return evaluate.main([*args, "--griffin-lim-iters", "8", *extra]), out


def test_report_is_written_with_all_its_files(tmp_path, tiny_checkpoint, corpus, capsys):
    code, out = run(tmp_path, tiny_checkpoint, corpus, "--split", "all", "--no-dnsmos")
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    auto_engine = make_engine("auto", model_from_checkpoint(read_checkpoint(tiny_checkpoint))).name
    assert report["utterances"] == 2 and report["engine"] == auto_engine and report["step"] == 7
    ids = sorted(row["id"] for row in report["per_utterance"])
    assert ids == ["speech", "tone"]
    for row in report["per_utterance"]:
        for system in ("vocoder", "griffin_lim"):
            assert row[system]["log_mel_distance_db"] > 0 and row[system]["mcd_db"] > 0
    summary = report["summary"]
    # An untrained vocoder is noise: Griffin-Lim from the same mel must be far closer to the truth.
    lmd = {s: summary[s]["log_mel_distance_db"] for s in ("vocoder", "griffin_lim")}
    assert lmd["griffin_lim"]["mean"] < lmd["vocoder"]["mean"]
    assert lmd["vocoder"]["n"] == 2 and lmd["vocoder"]["ci95_low"] <= lmd["vocoder"]["mean"]
    table = (out / "report.md").read_text()
    assert "| metric | vocoder | Griffin-Lim | ground truth | better |" in table
    assert "log-mel distance" in table and "MCD" in table
    for name in ("tone", "speech"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        for system in ("vocoder", "griffin_lim"):
            info = sf.info(out / "audio" / f"{name}_{system}.wav")
            assert info.samplerate == 22050
    assert (out / "summary.png").stat().st_size > 1000
    assert sf.info(out / "audio" / "tone_vocoder.wav").frames == (5512 // 256) * 256


class LoudnessScorer:
    """Stands in for DNSMOS (seconds per call) to test the wiring: 1 + 4 * RMS, in DNSMOS's range."""

    def __call__(self, audio, sample_rate):
        return {"dnsmos_ovrl": 1.0 + 4.0 * float(np.sqrt(np.mean(np.square(audio))))}


def test_non_intrusive_scores_include_the_ground_truth(tmp_path, tiny_checkpoint, corpus, monkeypatch):
    monkeypatch.setattr(metrics, "DNSMOS", LoudnessScorer)
    monkeypatch.setitem(metrics.REQUIREMENTS, "dnsmos", ())
    code, out = run(tmp_path, tiny_checkpoint, corpus, "--split", "all", "--limit", "1", "--no-audio")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    row = report["per_utterance"][0]
    truth = np.asarray(sf.read(corpus / f"{row['id']}.wav", dtype="float32")[0])
    frames = len(truth) // 256
    expected = 1.0 + 4.0 * float(np.sqrt(np.mean(np.square(truth[: frames * 256]))))
    assert row["ground_truth"]["dnsmos_ovrl"] == pytest.approx(expected, abs=1e-3)
    assert set(row["vocoder"]) >= {"dnsmos_ovrl", "log_mel_distance_db"}
    assert "| DNSMOS OVRL ↑ |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_real_dnsmos_in_the_report(tmp_path, tiny_checkpoint, corpus):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    code, out = run(tmp_path, tiny_checkpoint, corpus, "--split", "all", "--limit", "1", "--no-audio")
    assert code == 0
    summary = json.loads((out / "report.json").read_text())["summary"]
    for system in ("vocoder", "griffin_lim", "ground_truth"):
        assert 1.0 <= summary[system]["dnsmos_ovrl"]["mean"] <= 5.0


def test_missing_extras_are_named_and_the_rest_is_reported(tmp_path, tiny_checkpoint, corpus, capsys, monkeypatch):
    monkeypatch.setitem(metrics.REQUIREMENTS, "pesq", ("no_such_package_pesq",))
    monkeypatch.setitem(metrics.REQUIREMENTS, "dnsmos", ("no_such_package_dnsmos",))
    monkeypatch.setitem(metrics.REQUIREMENTS, "figures", ("no_such_package_plots",))
    code, out = run(tmp_path, tiny_checkpoint, corpus, "--split", "all", "--limit", "1", "--no-audio")
    err = capsys.readouterr().err
    assert code == 0, err
    assert "PESQ, DNSMOS skipped" in err and "pip install 'vocoders[eval]'" in err
    assert "figures skipped" in err
    report = json.loads((out / "report.json").read_text())
    row = report["per_utterance"][0]["vocoder"]
    assert "log_mel_distance_db" in row and "mcd_db" in row and "vuv_error" in row
    assert "pesq_wb" not in row and "dnsmos_ovrl" not in row
    assert any("vocoders[eval]" in note for note in report["notes"])
    assert "vocoders[eval]" in (out / "report.md").read_text()
    assert not (out / "summary.png").exists() and not (out / "figures").exists()


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_checkpoint, corpus, capsys):
    code, _ = run(tmp_path, tmp_path / "missing.safetensors", corpus)
    assert code == 2 and "missing.safetensors" in capsys.readouterr().err
    code, _ = run(tmp_path, tiny_checkpoint, tmp_path / "nowhere")
    assert code == 2 and "nowhere" in capsys.readouterr().err
    code, _ = run(tmp_path, tiny_checkpoint, corpus, "--split", "test")
    err = capsys.readouterr().err
    assert code == 2 and "no utterances in split 'test'" in err and "Traceback" not in err


def test_a_manifest_split_is_evaluated(tmp_path, tiny_checkpoint, corpus):
    manifest = corpus / "metadata.csv"
    manifest.write_text("id|split\ntone|train\nspeech|valid\n")
    (corpus / "wavs").mkdir()
    for name in ("tone", "speech"):
        (corpus / f"{name}.wav").rename(corpus / "wavs" / f"{name}.wav")
    code, out = run(tmp_path, tiny_checkpoint, manifest, "--no-dnsmos", "--no-audio")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [row["id"] for row in report["per_utterance"]] == ["speech"]
    assert np.isfinite(report["summary"]["griffin_lim"]["mcd_db"]["mean"])


def test_batched_vocoding_keeps_each_utterance_as_if_alone(tiny_checkpoint):
    import torch

    import vocoders
    from vocoders.features import MelSpectrogram

    voc = vocoders.load(tiny_checkpoint)
    long = MelSpectrogram()(torch.from_numpy(tone(5 * 256 / 22050, freq=300.0))).numpy()[:, :5]
    short = MelSpectrogram()(torch.from_numpy(tone(3 * 256 / 22050 + 0.01))).numpy()[:, :3]
    out = dict(evaluate.vocode_batches(voc, [long, short], batch_size=2, seed=4))
    assert out[0].shape == (5 * 256,) and out[1].shape == (3 * 256,)
    # The shortest mel is row 0 of the batch, so it draws the same noise as alone: identical samples.
    np.testing.assert_array_equal(out[1], voc(short, seed=4).numpy())


def test_vocode_batches_passes_the_temperature(tiny_wavernn):
    """Temperature 0 is argmax: the noise seed no longer matters; at 1 it does."""
    from vocoders.evaluate import vocode_batches
    from vocoders.inference import Vocoder

    voc = Vocoder(tiny_wavernn, engine="reference")
    mels = [np.random.default_rng(0).standard_normal((80, 3)).astype(np.float32) - 5]
    greedy = [dict(vocode_batches(voc, mels, 1, seed, temperature=0.0))[0] for seed in (0, 1)]
    sampled = [dict(vocode_batches(voc, mels, 1, seed))[0] for seed in (0, 1)]
    assert np.array_equal(*greedy) and not np.array_equal(*sampled)
