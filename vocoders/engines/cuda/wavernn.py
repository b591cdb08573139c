"""WaveRNN on the device: chunks of steps with no host synchronisation inside a sequence.

`WaveRNNSampler` owns the loop over chunks: it projects the conditioning at frame rate once,
interpolates one chunk of per-sample input terms at a time, and hands them with the pre-drawn noise
to a stepper that advances the recurrent state by a chunk of steps:
- `GraphStepper`: the step as plain PyTorch ops on static buffers; on a CUDA device a whole chunk is
  captured once in a CUDA graph and replayed (one launch per chunk instead of ~40 per step). Any batch.
- `triton_wavernn.TritonWaveRNN`: the Triton kernels (persistent, or one launch per phase).
Everything stays on the device; the host only queues work, and reads nothing back until the end.

Sampling uses `sample_categorical` (the graph) or its Triton copy: the same inverse-CDF rule with
the same noise, so samples equal the reference engine's up to float32 rounding of the logits.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from ...sampling import sample_categorical
from ..base import EngineStream
from .graph_stepper import ChunkGraphStepper
from .wavernn_pack import WaveRNNPack

log = logging.getLogger(__name__)

# The step's matrices in a WaveRNNPack and their biases.
BIAS_OF = {"recurrent": "bias_hh", "out1": "bias1", "out2": "bias2", "out3": "bias3", "out4": "bias4"}


class Stepper(Protocol):
    """Advances a batch of WaveRNN states by S steps (see `GraphStepper.run`)."""

    def reset(self) -> None: ...

    def run(
        self,
        inputs: torch.Tensor,
        noise: torch.Tensor,
        temperature: float = 1.0,
        targets: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def _mm_float32(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [B, K] float32 times weight [N, K]^T -> [B, N] float32.

    Reduced-precision weights take x rounded to the same dtype and accumulate in float32 (on CUDA a
    bf16/fp16 tensor-core product with a float32 output; on the CPU the same products emulated).
    """
    if weight.dtype == torch.float32:
        return x @ weight.t()
    if x.is_cuda:
        if hasattr(torch.ops.aten.mm, "dtype"):  # the out_dtype overload (recent PyTorch)
            return torch.mm(x.to(weight.dtype), weight.t(), out_dtype=torch.float32)
        return (x.to(weight.dtype) @ weight.t()).float()  # older PyTorch: the sums rounded once to bf16/fp16
    return x.to(weight.dtype).float() @ weight.t().float()


