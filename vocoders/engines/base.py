"""The engine interface: autoregressive sampling of a model from its conditioning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..models.base import VocoderModel


class StreamingError(RuntimeError):
    """This engine cannot stream this model (it can still generate whole utterances)."""


class EngineStream(ABC):
    """One engine's loop over consecutive chunks of an utterance, its state carried between them.

    `run(cond, noise)` takes the frame-rate conditioning of the next n frames with the upsampler's
    context on each side, [B, n + 2u, D], and their noise [B, n * hop, noise_per_step], and returns
    the next samples of the utterance, [B, m] int64. A model that makes one sample per step returns
    all n * hop of them; one whose samples need conditioning from further on (Subscale WaveRNN's
    stagger) returns those it has been able to make so far, and `finish()`, at the end of the
    utterance, the rest. Run over the chunks of an utterance, the returned samples are exactly those
    `Engine.generate` returns for the whole one (tests hold every engine to it). Consecutive chunks
    share 2u rows of conditioning; a `Stream` hands over only the rows after them (`run_fresh`).
    """

    @abstractmethod
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor: ...

    def run_fresh(self, fresh: torch.Tensor, noise: torch.Tensor, shared: int) -> torch.Tensor:
        """`run`, given only the conditioning rows not given before (what a `Stream` computes per chunk).

        Consecutive chunks share `shared` (2u) rows: fresh is [B, n + 2u, D] for the first chunk and
        [B, n, D], the rows after the shared ones, for the others. This keeps the shared rows and
        calls `run`; an engine that keeps its own work on them (their projection) overrides it.
        """
        kept = getattr(self, "_shared_rows", None)
        cond = fresh if kept is None else torch.cat([kept, fresh], dim=1)
        self._shared_rows = cond[:, cond.shape[1] - shared :]
        return self.run(cond, noise)

    def finish(self) -> torch.Tensor | None:
        """The utterance has ended: the samples `run` held back, [B, m] int64 (None: there are none)."""
        return None


class SampleWindow:
    """Per-sample rows [batch, length, ...] of one stream, for samples [origin, origin + length).

    `append` adds rows at the end, `drop` forgets the oldest; the rows live in a buffer twice the
    window's largest length, compacted when full, so a chunk costs its own rows, not the window's.
    `rows(name)` is a view [batch, length, ...] whose batch stride is the buffer's.
    """

    def __init__(
        self, batch: int, device: torch.device | str = "cpu", **shapes: tuple[tuple[int, ...], torch.dtype]
    ) -> None:
        self.batch, self.device, self.shapes = batch, torch.device(device), shapes
        self.origin, self.start, self.length = 0, 0, 0
        self.buffers = {name: self._zeros(name, 0) for name in shapes}

    def _zeros(self, name: str, capacity: int) -> torch.Tensor:
        shape, dtype = self.shapes[name]
        return torch.zeros(self.batch, capacity, *shape, dtype=dtype, device=self.device)

    @property
    def end(self) -> int:
        return self.origin + self.length

    def append(self, **rows: torch.Tensor) -> None:
        n = next(iter(rows.values())).shape[1]
        capacity = next(iter(self.buffers.values())).shape[1]
        if self.start + self.length + n > capacity:
            capacity = max(capacity, 2 * (self.length + n))
            for name in self.shapes:
                moved = self._zeros(name, capacity)
                moved[:, : self.length] = self.buffers[name][:, self.start : self.start + self.length]
                self.buffers[name] = moved
            self.start = 0
        at = self.start + self.length
        for name, values in rows.items():
            self.buffers[name][:, at : at + n] = values
        self.length += n

    def rows(self, name: str) -> torch.Tensor:
        return self.buffers[name][:, self.start : self.start + self.length]

    def drop(self, n: int) -> None:
        self.origin += n
        self.length -= n
        self.start = self.start + n if self.length else 0  # an empty window starts at the buffer's first row


class Engine(ABC):
    """Runs a model's autoregressive loop.

    An engine is bound to one model and device at construction, so fast engines can pack weights
    once. Every engine takes the same inputs and, given the same weights and noise, must produce the
    reference engine's samples (tests hold them to it).
    """

    name: ClassVar[str]
    # Weight storage dtypes this engine offers; reduced ones trade exactness for fewer bytes per step.
    dtypes: ClassVar[tuple[str, ...]] = ("float32",)

    def __init__(self, model: VocoderModel, device: torch.device | str = "cpu", dtype: str = "float32") -> None:
        if dtype not in self.dtypes:
            raise ValueError(f"engine {self.name!r} stores weights as {', '.join(self.dtypes)}, not {dtype!r}")
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        """None when this engine can run `model` on `device`, else the reason it cannot."""
        return None

    @classmethod
    def available_to_auto(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        """As `available`, for `engine=auto` (an engine may run somewhere auto should not pick it)."""
        return cls.available(model, device)

    def conditioning(self, mel: torch.Tensor, speaker=None) -> torch.Tensor:
        """The model's frame-rate conditioning of a padded mel [B, n_mels, F + 2 * mel_context] -> [B, F + 2u, D].

        What a `Vocoder` and its streams feed this engine (both call it, so they get the same numbers);
        an engine may run the network in its own kernels (the CPU engines do). speaker: for a
        multi-speaker model only.
        """
        model = self.model
        return model.conditioning(mel) if speaker is None else model.conditioning(mel, speaker=speaker)

    @abstractmethod
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Free-running generation.

        cond: frame-rate conditioning [B, F + 2u, D] from `model.conditioning`;
        noise: [B, F * hop, model.noise_per_step] uniform in [0, 1).
        Returns sample classes [B, F * hop] int64 (decode with `model.decode`).
        """

    def synthesize(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """`generate`, decoded: audio [B, F * hop] float32 in [-1, 1] (what wrappers such as fold batching return)."""
        return self.model.decode(self.generate(cond, noise, temperature)).float()

    @abstractmethod
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits of every step when the true samples `targets` [B, T] are fed back (teacher forcing).

        Returns [B, T, ...] matching `model.forward_logits`.
        """

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        """A stateful session that generates an utterance chunk by chunk (see `EngineStream`).

        Engines that cannot carry their loop's state between calls raise StreamingError.
        """
        raise StreamingError(f"engine {self.name!r} does not stream {self.model.name}")

    @staticmethod
    def check_inputs(model: VocoderModel, cond: torch.Tensor, noise: torch.Tensor) -> int:
        """Validate shapes; return the number of samples to generate."""
        steps = model.num_samples(cond)
        expected = (cond.shape[0], steps, model.noise_per_step)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape {expected}, got {tuple(noise.shape)}")
        return steps
