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
"""

from __future__ import annotations

import torch

from ...models.subscale import SubscaleWaveRNN
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

        def share(first: int, last: int) -> None:
            job = (
                last - first,
                steps,
                logits_width,
                row_address(features, first),
                row_address(noise, first),
                row_address(forced, first),
                row_address(samples, first),
                row_address(logits, first),
                float(temperature),
            )
            self.native.subscale_run(self.core_spec, self.w_cond.spec(), self.context_spec, job, self.isa)

        run_in_shares(batch, workers, share)
        return samples, logits
