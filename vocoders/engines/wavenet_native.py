"""WaveNet's sampling loop in the compiled extension vocoders._native (csrc/kern_wavenet.h).

The weights are packed once (engines/packing.py layout: 16-row blocks, float32 / bfloat16 / int8
storage, float32 accumulation); every call passes the frame-rate layer conditioning computed by
PyTorch and runs the whole loop in C, the streams of a worker stepping together.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from ..native import native_status
from .packing import pack_matrix


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

    def run(self, local, constant, noise, forced, samples, logits, temperature: float) -> None:
        """local [B, F', L*G], constant [B, L*G], noise [B, T] float32; forced [B, T] or None; out: samples, logits."""
        batch, frames, _ = local.shape
        steps = samples.shape[1]
        workers = max(1, min(batch, self.threads or torch.get_num_threads()))
        bounds = [round(i * batch / workers) for i in range(workers + 1)]
        width = 0 if logits is None else logits.shape[-1]

        def address(tensor, first: int) -> int:
            return 0 if tensor is None else tensor.data_ptr() + first * tensor.stride(0) * tensor.element_size()

        def share(first: int, last: int) -> None:
            job = (
                last - first, steps, frames, width, address(local, first), address(constant, first),
                address(noise, first), address(forced, first), address(samples, first), address(logits, first),
                float(temperature),
            )  # fmt: skip
            self.native.wavenet_run(self.spec, job, self.isa)

        if workers == 1:
            share(0, batch)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in [pool.submit(share, bounds[i], bounds[i + 1]) for i in range(workers)]:
                result.result()
