"""Streaming synthesis: mel chunks in, audio out, as a TTS model produces its frames.

    stream = voc.stream()                # or: with voc.stream() as stream:
    for chunk in mel_chunks:             # [n_mels, k] or [B, n_mels, k], any k >= 1
        stream.push(chunk)
        play(stream.pull())              # the audio that can be emitted now
    play(stream.close())                 # the rest (leaving a `with` block generates it for `pull`)

A large chunk need not wait for all of its audio: `stream.push(chunk, generate=False)` only buffers
it, and iterating the stream then generates the frames it made ready `block_frames` at a time,
yielding each block's audio as soon as it exists (first audio after one block's work, not the chunk's):

    stream.push(chunk, generate=False)
    for audio in stream:                 # blocks of `block_frames` frames as they are made
        play(audio)

Audio for frame i needs the mel up to frame i + `lookahead_frames` (the conditioning network's and
the upsampler's context, plus the mel projection's when the vocoder projects), so a stream emits each
frame's samples as soon as that frame has arrived and holds back the last `lookahead_frames` until
`close`, which pads the end as whole-utterance generation does. A vocoder with a mel projection
(`vocoders.mel_projection`; the shipped cs-male-22k's default 20 iterations hold back 61 frames, 0.7 s
at 22.05 kHz) projects the streamed audio as it comes (`MelProjector`); `mel_projection=0` streams the
network's audio with the network's look-ahead only. The engine's recurrent state (ring buffers for
WaveNet) and the noise position carry over between chunks; every product is computed so that its
numbers do not depend on the chunking, so the concatenated audio equals `voc(mel, seed=...)` sample
for sample, projected or not.

A frame's conditioning goes to the engine as soon as its mel context has arrived. Most engines
return its samples at once; Subscale WaveRNN's return the samples their staggered order has made up
to the first one still missing (part of a frame, `model.stream_lag` samples behind the conditioning)
and the rest when `close` ends the utterance (`EngineStream.finish`).
"""

from __future__ import annotations

import torch

from .engines.base import EngineStream
from .errors import MelError
from .mel_projection import MelProjector, projection_lookahead_frames
from .sampling import NoiseSource


