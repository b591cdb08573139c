"""Training end to end: the Hydra config, checkpoints, validation audio, resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import soundfile as sf
import torch
from hydra import compose, initialize_config_module

import vocoders
from vocoders.checkpoint import load_training_state, read_checkpoint
from vocoders.training import train


def tiny_cfg(tmp_path, *overrides):
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=["debug=tiny", f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", *overrides],
        )


def test_tiny_training_run_writes_everything(tmp_path):
    result = train(tiny_cfg(tmp_path))
    run = tmp_path / "run"
    assert result.step == 4 and result.run_dir == run
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [
        "step-00000002.safetensors",
        "step-00000002.state.pt",
        "step-00000004.safetensors",
        "step-00000004.state.pt",
    ]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4]
    assert any(r["kind"] == "valid" and r["loss"] > 0 for r in records)
    info = sf.info(result.validation_audio)
    assert info.samplerate == 22050 and info.frames > 0
    voc = vocoders.load(result.checkpoint)
    assert voc.step == 4 and voc.model.hidden_size == 32
    assert read_checkpoint(result.checkpoint).meta["recipe"] == "default"


def test_training_on_a_folder_with_bad_files(tmp_path, sample_dir):
    data = tmp_path / "corpus"
    (data / "deep").mkdir(parents=True)
    for p in sorted((sample_dir / "wavs").glob("*.flac"))[:3]:
        (data / "deep" / p.name).write_bytes(p.read_bytes())
    (data / "broken.ogg").write_bytes(b"junk")
    result = train(tiny_cfg(tmp_path, f"data.path={data}"))
    assert result.step == 4


def test_resume_after_kill_minus_9(tmp_path):
    run = tmp_path / "run"
    base = [
        sys.executable, "-m", "vocoders.train", "debug=tiny", f"run_dir={run}", f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.checkpoint_every=3", "trainer.val_every=100000", "trainer.log_every=1",
    ]  # fmt: skip
    proc = subprocess.Popen([*base, "trainer.max_steps=100000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    target = run / "checkpoints" / "step-00000009.safetensors"
    while not target.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert target.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name[5:13]) for p in (run / "checkpoints").glob("step-*.state.pt"))
    last = saved[-1]
    for step in saved:  # every checkpoint left behind is complete and loadable
        read_checkpoint(run / "checkpoints" / f"step-{step:08d}.safetensors")
        assert load_training_state(run / "checkpoints" / f"step-{step:08d}.state.pt")["step"] == step
    end = last + 2
    result = subprocess.run([*base, f"trainer.max_steps={end}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"at step {last}" in (run / "train.log").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    after_kill = [r["step"] for r in records if r["kind"] == "train"][-2:]
    assert after_kill == [last + 1, last + 2]
    state = load_training_state(run / "checkpoints" / f"step-{end:08d}.state.pt")
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {float(end)}  # the optimizer's moments continued, not restarted
    saved_seconds = load_training_state(run / "checkpoints" / f"step-{last:08d}.state.pt")["train_seconds"]
    train = [r for r in records if r["kind"] == "train"]
    assert 0 < saved_seconds <= train[-2]["train_seconds"] <= train[-1]["train_seconds"]  # time adds up over sessions


def test_non_editable_install_trains_from_any_directory(tmp_path):
    """`pip install .` (not editable) into a fresh venv: the Hydra tree ships inside the package."""
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # Reuse this environment's dependencies (torch etc.) without its editable vocoders: a path in a
    # .pth file joins sys.path, but .pth files inside it (the editable hook) are not processed.
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    Path(purelib, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(repo)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(py), "-c", "import vocoders, sys; print(vocoders.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the installed copy, not the clone
    result = subprocess.run(
        [str(py), "-m", "vocoders.train", "debug=tiny", "run_dir=out", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=elsewhere, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vocoded held-out utterance" in result.stdout
    assert (elsewhere / "out" / "checkpoints" / "last.safetensors").is_file()
    shipped = subprocess.run(  # the trained checkpoint ships as package data: loads by name, no clone needed
        [str(py), "-c", "import vocoders; v = vocoders.load('cs-male-22k'); print(v.checkpoint_path, v.step)"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    assert str(venv) in shipped.stdout and shipped.stdout.split()[-1] != "0"


def _hop_aligned_start(segment, whole, hop):
    """The first start (in frames) at which `segment` is a piece of `whole`, or None."""
    for start in range(len(whole) // hop):
        piece = whole[start * hop : start * hop + len(segment)]
        if len(piece) == len(segment) and (piece == segment).all():
            return start
    return None


def test_validation_segments_cover_whole_utterances_and_stay_fixed(tmp_path):
    """Validation draws its segments over the whole utterance, as training does, not from the silent starts."""
    from vocoders.training import Trainer

    trainer = Trainer(tiny_cfg(tmp_path, "data.valid_segments=48"))
    mels, audios = trainer.validation_segments()
    assert len(mels) == len(audios) == 48
    assert trainer.validation_segments()[1] is audios  # drawn once: every validation sees the same segments
    hop = trainer.model.hop_length
    starts = []
    for i, audio in enumerate(audios):
        feats = trainer.valid_features[i % len(trainer.valid_features)]
        start = _hop_aligned_start(audio.numpy(), feats.audio.astype("float32") / 32768.0, hop)
        assert start is not None, "a validation segment is not a hop-aligned piece of its utterance"
        starts.append(start)
    assert sum(s > 0 for s in starts) > len(starts) // 2
    assert torch.equal(Trainer(tiny_cfg(tmp_path, "data.valid_segments=48")).validation_segments()[1][5], audios[5])
