"""WaveNet's sampling loop in the compiled extension vocoders._native (csrc/kern_wavenet.h).

The weights are packed once (engines/packing.py layout: 16-row blocks, float32 / bfloat16 / int8
storage, float32 accumulation); every call passes the frame-rate layer conditioning computed by
PyTorch and runs the whole loop in C, the streams of a worker stepping together.
"""

from __future__ import annotations

import os

import torch

from ...native import native_status
from .packing import pack_matrix
from .shares import row_address, run_in_shares


class NativeWaveNet:
    """Packed weights of one WaveNet and the call into `wavenet_run`."""

    def __init__(self, model, dtype: str, threads: int | None = None) -> None:
        self.native, reason = native_status()
        if self.native is None:
            raise RuntimeError(reason)
        self.model, self.dtype, self.threads = model, dtype, threads
        self.isa = os.environ.get("VOCODERS_ISA", "auto")
        with torch.no_grad():
            L, G, R, k = model.dilated_weight.shape
            taps_major = model.dilated_weight.permute(0, 1, 3, 2).reshape(L, G, k * R)  # column j*R + r: tap j
            self.dilated = [pack_matrix(taps_major[l], None, dtype) for l in range(L)]
            self.out = [pack_matrix(model.out_weight[l], model.out_bias[l], dtype) for l in range(L)]
            self.head1 = pack_matrix(model.head1.weight, model.head1.bias, dtype)
            self.head2 = pack_matrix(model.head2.weight, model.head2.bias, dtype)
            self.embedding = model.embedding.weight.detach().float().contiguous().clone()
            self.upsample = model.upsampler.weight.detach().float().contiguous().clone()
            self.dilations = torch.tensor(model.dilations, dtype=torch.int64)
        m = model
        self.spec = (
            m.layers, m.kernel_size, m.residual_channels, m.gate_channels, m.skip_channels, m.head_channels,
            m.classes, m.upsampler.taps, m.hop_length, m.silence, self.dilations.data_ptr(),
            tuple(p.spec() for p in self.dilated), tuple(p.spec() for p in self.out),
            self.head1.spec(), self.head2.spec(), self.embedding.data_ptr(), self.upsample.data_ptr(),
        )  # fmt: skip

    @property
    def weight_bytes(self) -> int:
        return sum(p.nbytes for p in (*self.dilated, *self.out, self.head1, self.head2))

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ring buffers [B, sum_l (K - 1) d_l * R] zeros, previous [B] silence): a stream's state at its start."""
        m = self.model
        rows = sum((m.kernel_size - 1) * d for d in m.dilations)
        return torch.zeros(batch, rows * m.residual_channels), torch.full((batch,), m.silence, dtype=torch.long)

    def run(self, local, constant, noise, forced, samples, logits, temperature: float, state=None) -> None:
        """local [B, F', L*G], constant [B, L*G], noise [B, T] float32; forced [B, T] or None; out: samples, logits.

        state: (ring buffers, previous, start time) of a stream, the first two updated in place, or None.
        """
        batch, frames, _ = local.shape
        steps = samples.shape[1]
        width = 0 if logits is None else logits.shape[-1]

        def share(first: int, last: int) -> None:
            rows = [row_address(t, first) for t in (local, constant, noise, forced, samples, logits)]
            job = (last - first, steps, frames, width, *rows, float(temperature))
            if state is None:
                self.native.wavenet_run(self.spec, job, self.isa)
            else:
                history, previous, start = state
                carried = (row_address(history, first), row_address(previous, first), int(start))
                self.native.wavenet_run(self.spec, job, self.isa, carried)

        run_in_shares(batch, self.threads or torch.get_num_threads(), share)
