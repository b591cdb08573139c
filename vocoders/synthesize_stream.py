"""`vocoders-synthesize CHECKPOINT --stream INPUT -o OUT.wav`: mel frames in as they come, WAV out as it goes.

INPUT is `-` (standard input, e.g. a pipe from a TTS process) or a `.npy` file that another process
is still writing. Either carries float32 frames one after the other, frame-major: n_mels values per
frame (the checkpoint's mel contract). Standard input may start with a `.npy` header (shape
[frames, n_mels], float32, C order) or carry raw little-endian float32 frames; it ends at EOF. A
growing `.npy` file ends when its header's frame count is reached (the writer rewrites the header
when it finishes, as `numpy.lib.format` does with a header of the same length) or after
`--stream-timeout` seconds without new data.

OUT.wav is a valid 16-bit WAV after every chunk (its header is updated as it grows), so a player
can follow it. A chunk with NaN or Inf frames is refused with one line on stderr naming the input
and the frames, and skipped; the stream goes on and the exit status is 1.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

NPY_MAGIC = b"\x93NUMPY"


class FrameReader:
    """Complete mel frames [k, n_mels] float32 from a byte source, as they arrive."""

    def __init__(self, source: BinaryIO, n_mels: int, name: str, is_file: bool, timeout: float) -> None:
        self.source, self.n_mels, self.name = source, n_mels, name
        self.is_file, self.timeout = is_file, timeout
        self.buffer = b""
        self.header_checked = False
        self.expected_frames: int | None = None  # from a .npy header, re-read for a growing file
        self.header_length = 0
        self.frames_read = 0
        self.finished = False
        self.trailing = 0  # bytes left over at the end that made no whole frame

    def _read_some(self) -> bytes:
        if self.is_file:
            return self.source.read(1 << 16)
        return os.read(self.source.fileno(), 1 << 16)

    def _parse_header(self) -> bool:
        """Consume a .npy header from the buffer if one starts it. False: wait for more bytes."""
        if len(self.buffer) < len(NPY_MAGIC):
            return False
        if not self.buffer.startswith(NPY_MAGIC):
            if self.is_file:
                raise ValueError(f"{self.name}: not a .npy file (no NUMPY magic)")
            self.header_checked = True  # raw float32 frames
            return True
        if len(self.buffer) < 10:
            return False
        major = self.buffer[6]
        size_bytes = 2 if major == 1 else 4
        length = int.from_bytes(self.buffer[8 : 8 + size_bytes], "little")
        start = 8 + size_bytes
        if len(self.buffer) < start + length:
            return False
        header = ast.literal_eval(self.buffer[start : start + length].decode("latin1"))
        shape, dtype = tuple(header["shape"]), np.dtype(header["descr"])
        if header.get("fortran_order") or dtype != np.dtype("<f4"):
            order = "Fortran" if header.get("fortran_order") else "C"
            raise ValueError(f"{self.name}: stream needs float32 frames in C order, got {dtype} in {order} order")
        if len(shape) != 2 or shape[1] != self.n_mels:
            raise ValueError(f"{self.name}: stream needs shape [frames, n_mels={self.n_mels}], got {shape}")
        self.header_length = start + length
        self.expected_frames = shape[0] if shape[0] > 0 else None
        self.buffer = self.buffer[start + length :]
        self.header_checked = True
        return True

    def _reread_frame_count(self) -> None:
        """A growing file's writer may have rewritten the header with the final count."""
        position = self.source.tell()
        self.source.seek(0)
        head = self.source.read(self.header_length)
        self.source.seek(position)
        try:
            text = head[10:].decode("latin1") if head[6] == 1 else head[12:].decode("latin1")
            shape = tuple(ast.literal_eval(text)["shape"])
            self.expected_frames = shape[0] if shape[0] > 0 else None
        except (ValueError, SyntaxError, KeyError, IndexError):
            pass  # caught mid-rewrite: try again next time

    def chunks(self):
        """Yield arrays [k, n_mels] float32 as frames complete; stop at the end of the input."""
        frame_bytes = 4 * self.n_mels
        idle_since = time.monotonic()
        while not self.finished:
            data = self._read_some()
            if data:
                self.buffer += data
                idle_since = time.monotonic()
            if not self.header_checked and not self._parse_header():
                if not data and not self.is_file:
                    raise ValueError(f"{self.name}: input ended before a whole mel frame")
                continue
            complete = len(self.buffer) // frame_bytes
            if self.expected_frames is not None:
                complete = min(complete, self.expected_frames - self.frames_read)
            if complete:
                chunk = (
                    np.frombuffer(self.buffer[: complete * frame_bytes], dtype="<f4")
                    .reshape(complete, self.n_mels)
                    .copy()
                )
                self.buffer = self.buffer[complete * frame_bytes :]
                self.frames_read += complete
                yield chunk
            if self.expected_frames is not None and self.frames_read >= self.expected_frames:
                self.finished = True
            elif not data:
                if not self.is_file:  # EOF on a pipe
                    self.finished = True
                elif time.monotonic() - idle_since > self.timeout:
                    self.finished = True
                else:
                    if self.header_length:
                        self._reread_frame_count()
                    time.sleep(0.02)
        if self.buffer:
            self.trailing = len(self.buffer)
            print(f"error: {self.name}: {len(self.buffer)} trailing bytes do not make a whole frame", file=sys.stderr)


def stream_file(vocoder, source: str, output: Path, seed: int, temperature: float, speaker, timeout: float) -> int:
    """Stream INPUT through `vocoder` into OUT.wav. Returns the exit status (0, or 1 when chunks were refused)."""
    import soundfile as sf

    from .audio import float_to_int16
    from .errors import MelError

    n_mels = vocoder.mel_config.n_mels
    if source == "-":
        reader = FrameReader(sys.stdin.buffer, n_mels, "stdin", is_file=False, timeout=timeout)
        handle = None
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
        reader = FrameReader(handle, n_mels, str(path), is_file=True, timeout=timeout)
    output.parent.mkdir(parents=True, exist_ok=True)
    stream = vocoder.stream(seed=seed, temperature=temperature, speaker=speaker)
    status, frames_in, written = 0, 0, 0
    try:
        with sf.SoundFile(
            output, "w", samplerate=vocoder.sample_rate, channels=1, subtype="PCM_16", format="WAV"
        ) as wav:

            def emit(audio) -> None:
                nonlocal written
                if audio.numel():
                    wav.write(float_to_int16(audio.numpy()))
                    wav.flush()  # the header now counts what is on disk
                    written += audio.numel()

            for chunk in reader.chunks():
                first = frames_in
                frames_in += chunk.shape[0]
                try:
                    stream.push(chunk.T, generate=False)
                except MelError as exc:
                    print(f"error: {reader.name}: frames {first}..{frames_in - 1}: {exc}", file=sys.stderr)
                    status = 1
                    continue
                for audio in stream:  # a large chunk reaches the file block by block
                    emit(audio)
            emit(stream.close())
            if reader.trailing:
                status = 1
    finally:
        if handle is not None:
            handle.close()
    print(f"wrote {written} samples ({written / vocoder.sample_rate:.2f} s) to {output}")
    return status
