"""The CLI as a user runs it: a real subprocess, real files."""

import subprocess
import sys

import numpy as np
import soundfile as sf
import torch

from vocoders import MelSpectrogram

from .conftest import tone


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "vocoders.synthesize", *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def good_mel(frames):
    return MelSpectrogram()(torch.from_numpy(tone(frames * 256 / 22050 + 0.05)))[:, :frames]


def test_mels_audio_and_folders_to_wav(tmp_path, tiny_checkpoint):
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    np.save(inputs / "a.npy", good_mel(3).numpy())
    torch.save(good_mel(2), inputs / "nested" / "b.pt")
    sf.write(tmp_path / "speech.flac", tone(0.1, 16000), 16000)  # resampled to the checkpoint rate
    out = tmp_path / "out"
    result = run_cli(tiny_checkpoint, inputs, tmp_path / "speech.flac", "-o", out, "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 WAV" in result.stdout
    expected = {"a.wav": 3 * 256, "nested/b.wav": 2 * 256, "speech.wav": (2205 // 256) * 256}
    for name, frames in expected.items():
        info = sf.info(out / name)
        assert info.samplerate == 22050 and info.subtype == "PCM_16" and info.frames == frames, name
    again = tmp_path / "again"
    run_cli(tiny_checkpoint, inputs / "a.npy", "-o", again, "--seed", "1")
    assert np.array_equal(sf.read(out / "a.wav")[0], sf.read(again / "a.wav")[0])


def test_bad_inputs_one_line_each_others_still_done(tmp_path, tiny_checkpoint):
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.save(inputs / "good.npy", good_mel(2).numpy())
    np.save(inputs / "transposed.npy", good_mel(2).numpy().T)
    np.save(inputs / "nan.npy", np.full((80, 2), np.nan, dtype=np.float32))
    np.save(inputs / "bands.npy", np.zeros((64, 2), dtype=np.float32))
    np.save(inputs / "empty.npy", np.zeros((80, 0), dtype=np.float32))
    np.save(inputs / "decibels.npy", np.full((80, 2), -80.0, dtype=np.float32))
    (inputs / "garbage.wav").write_bytes(b"not a wav")
    (inputs / "garbage.npy").write_bytes(b"not an npy")
    out = tmp_path / "out"
    result = run_cli(tiny_checkpoint, inputs, tmp_path / "missing.npy", "-o", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 8, result.stderr
    for name in ("transposed", "nan", "bands", "empty", "decibels", "garbage.wav", "garbage.npy", "missing.npy"):
        assert sum(name in line for line in lines) == 1, name
    assert sorted(p.name for p in out.iterdir()) == ["good.wav"]


def test_bad_checkpoint_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    np.save(tmp_path / "m.npy", np.zeros((80, 2), dtype=np.float32))
    result = run_cli(bad, tmp_path / "m.npy", "-o", tmp_path / "out")
    assert result.returncode == 2 and "bad.safetensors" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_console_script_is_installed(tmp_path, tiny_checkpoint):
    import shutil

    exe = shutil.which("vocoders-synthesize") or str(
        __import__("pathlib").Path(sys.executable).with_name("vocoders-synthesize")
    )
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "CHECKPOINT" in result.stdout.upper()


def test_kill_during_synthesis_leaves_no_partial_wav(tmp_path, tiny_checkpoint):
    import os
    import signal
    import time

    inputs = tmp_path / "in"
    inputs.mkdir()
    np.save(inputs / "a_short.npy", good_mel(1).numpy())
    np.save(inputs / "b_long.npy", np.repeat(good_mel(2).numpy(), 400, axis=1))  # minutes of reference sampling
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vocoders.synthesize",
            str(tiny_checkpoint),
            str(inputs),
            "-o",
            str(out),
            "--no-progress",
            "--engine",
            "reference",  # slow enough that the long file is still being generated at the kill
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "a_short.wav").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the long file
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sf.info(out / "a_short.wav").frames == 256  # the finished file is complete
    assert [p.name for p in out.glob("*.wav")] == ["a_short.wav"]  # no partial output for the other


def test_set_changes_a_generation_setting_and_refuses_what_does_not_fit(tmp_path, tiny_lpcnet):
    from vocoders.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "lpcnet.safetensors", tiny_lpcnet, step=7)
    np.save(tmp_path / "m.npy", good_mel(3).numpy())
    plain, changed = tmp_path / "plain", tmp_path / "changed"
    assert run_cli(checkpoint, tmp_path / "m.npy", "-o", plain).returncode == 0
    result = run_cli(checkpoint, tmp_path / "m.npy", "-o", changed, "--set", "voiced_temperature=0.5")
    assert result.returncode == 0, result.stderr
    assert not np.array_equal(sf.read(plain / "m.wav")[0], sf.read(changed / "m.wav")[0])
    for bad, says in (
        ("hidden_size=8", "weights do not fit"),
        ("no_such_setting=1", "cannot build"),
        ("x", "NAME=VALUE"),
    ):
        result = run_cli(checkpoint, tmp_path / "m.npy", "-o", tmp_path / "bad", "--set", bad)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, bad
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "bad").exists()
