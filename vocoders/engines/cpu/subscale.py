"""Subscale WaveRNN on the compiled CPU loop: the B sub-tensors of a step go through the core together.

A staggered step (see `SubscaleWaveRNN.step`) produces one sample of every running sub-tensor. The
whole utterance runs in one call of `vocoders._native.subscale_run` (csrc/kern_subscale.h); per step:
- the masked dilated context CNN advances every sub-tensor by one coordinate (its layers' outputs in
  ring buffers, `SubscaleContext.advance`'s arithmetic);
- the conditioning of the running sub-tensors (upsampled mel + context, [B, D]) is projected by
  W_cond in one packed product (W_cond read once per step);
- the WaveRNN core samples them as streams of one batch: its products walk the weights in tiles that
  stay in L2 while every group of streams passes over them, so R and O1-O4 come from memory once per
  step rather than once per sample.

No Python runs per step. Sub-tensors idle during the ramp at the start and end of the order are left
out of the core's batch, and their state stays as it was. Several utterances run as streams of the
same call (sharing every weight read), split over `workers` threads when more than one is asked for.

The loop's state (the core's hidden state and last sample per sub-tensor, the context values and
the context layers' outputs in rings) is a `SubscaleCpuState` the caller holds, and one call runs a
range of steps over a window of samples: a whole utterance is one call over all of them, a stream
(`SubscaleCpuStream`) one call per chunk over the steps the chunk's conditioning lets it run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...models.subscale import SubscaleWaveRNN
from ..base import Engine, EngineStream, SampleWindow
from .packing import pack_matrix
from .shares import row_address, run_in_shares

# The core's weights tuple: its upsampler entries (one tap, weight 1: the conditioning is per sample).
TAPS_INDEX, HOP_INDEX = 6, 7


def context_weights(model: SubscaleWaveRNN) -> dict[str, torch.Tensor]:
    """The context CNN's weights as kern_subscale.h reads them, per sub-tensor (float32, contiguous).

    w_in [B, C, K, 2B] (masked), b_in [B, C], w_layers [layers, B, C, K, C], b_layers [layers, B, C],
    w_out [B, D, C], b_out [B, D], dilations [layers] int64.
    """
    ctx = model.context
    B, C, K, D = ctx.factor, ctx.channels, ctx.kernel, ctx.out_channels
    with torch.no_grad():
        w_in = ctx.masked_input_weight().float().reshape(B, C, B, 2, K).permute(0, 1, 4, 2, 3)
        layers = [layer.weight.float().reshape(B, C, C, K).permute(0, 1, 3, 2) for layer in ctx.layers]
        empty = torch.zeros(0, B, C, K, C)
        weights = {
            "w_in": w_in.reshape(B, C, K, 2 * B),
            "b_in": ctx.conv_in.bias.float().reshape(B, C),
            "w_layers": torch.stack(layers) if layers else empty,
            "b_layers": torch.stack([layer.bias.float().reshape(B, C) for layer in ctx.layers])
            if layers
            else torch.zeros(0, B, C),
            "w_out": ctx.conv_out.weight.float().reshape(B, D, C),
            "b_out": ctx.conv_out.bias.float().reshape(B, D),
            "dilations": torch.tensor(ctx.dilations, dtype=torch.int64).reshape(-1),
        }
    return {name: tensor.contiguous() for name, tensor in weights.items()}


def power_of_two_above(n: int) -> int:
    """The smallest power of two > n."""
    ring = 1
    while ring <= n:
        ring *= 2
    return ring


@dataclass
class SubscaleCpuState:
    """The native loop's state for `batch` utterances, carried between calls; `step`: the next step to run.

    hidden [batch * B, H] float32 (zeros), previous [batch * B] int64 (silence), inputs
    [batch, input_ring, B, 2] float32 (the context values by position), rings
    [batch, layers + 1, layer_ring, B, C] float32 (the context layers' outputs by coordinate).
    """

    hidden: torch.Tensor
    previous: torch.Tensor
    inputs: torch.Tensor
    rings: torch.Tensor
    step: int


class SubscaleCpuLoop:
    """Runs a Subscale WaveRNN's staggered order through the native loop.

    packed: the core's `PackedWaveRNN`; native: the extension module; isa: its instruction set name.
    """

    def __init__(self, model: SubscaleWaveRNN, packed, native, isa: str) -> None:
        self.model, self.packed, self.native, self.isa = model, packed, native, isa
        spec = list(packed.spec(model.core))
        spec[TAPS_INDEX], spec[HOP_INDEX] = 1, 1
        self.core_spec = tuple(spec)
        self.w_cond = pack_matrix(packed.w_cond, None, packed.R.dtype)  # [3H, D], applied per step
        self.context = context_weights(model)
        ctx, c = model.context, self.context
        self.context_spec = (
            ctx.factor,
            ctx.horizon,
            ctx.channels,
            ctx.kernel,
            len(ctx.dilations),
            ctx.out_channels,
            *(c[name].data_ptr() for name in ("dilations", "w_in", "b_in", "w_layers", "b_layers", "w_out", "b_out")),
        )
        # The rings' sizes: a context layer reads `lookback` coordinates back; a context value is read
        # up to (B - 1)(F + 1) - F + K - 1 steps after it is made (kern_subscale.h).
        self.layer_ring = power_of_two_above(ctx.lookback)
        self.input_ring = power_of_two_above((ctx.factor - 1) * (ctx.horizon + 1) + ctx.kernel)

    def new_state(self, batch: int) -> SubscaleCpuState:
        """The state before an utterance's first step (-F)."""
        model, ctx = self.model, self.model.context
        streams = batch * ctx.factor
        return SubscaleCpuState(
            hidden=torch.zeros(streams, model.core.hidden_size),
            previous=torch.full((streams,), model.core.silence, dtype=torch.long),
            inputs=torch.zeros(batch, self.input_ring, ctx.factor, 2),
            rings=torch.zeros(batch, len(ctx.dilations) + 1, self.layer_ring, ctx.factor, ctx.channels),
            step=-ctx.horizon,
        )

    def steps(
        self,
        state: SubscaleCpuState,
        last: int,
        num_samples: int,
        features: torch.Tensor,
        noise: torch.Tensor,
        samples: torch.Tensor,
        origin: int = 0,
        forced: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        temperature: float = 1.0,
        workers: int = 1,
    ) -> None:
        """Run steps [state.step, last) of the order of signals `num_samples` long (as far as is known).

        features [b, n, D] float32, noise [b, n, 2] float32, samples [b, n] int64 (written), forced
        [b, n] int64 or None, logits [b, n, 2, width] or None: samples [origin, origin + n) of each
        utterance, rows contiguous, each tensor's batch stride n' >= n rows (the same n' for all, so
        they may be views of longer buffers). The b utterances are split into at most `workers`
        shares, one native call (and thread) each.
        """
        batch, rows = samples.shape
        stride = samples.stride(0)
        width = 0 if logits is None else logits.shape[-1]
        arrays = {"features": (features, features.shape[-1]), "noise": (noise, 2), "samples": (samples, 1),
                  "forced": (forced, 1), "logits": (logits, 2 * width)}  # fmt: skip
        for name, (tensor, inner) in arrays.items():
            if tensor is None:
                continue
            spaced = batch == 1 or tensor.stride(0) == stride * inner  # the loop steps `stride` rows per utterance
            if tensor.shape[:2] != (batch, rows) or not spaced or not tensor[0].is_contiguous():
                raise ValueError(f"{name} must be rows [{batch}, {rows}, ...] of buffers of {stride} rows")
        first, state.step = state.step, max(state.step, last)
        if last <= first:
            return

        def share(lo: int, hi: int) -> None:
            B = self.model.subscale
            job = (
                hi - lo,
                num_samples,
                width,
                first,
                last,
                origin,
                stride,
                row_address(features, lo),
                row_address(noise, lo),
                row_address(forced, lo),
                row_address(samples, lo),
                row_address(logits, lo),
                float(temperature),
                self.input_ring,
                self.layer_ring,
                row_address(state.hidden, lo * B),
                row_address(state.previous, lo * B),
                row_address(state.inputs, lo),
                row_address(state.rings, lo),
            )
            self.native.subscale_run(self.core_spec, self.w_cond.spec(), self.context_spec, job, self.isa)

        run_in_shares(batch, workers, share)

    def run(
        self,
        cond: torch.Tensor,
        noise: torch.Tensor,
        forced: torch.Tensor | None,
        temperature: float,
        logits_width: int = 0,
        workers: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frame-rate conditioning [b, frames, D] -> (samples [b, T], logits [b, T, 2, width] or None).

        noise: [b, T, 2] float32; forced: [b, T] int64 targets (teacher forcing) or None. The b
        utterances are split into at most `workers` shares, one native call (and thread) each.
        """
        with torch.inference_mode():
            features = self.model.upsample(cond.float()).contiguous()  # [b, T, D]
        batch, steps = features.shape[:2]
        noise = noise.float().contiguous()
        forced = None if forced is None else forced.long().contiguous()
        samples = torch.empty(batch, steps, dtype=torch.long)
        logits = None if not logits_width else torch.full((batch, steps, 2, logits_width), float("-inf"))
        state = self.new_state(batch)
        last = self.model.stream_steps(steps, ended=True)
        self.steps(state, last, steps, features, noise, samples, 0, forced, logits, temperature, workers)
        return samples, logits


class SubscaleCpuStream(EngineStream):
    """The native loop over a stream: each chunk runs the steps its conditioning allows (see
    `SubscaleWaveRNN.stream_steps`) and returns the samples made up to the first one still missing;
    `finish` runs the rest with the end where it fell. The per-sample conditioning, noise and
    samples are kept from the first sample not yet returned on, and the last one that has arrived
    (a sample past the end reads its conditioning, as in a whole utterance), in a `SampleWindow`."""

    def __init__(self, loop: SubscaleCpuLoop, batch: int, temperature: float, workers: int) -> None:
        self.loop, self.model, self.temperature, self.workers = loop, loop.model, temperature, workers
        self.state = loop.new_state(batch)
        self.returned = 0  # samples returned (the window starts there, or at the last sample that has arrived)
        features = ((self.model.core.cond_channels,), torch.float32)
        self.window = SampleWindow(batch, features=features, noise=((2,), torch.float32), samples=((), torch.long))

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        Engine.check_inputs(self.model, cond, noise)
        features = self.model.upsample(cond.detach().to("cpu", torch.float32))
        self.window.append(features=features, noise=noise.detach().to("cpu", torch.float32))
        return self._advance(ended=False)

    def finish(self) -> torch.Tensor | None:
        return self._advance(ended=True) if self.window.end else None

    def _advance(self, ended: bool) -> torch.Tensor:
        window, model = self.window, self.model
        known = window.end
        rows = {name: window.rows(name) for name in ("features", "noise", "samples")}
        last = model.stream_steps(known, ended)
        self.loop.steps(self.state, last, known, rows["features"], rows["noise"], rows["samples"], window.origin,
                        temperature=self.temperature, workers=self.workers)  # fmt: skip
        made = model.stream_made(self.state.step, known)
        out = rows["samples"][:, self.returned - window.origin : made - window.origin].clone()
        self.returned = made
        window.drop(min(made, known - 1) - window.origin)  # keep the last row: a sample past the end reads it
        return out
