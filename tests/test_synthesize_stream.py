"""`vocoders-synthesize --stream` as a TTS pipeline runs it: a real subprocess fed through a pipe or a growing file."""

import subprocess
import sys
import time

import numpy as np
import soundfile as sf
import torch

from vocoders.inference import Vocoder, load


def good_frames(frames: int, seed: int = 0) -> np.ndarray:
    """[frames, n_mels] float32: the frame-major layout the stream reads."""
    return (np.random.default_rng(seed).standard_normal((frames, 80)) - 5).astype(np.float32)


def start(checkpoint, source, out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "vocoders.synthesize", str(checkpoint), "--stream", str(source), "-o", str(out),
         "--engine", "reference", "--seed", "4", *extra],
        stdin=subprocess.PIPE if source == "-" else None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for_samples(path, at_least: int, seconds: float = 60.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            try:
                frames = sf.info(str(path)).frames
            except RuntimeError:  # header being written
                frames = 0
            if frames >= at_least:
                return frames
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {at_least} samples")


def test_pipe_audio_grows_before_the_input_ends_and_equals_whole_synthesis(tmp_path, tiny_wavernn):
    from vocoders.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", tiny_wavernn, step=1)
    frames = good_frames(10)
    out = tmp_path / "out.wav"
    proc = start(checkpoint, "-", out)
    header = np.lib.format.header_data_from_array_1_0(frames)
    np.lib.format.write_array_header_1_0(proc.stdin, {**header, "shape": (0, 80)})  # length not known yet
    proc.stdin.write(frames[:6].tobytes())
    proc.stdin.flush()
    lookahead = tiny_wavernn.lookahead_frames
    grown = wait_for_samples(out, (6 - lookahead) * 256)  # audio on disk while the input is still open
    assert proc.poll() is None and grown < 10 * 256
    proc.stdin.write(frames[6:].tobytes())
    proc.stdin.close()
    proc.wait(timeout=120)
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr.decode()
    audio, rate = sf.read(str(out), dtype="int16")
    assert rate == 22050 and audio.shape == (10 * 256,)
    whole = Vocoder(load(checkpoint).model, engine="reference")(torch.from_numpy(frames.T.copy()), seed=4)
    from vocoders.audio import float_to_int16

    assert np.array_equal(audio, float_to_int16(whole.numpy()))


def test_growing_npy_file_ends_at_its_final_header_and_bad_frames_are_refused(tmp_path, tiny_wavernn):
    import re

    from vocoders.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", tiny_wavernn, step=1)
    frames = good_frames(8, seed=1)
    frames[6] = np.nan
    source, out = tmp_path / "mel.npy", tmp_path / "out.wav"
    with open(source, "wb") as handle:
        header = np.lib.format.header_data_from_array_1_0(frames)
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": (0, 80)})
        handle.write(frames[:5].tobytes())
        handle.flush()
        proc = start(checkpoint, source, out, "--stream-timeout", "30")
        wait_for_samples(out, (5 - tiny_wavernn.lookahead_frames) * 256)  # it follows the file
        handle.write(frames[5:7].tobytes())  # frame 6 is NaN
        handle.flush()
        time.sleep(0.5)
        handle.write(frames[7:].tobytes())
        handle.seek(0)
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": (8, 80)})  # the writer is done
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    errors = stderr.decode().strip().splitlines()
    assert len(errors) == 1 and "mel.npy: frames 5.." in errors[0] and "NaN" in errors[0], errors
    first, last = map(int, re.search(r"frames (\d+)\.\.(\d+)", errors[0]).groups())
    assert sf.info(str(out)).frames == (8 - (last - first + 1)) * 256  # the refused chunk skipped, the rest streamed


def test_stream_refuses_a_wrong_band_count_in_the_header(tmp_path, tiny_wavernn):
    from vocoders.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", tiny_wavernn, step=1)
    source = tmp_path / "mel.npy"
    np.save(source, np.zeros((4, 64), dtype=np.float32))
    proc = start(checkpoint, source, tmp_path / "out.wav")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stderr.decode().strip() == f"error: {source}: stream needs shape [frames, n_mels=80], got (4, 64)"


def test_raw_frames_on_stdin_and_a_torn_last_frame(tmp_path, tiny_wavernn):
    from vocoders.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "tiny.safetensors", tiny_wavernn, step=1)
    out = tmp_path / "out.wav"
    proc = start(checkpoint, "-", out)
    proc.stdin.write(good_frames(5).tobytes() + b"\x00\x01\x02")  # no header; 3 bytes of a sixth frame
    proc.stdin.close()
    proc.wait(timeout=120)
    errors = proc.stderr.read().decode().strip().splitlines()
    assert proc.returncode == 1 and errors == ["error: stdin: 3 trailing bytes do not make a whole frame"]
    assert sf.info(str(out)).frames == 5 * 256  # the whole frames are all there


def test_a_projecting_checkpoint_streams_projected_audio_equal_to_whole_synthesis(tmp_path, tiny_wavernn):
    from vocoders.audio import float_to_int16
    from vocoders.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "p.safetensors", tiny_wavernn, step=1, synthesis={"mel_projection": 2})
    frames = good_frames(16)
    out = tmp_path / "out.wav"
    proc = start(checkpoint, "-", out)
    proc.stdin.write(frames.tobytes())
    proc.stdin.close()
    proc.wait(timeout=120)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 0, stderr
    # the network's 3 frames and the projection's 7 (2 iterations: 1,664 samples)
    assert "2 iterations of the mel projection: audio runs 10 frames behind the mel (3 with" in stderr
    audio, _ = sf.read(str(out), dtype="int16")
    whole = Vocoder(load(checkpoint).model, engine="reference", mel_projection=2)(
        torch.from_numpy(frames.T.copy()), seed=4
    )
    assert audio.shape == (16 * 256,) and np.array_equal(audio, float_to_int16(whole.numpy()))
    raw = Vocoder(load(checkpoint).model, engine="reference")(torch.from_numpy(frames.T.copy()), seed=4)
    assert not np.array_equal(audio, float_to_int16(raw.numpy()))
