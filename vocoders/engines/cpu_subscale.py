"""Subscale WaveRNN on the compiled CPU loop: the B sub-tensors of a step go through the core together.

A staggered step (see `SubscaleWaveRNN.step`) produces one sample of every running sub-tensor. Per step:
- the masked dilated context CNN advances all B sub-tensors at once (PyTorch, one batched product
  per layer: `ContextStepper`, the reference's `SubscaleContext.advance` rearranged);
- the conditioning of the B samples (upsampled mel + context, [B, D]) is projected by W_cond with
  the native packed product for B streams (W_cond read once per step);
- the native WaveRNN loop runs one sample for the B streams (`vocoders._native.wavernn_run` with a
  one-sample job whose "frame" is that projection); its products walk the weights in tiles that stay
  in L2 while every group of streams passes over them, so R and O1-O4 come from memory once per step
  rather than once per sample.

So Python runs once per step of B samples, never per sample. Sub-tensors that are idle during the
ramp at the start and end of the order are left out of the native call, and their state stays as it was.
"""

from __future__ import annotations

import torch

from ..models.subscale import SubscaleWaveRNN
from .packing import pack_matrix, padded_vector
from .subscale_context_step import ContextStepper

# The weights tuple's upsampler entries: one tap, hop 1 (the job's conditioning is already per sample).
TAPS_INDEX, HOP_INDEX, UPSAMPLE_INDEX = 6, 7, 17
MATVEC_STREAMS = 64  # the most streams one vocoders._native.matvec call takes


class SubscaleCpuLoop:
    """Drives the native WaveRNN step over a Subscale WaveRNN's staggered order.

    packed: the core's `PackedWaveRNN`; native: the extension module; isa: its instruction set name.
    """

    def __init__(self, model: SubscaleWaveRNN, packed, native, isa: str) -> None:
        self.model, self.packed, self.native, self.isa = model, packed, native, isa
        self.identity = padded_vector(torch.ones(1), 16)  # upsampler weight of the one tap
        spec = list(packed.spec(model.core))
        spec[TAPS_INDEX], spec[HOP_INDEX], spec[UPSAMPLE_INDEX] = 1, 1, self.identity.data_ptr()
        self.weights = tuple(spec)
        self.w_cond = pack_matrix(packed.w_cond, None, packed.R.dtype)  # [3H, D], applied per step here
        self.stepper = ContextStepper(model.context)

    def run(
        self,
        cond: torch.Tensor,
        noise: torch.Tensor,
        forced: torch.Tensor | None,
        temperature: float,
        logits_width: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frame-rate conditioning [b, frames, D] -> (samples [b, T], logits [b, T, 2, width] or None).

        noise: [b, T, 2] float32; forced: [b, T] int64 targets (teacher forcing) or None.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the per-step ops are tiny: intra-op threads only add synchronisation
        try:
            return self._run(cond, noise, forced, temperature, logits_width)
        finally:
            torch.set_num_threads(threads)

    def _run(self, cond, noise, forced, temperature, logits_width):
        model = self.model
        B, Fh = model.subscale, model.horizon
        per_sample = model.upsample(cond.float())  # [b, T, D]
        batch, steps = per_sample.shape[:2]
        order = model.generation_order(steps)  # [S, B] sample index per sub-tensor, -1 idle
        index = order.clamp(min=0)
        state = model.start_state(batch, steps, "cpu")
        buffers = state.context
        positions = buffers["positions"]
        hidden = state.core[0].float().contiguous()  # [b * B, H]
        previous = state.core[1].contiguous()  # [b * B]
        streams, width, rows = batch * B, self.w_cond.cols_padded + 16, self.w_cond.rows_padded
        conditioning = torch.zeros(streams, width)  # rows padded: the kernel reads whole column groups
        projected = torch.zeros(streams, rows)  # [b * B, 3H rounded up to 16] (the kernel writes whole blocks)
        H3, w_cond_spec = self.w_cond.rows, self.w_cond.spec()
        samples = torch.empty(batch, steps, dtype=torch.long)
        logits = None if not logits_width else torch.full((batch, steps, 2, logits_width), float("-inf"))
        step_samples = torch.empty(batch * B, 1, dtype=torch.long)
        step_logits = torch.full((batch * B, 1, 2, max(1, logits_width)), float("-inf"))  # the kernel fills K of them
        sub = torch.arange(B)
        for t in range(order.shape[0]):
            position = t - sub * (Fh + 1)
            running = (position >= 0) & (position < positions)
            live = running.nonzero()  # contiguous (position falls with the sub-tensor), empty in gaps when N <= F
            context = self.stepper.advance(buffers, position + Fh)  # [b, B, D]
            at = index[t]
            torch.add(per_sample[:, at], context, out=conditioning[:, : self.w_cond.cols].view(batch, B, -1))
            for first in range(0, streams, MATVEC_STREAMS):
                self.native.matvec(
                    w_cond_spec,
                    conditioning[first].data_ptr(),
                    width,
                    projected[first].data_ptr(),
                    rows,
                    min(MATVEC_STREAMS, streams - first),
                    self.isa,
                )
            step_cond = projected if rows == H3 else projected[:, :H3].contiguous()  # [b * B, 3H]
            step_noise = noise[:, at].reshape(batch * B, 1, 2).contiguous()
            step_forced = None if forced is None else forced[:, at].reshape(batch * B, 1).contiguous()
            lo, hi = (int(live[0]), int(live[-1]) + 1) if len(live) else (0, 0)
            groups = [(0, batch * B)] if hi - lo == B else [(u * B + lo, u * B + hi) for u in range(batch) if hi > lo]
            for first, last in groups:
                self._native_step(
                    first, last, hidden, previous, step_cond, step_noise, step_forced, step_samples, step_logits,
                    logits_width, temperature,
                )  # fmt: skip
            out = step_samples.reshape(batch, B)
            in_signal = running & (B * position + sub < steps)
            model.context.write(buffers, position, model.context_values(out), in_signal)
            active = order[t] >= 0
            samples[:, order[t][active]] = out[:, active]
            if logits is not None:
                logits[:, order[t][active]] = step_logits.reshape(batch, B, 2, -1)[:, active]
        return samples, logits

    def _native_step(
        self, first, last, hidden, previous, projected, noise, forced, samples, logits, width, temperature
    ) -> None:
        """One sample of streams [first, last) through the native loop (all tensors have the stream axis first)."""

        def address(tensor: torch.Tensor | None) -> int:
            if tensor is None:
                return 0
            return tensor.data_ptr() + first * tensor.stride(0) * tensor.element_size()

        job = (
            last - first,
            1,
            0,
            1,
            1,
            width,
            address(hidden),
            address(previous),
            address(projected),
            address(noise),
            address(forced),
            address(samples),
            address(logits) if width else 0,
            float(temperature),
        )
        self.native.wavernn_run(self.weights, job, self.isa)