class Stream:
    """One streaming session over a `Vocoder`'s model and engine: `push`, `pull`, `close`.

    batch: independent streams advanced together; every pushed chunk is [batch, n_mels, k] (or
    [n_mels, k] when batch is 1). Audio comes out as [samples] for batch 1, else [batch, samples].
    mel_projection: iterations of the mel projection on the streamed audio (None: the vocoder's).
    """

    def __init__(
        self,
        vocoder,
        batch: int = 1,
        seed: int | None = None,
        temperature: float = 1.0,
        speaker: int | None = None,
        block_frames: int = 4,
        mel_projection: int | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"a stream needs batch >= 1, got {batch}")
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self.block_frames = int(block_frames)
        self.vocoder = vocoder
        self.model = vocoder.model
        self.batch = batch
        self.speaker = speaker
        vocoder.check_speaker(speaker, "stream")
        iterations = vocoder.mel_projection if mel_projection is None else mel_projection
        self._projector = MelProjector(vocoder.mel_config, iterations, batch, block_frames) if iterations else None
        self.mel_projection = int(iterations)
        projection = projection_lookahead_frames(vocoder.mel_config, iterations)
        self.lookahead_frames = self.model.lookahead_frames + projection
        self._engine: EngineStream = vocoder.engine.open_stream(batch, temperature)
        self._noise = NoiseSource(batch, self.model.noise_per_step, seed)
        self.seed = self._noise.seed
        self._context = self.model.mel_context  # replicate padding on each side, as `pad_mel` does
        self._upsample_context = self.model.upsample_context
        self._mel: torch.Tensor | None = None  # [B, n_mels, frames] padded frames from self._mel_start on
        self._mel_start = 0  # padded index of self._mel's first frame = index of the next cond frame to compute
        self._frames_in = 0  # real frames pushed
        self._frames_sent = 0  # frames whose conditioning went to the engine
        self._samples_out = 0  # samples per stream the engine returned
        self._history = torch.empty(batch, 0, dtype=torch.long)  # the last decode_context samples
        self._ready: list[torch.Tensor] = []  # decoded audio not yet pulled
        self.closed = False

    # ---- the session ---------------------------------------------------------------------------
    def push(self, mel_chunk, generate: bool = True) -> int:
        """Add mel frames; generate every frame whose look-ahead has arrived. Returns the samples ready.

        generate=False only buffers the chunk: its frames wait in `pending_frames` for iteration (block
        by block) or the next generating push, pull of the whole or close.

        A bad chunk (wrong band count, transposed, NaN, another batch size) raises MelError and
        leaves the stream as it was, so the caller can push a corrected chunk.
        """
        if self.closed:
            raise RuntimeError("this stream is closed")
        from .inference import check_mel

        chunk = check_mel(mel_chunk, self.vocoder.mel_config, "mel chunk")
        if chunk.shape[0] != self.batch:
            raise MelError(f"mel chunk: batch of {chunk.shape[0]} for a stream of batch {self.batch}")
        if chunk.device != self.vocoder.device:
            chunk = chunk.to(self.vocoder.device)
        if self._mel is None:  # the left padding: the first frame repeated, as for a whole utterance
            self._mel = torch.cat([chunk[:, :, :1].expand(-1, -1, self._context), chunk], dim=2)
        else:
            self._mel = torch.cat([self._mel, chunk], dim=2)
        self._frames_in += chunk.shape[2]
        if self._projector:
            self._projector.push_mel(chunk)
        if generate:
            self._generate(self.pending_frames)
        return self.available

    @property
    def pending_frames(self) -> int:
        """Frames whose look-ahead has arrived and whose audio is not generated yet (after push(generate=False))."""
        return max(0, self._frames_in - self._context - self._frames_sent)

    def pull(self) -> torch.Tensor:
        """The audio generated since the last pull, pending frames generated first: float32 [samples]
        (batch 1) or [B, samples], CPU."""
        if not self.closed:
            self._generate(self.pending_frames)
        return self._take()

    def close(self) -> torch.Tensor:
        """End of the utterance: pad the end, generate the held-back frames, return what is left to pull."""
        self.finish()
        return self.pull()

    def finish(self) -> None:
        """As `close`, leaving the audio to `pull` (what leaving a `with` block does)."""
        if not self.closed:
            self.closed = True
            if self._frames_in:
                last = self._mel[:, :, -1:]
                self._mel = torch.cat([self._mel, last.expand(-1, -1, self._context)], dim=2)
                self._generate(self._frames_in - self._frames_sent)
                self._emit(self._engine.finish())  # what the engine held back (Subscale WaveRNN)
            if self._projector:
                self._queue(self._projector.close())

    @property
    def available(self) -> int:
        """Samples per stream ready (generated, and projected where the stream projects) and not yet pulled."""
        return sum(a.shape[1] for a in self._ready)

    @property
    def frames_out(self) -> int:
        """Mel frames whose audio the network has generated (pulled or not, projected or not); `samples_out`
        may add part of one."""
        return self._samples_out // self.model.hop_length

    @property
    def samples_out(self) -> int:
        """Samples per stream the network generated (pulled or not; a projection holds some of them back)."""
        return self._samples_out

    def __iter__(self):
        """The audio ready now, then the pending frames generated `block_frames` at a time, each block's
        audio yielded as soon as it is made; use between pushes."""
        audio = self._take()
        if audio.shape[-1]:
            yield audio
        while not self.closed and self.pending_frames:
            self._generate(min(self.block_frames, self.pending_frames))
            audio = self._take()
            if audio.shape[-1]:  # a Subscale block may end before its first sample is complete
                yield audio

    def _take(self) -> torch.Tensor:
        """The generated audio not yet pulled (pull without generating)."""
        ready = self._ready
        audio = ready[0] if len(ready) == 1 else torch.cat(ready, dim=1) if ready else torch.empty(self.batch, 0)
        self._ready = []
        return audio[0] if self.batch == 1 else audio

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.finish()
        self.closed = True

    # ---- the work ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _generate(self, frames: int) -> None:
        """Generate the next `frames` frames from the buffered mel (their look-ahead is in it)."""
        if frames <= 0:
            return
        model, u = self.model, self._upsample_context
        # Output frames [e, e + n) read conditioning frames [e, e + n + 2u); compute only the new ones
        # (cond frame j reads padded mel frames j .. j + 2 (context - u)), keep the 2u they share.
        end = self._frames_sent + frames + 2 * u
        window = self._mel[:, :, : end - self._mel_start + 2 * (self._context - u)]
        fresh = self.vocoder.engine.conditioning(window, self.speaker)  # as whole-utterance generation computes it
        self._mel = self._mel[:, :, end - self._mel_start :]
        self._mel_start = end
        # The engine keeps the 2u rows this chunk shares with the next (EngineStream.run_fresh).
        samples = self._engine.run_fresh(fresh, self._noise.take(frames * model.hop_length), 2 * u)
        self._frames_sent += frames
        self._emit(samples)

    def _emit(self, samples: torch.Tensor | None) -> None:
        """Decode the next samples [B, m] the engine returned and queue them for `pull`."""
        if samples is None or not samples.shape[1]:
            return
        self._samples_out += samples.shape[1]
        audio = self._decode(samples if samples.device.type == "cpu" else samples.cpu())
        self._queue(self._projector.push(audio) if self._projector else audio)

    def _queue(self, audio: torch.Tensor) -> None:
        """Audio [B, m] ready for `pull`."""
        if audio.shape[1]:
            self._ready.append(audio)

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Sample classes [B, n] -> audio [B, n], with the earlier samples the decoder reads in front."""
        context = self.model.decode_context
        if not context:
            audio = self.model.decode(samples)
            return audio if audio.dtype == torch.float32 else audio.float()
        joined = torch.cat([self._history, samples], dim=1)
        audio = self.model.decode(joined).float()[:, self._history.shape[1] :]
        self._history = joined[:, -context:]
        return audio