class GraphStepper(ChunkGraphStepper):
    """The WaveRNN step in PyTorch ops on static buffers; a CUDA graph per chunk on a CUDA device.

    A graph is captured for one (batch, chunk length, temperature, teacher forcing) and replayed for
    every chunk; a different temperature or mode captures another. `use_graph=False` runs the same
    ops eagerly (the CPU path the tests exercise).
    """

    model_name = "WaveRNN"

    def __init__(self, pack: WaveRNNPack, batch: int, steps: int, use_graph: bool | None = None) -> None:
        dev = pack.recurrent.device
        self.pack, self.batch, self.steps = pack, batch, steps
        self.use_graph = dev.type == "cuda" if use_graph is None else use_graph
        H = pack.hidden
        self.hidden = torch.zeros(batch, H, device=dev)
        self.prev = torch.full((batch,), pack.silence, dtype=torch.long, device=dev)
        self.inputs = torch.zeros(batch, steps, 3 * H, device=dev)
        self.noise = torch.full((batch, steps, 2), 0.5, device=dev)
        self.targets = torch.zeros(batch, steps, dtype=torch.long, device=dev)
        self.samples = torch.zeros(batch, steps, dtype=torch.long, device=dev)
        self.logits = torch.full((batch, steps, 2, pack.classes), float("-inf"), device=dev)
        self._graphs: dict[tuple[float, bool], torch.cuda.CUDAGraph] = {}

    def reset(self) -> None:
        self.hidden.zero_()
        self.prev.fill_(self.pack.silence)

    def state(self) -> torch.Tensor:
        return self.hidden

    # ---- one step, plain ops --------------------------------------------------------------------
    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x [B, K] through the pack's matrix `name` and its bias -> [B, N] float32 (a hook: the sparse
        stepper sends its pruned matrices to a block-sparse kernel instead)."""
        return _mm_float32(x, getattr(self.pack, name)) + getattr(self.pack, BIAS_OF[name])

    def _scale(self, classes: torch.Tensor, count: int) -> torch.Tensor:
        return classes.float() * (2.0 / (count - 1)) - 1.0

    def _gates(self, gi: torch.Tensor, gh: torch.Tensor, h_old: torch.Tensor) -> torch.Tensor:
        """gi, gh [B, 3, n]; h_old [B, n] -> h' [B, n]."""
        r = torch.sigmoid(gi[:, 0] + gh[:, 0])
        z = torch.sigmoid(gi[:, 1] + gh[:, 1])
        n = torch.tanh(gi[:, 2] + r * gh[:, 2])
        return z * h_old + (1.0 - z) * n

    def _core_step(
        self,
        h: torch.Tensor,
        prev: torch.Tensor,
        inputs: torch.Tensor,
        noise: torch.Tensor,
        targets: torch.Tensor,
        temperature: float,
        forced: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One WaveRNN step of n streams, out of place.

        h [n, H]; prev [n] the previous sample classes; inputs [n, 3H] the conditioning's input-gate
        terms (b_ih included); noise [n, 2]; targets [n] (read when `forced`).
        Returns (h' [n, H], sample [n], coarse logits [n, Kc], fine logits [n, Kf]).
        """
        p = self.pack
        half, fine_mask = p.half, p.fine_classes - 1
        gh = self._linear(h, "recurrent").view(-1, 3, p.hidden)
        c_prev = self._scale(prev >> p.fine_bits, p.coarse_classes)
        known = torch.stack([c_prev, self._scale(prev & fine_mask, p.fine_classes)], dim=-1)
        gi = (inputs + known @ p.w_prev).view(-1, 3, p.hidden)
        h_coarse = self._gates(gi[:, :, :half], gh[:, :, :half], h[:, :half])
        y = torch.relu(self._linear(h_coarse, "out1"))
        logits_c = self._linear(y, "out2")
        if forced:
            coarse = targets >> p.fine_bits
        else:
            coarse = sample_categorical(logits_c, noise[:, 0], temperature)
        w_now = p.w_now.view(3, p.hidden)[:, half:]
        gi_fine = gi[:, :, half:] + self._scale(coarse, p.coarse_classes)[:, None, None] * w_now
        h_fine = self._gates(gi_fine, gh[:, :, half:], h[:, half:])
        y = torch.relu(self._linear(h_fine, "out3"))
        logits_f = self._linear(y, "out4")
        if forced:
            sample = targets
        else:
            fine = sample_categorical(logits_f, noise[:, 1], temperature)
            sample = (coarse << p.fine_bits) | fine
        return torch.cat([h_coarse, h_fine], dim=-1), sample, logits_c, logits_f

    def _step(self, t: int, temperature: float, forced: bool) -> None:
        p = self.pack
        h, sample, logits_c, logits_f = self._core_step(
            self.hidden, self.prev, self.inputs[:, t], self.noise[:, t], self.targets[:, t], temperature, forced
        )
        if forced:
            self.logits[:, t, 0, : p.coarse_classes] = logits_c
            self.logits[:, t, 1, : p.fine_classes] = logits_f
        self.samples[:, t] = sample
        self.prev.copy_(sample)
        self.hidden.copy_(h)

    def _recurrent_state(self) -> tuple[torch.Tensor, ...]:
        return self.hidden, self.prev


class CapturedStepper:
    """Replays another stepper's chunk from a CUDA graph (for the Triton phase kernels: 7 launches
    per step become one graph launch per chunk).

    The inner stepper must keep its state in device tensors `hidden` and `prev`, and any host-side
    state must repeat after `steps` steps (the phase kernels' hidden-buffer parity: `steps` even).
    Short chunks are padded to `steps` like `GraphStepper` does.
    """

    def __init__(self, inner, pack: WaveRNNPack, batch: int, steps: int) -> None:
        if steps % 2:
            raise ValueError(f"a captured chunk needs an even number of steps, got {steps}")
        dev = pack.recurrent.device
        self.inner, self.pack, self.batch, self.steps = inner, pack, batch, steps
        self.inputs = torch.zeros(batch, steps, 3 * pack.hidden, device=dev)
        self.noise = torch.full((batch, steps, 2), 0.5, device=dev)
        self.targets = torch.full((batch, steps), pack.silence, dtype=torch.long, device=dev)
        self.logits = torch.full((batch, steps, 2, pack.classes), float("-inf"), device=dev)
        self._graphs: dict[tuple[float, bool], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def reset(self) -> None:
        self.inner.reset()

    def _capture(self, temperature: float, forced: bool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        targets, logits = (self.targets, self.logits) if forced else (None, None)
        saved = [t.clone() for t in (self.inner.hidden, self.inner.prev)]
        self.inner.run(self.inputs, self.noise, temperature, targets, logits)  # warm-up: compile kernels
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            samples = self.inner.run(self.inputs, self.noise, temperature, targets, logits)
        self.inner.hidden.copy_(saved[0])
        self.inner.prev.copy_(saved[1])
        return graph, samples

    def run(self, inputs, noise, temperature=1.0, targets=None, logits=None) -> torch.Tensor:
        """As `GraphStepper.run`."""
        count, forced = inputs.shape[1], targets is not None
        self.inputs[:, :count].copy_(inputs)
        self.noise[:, :count].copy_(noise)
        self.inputs[:, count:].zero_()
        self.noise[:, count:].fill_(0.5)
        if forced:
            self.targets[:, :count].copy_(targets)
            self.targets[:, count:].fill_(self.pack.silence)
        key = (float(temperature), forced)
        if key not in self._graphs:
            self._graphs[key] = self._capture(float(temperature), forced)
        graph, samples = self._graphs[key]
        graph.replay()
        if forced:
            logits.copy_(self.logits[:, :count])
        return samples[:, :count].clone()


class WaveRNNSampler:
    """Generation and teacher forcing over chunks of `chunk_frames` frames with one stepper."""

    def __init__(self, pack: WaveRNNPack, stepper: Stepper, chunk_frames: int) -> None:
        self.pack, self.stepper, self.chunk_frames = pack, stepper, chunk_frames

    def _chunks(self, cond: torch.Tensor):
        """Yield (first sample, per-sample inputs [B, S, 3H]) for each chunk of the sequence."""
        p = self.pack
        projection = p.frame_projection(cond)
        frames = cond.shape[1] - (p.taps - 1)
        for first_frame in range(0, frames, self.chunk_frames):
            count = min(self.chunk_frames, frames - first_frame)
            yield first_frame * p.hop, p.sample_inputs(projection, first_frame, count)

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """cond [B, F + taps - 1, D]; noise [B, F * hop, 2] -> samples [B, F * hop] int64."""
        self.stepper.reset()
        return self.proceed(cond, noise, temperature)

    @torch.inference_mode()
    def proceed(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """`generate` from the stepper's current state (a stream's next chunk): no reset."""
        dev = self.pack.recurrent.device
        cond, noise = cond.to(dev), noise.to(dev, torch.float32)
        out = torch.empty(noise.shape[:2], dtype=torch.long, device=dev)
        for first, inputs in self._chunks(cond):
            steps = inputs.shape[1]
            out[:, first : first + steps] = self.stepper.run(inputs, noise[:, first : first + steps], temperature)
        return out

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """cond [B, F + taps - 1, D]; targets [B, T] -> logits [B, T, 2, K] (as `WaveRNN.forward_logits`)."""
        dev, p = self.pack.recurrent.device, self.pack
        cond, targets = cond.to(dev), targets.to(dev)
        batch, total = targets.shape
        logits = torch.full((batch, total, 2, p.classes), float("-inf"), device=dev)
        noise = torch.full((batch, total, 2), 0.5, device=dev)
        self.stepper.reset()
        for first, inputs in self._chunks(cond):
            steps = min(inputs.shape[1], total - first)
            if steps <= 0:
                break
            span = slice(first, first + steps)
            chunk_logits = logits[:, span].contiguous()
            self.stepper.run(inputs[:, :steps], noise[:, span], 1.0, targets[:, span].contiguous(), chunk_logits)
            logits[:, span] = chunk_logits
        return logits


class SamplerStream(EngineStream):
    """A stream over its own sampler (WaveRNN or WaveNet: own stepper, graphs and state): chunks continue the loop.

    With hop >= 256 a WaveRNN chunk of the sampler is one frame, so every pushed frame replays the
    captured graph; a shorter chunk (only where chunk_frames > 1) runs at its own length. WaveNet
    streams run one frame per chunk at one of a few ring phases, each captured once.
    """

    def __init__(self, sampler, temperature: float) -> None:
        self.sampler, self.temperature = sampler, temperature
        sampler.stepper.reset()

    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sampler.proceed(cond, noise, self.temperature)
