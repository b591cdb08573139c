"""Shared machinery of the CUDA engine's PyTorch-op steppers (WaveRNN and WaveNet).

A stepper advances a batch of recurrent states by one chunk of S steps. Its per-step inputs, noise,
targets, samples and logits live in static buffers so that, on a CUDA device, the whole chunk is
captured once in a CUDA graph per (temperature, teacher forcing) and replayed for every chunk;
`use_graph=False` runs the same ops eagerly (the CPU path the tests exercise).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class ChunkGraphStepper:
    """Base class. Subclasses create, in `__init__`, the buffers `inputs` [B, S, ...], `noise`
    [B, S, ...], `targets` [B, S], `samples` [B, S] and `logits` [B, S, ...], set `pack` (with a
    `silence` class), `batch`, `steps`, `use_graph` and `_graphs = {}`, and define `_step` and
    `_recurrent_state` (the tensors a step updates in place, restored after graph capture)."""

    model_name = "model"

    def _step(self, t: int, temperature: float, forced: bool) -> None:
        raise NotImplementedError

    def _recurrent_state(self) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _chunk(self, temperature: float, forced: bool) -> None:
        for t in range(self.steps):
            self._step(t, temperature, forced)

    def _graph_key(self) -> tuple:
        """What else a captured chunk depends on (a phase baked into its indices); () by default."""
        return ()

    def _advance(self, steps: int) -> None:
        """Called after every chunk of `steps` steps (a stepper that tracks a phase moves it on)."""

    def _graph(self, temperature: float, forced: bool) -> torch.cuda.CUDAGraph:
        key = (temperature, forced, *self._graph_key())
        if key not in self._graphs:
            state = self._recurrent_state()
            saved = [tensor.clone() for tensor in state]
            dev = state[0].device
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):  # warm-up (cuBLAS workspaces) before capture
                self._chunk(temperature, forced)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._chunk(temperature, forced)
            for tensor, value in zip(state, saved, strict=True):
                tensor.copy_(value)
            self._graphs[key] = graph
            log.debug("captured a CUDA graph of %d %s steps (batch %d)", self.steps, self.model_name, self.batch)
        return self._graphs[key]

    def run(self, inputs, noise, temperature=1.0, targets=None, logits=None) -> torch.Tensor:
        """Advance len(chunk) = S' <= S steps.

        inputs [B, S', ...] per-sample input terms; noise [B, S', ...]; targets [B, S'] to teacher-force,
        with `logits` [B, S', ...] receiving every step's logits. Returns samples [B, S'].
        """
        count = inputs.shape[1]
        if count > self.steps or inputs.shape[0] != self.batch:
            raise ValueError(f"stepper holds batch {self.batch} x {self.steps} steps, got {tuple(inputs.shape[:2])}")
        forced = targets is not None
        self.inputs[:, :count].copy_(inputs)
        self.noise[:, :count].copy_(noise)
        if forced:
            self.targets[:, :count].copy_(targets)
        if count < self.steps:  # a short last chunk: the padding steps run too, on neutral inputs
            self.inputs[:, count:].zero_()
            self.noise[:, count:].fill_(0.5)
            self.targets[:, count:].fill_(self.pack.silence)
        if self.use_graph:
            self._graph(float(temperature), forced).replay()
        else:
            self._chunk(float(temperature), forced)
        self._advance(self.steps)
        if forced:
            logits.copy_(self.logits[:, :count])
        return self.samples[:, :count].clone()
