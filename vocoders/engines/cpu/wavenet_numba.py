"""WaveNet's sampling loop in numba: the fallback of the 'cpu' engine when vocoders._native is not built.

The whole loop is one compiled function (no Python per sample), cached on disk by numba after its
first compilation. Layout (input-major, so every product runs over contiguous outputs):
    dilated [L, k * R, G]   rows j * R .. j * R + R - 1: tap j (x_l[t - (k - 1 - j) d_l])
    out     [L, G/2, R + S] residual columns first, then skip
    scales  per output channel ([L, G] and [L, R + S]); ones unless weights are int8
    head1 [S, H], head2 [H, classes]: always float32 (they set the logits directly)
Ring buffers: one float32 array [sum_l (k - 1) d_l, R]; layer l owns rows offset_l ..
offset_l + (k - 1) d_l - 1 and stores its input of step s in row offset_l + s mod (k - 1) d_l.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from .numba_ops import FASTMATH, accumulate, sample_inverse_cdf, sigmoid32, tanh32

_SQRT_HALF = np.float32(math.sqrt(0.5))


@njit(fastmath=FASTMATH, nogil=True, cache=True)
def wavenet_loop(
    embedding,  # [classes, R] f32
    dilated,  # [L, k * R, G] f32 | u16 (bf16 bits) | i8
    dilated_scale,  # [L, G] f32
    out_w,  # [L, G/2, R + S] like `dilated`
    out_scale,  # [L, R + S] f32
    out_bias,  # [L, R + S] f32
    head1,  # [S, H] f32
    head1_bias,  # [H] f32
    head2,  # [H, C] f32
    head2_bias,  # [C] f32
    dilations,  # [L] int64
    kernel,  # taps per dilated convolution
    local,  # [F + 2u, L * G] f32 frame-rate layer conditioning
    constant,  # [L * G] f32 bias + speaker projection
    upsample,  # [hop, taps] f32 upsampler kernel
    noise,  # [T] f32 uniform
    temperature,
    forced,  # [T] int64 classes to feed back, or [0] to sample
    silence,  # class before the first sample
    logits_out,  # [T, C] f32 to record logits, or [0, C]
    samples_out,  # [T] int64
):
    layers = dilations.shape[0]
    R = embedding.shape[1]
    G = dilated.shape[2]
    half = G // 2
    RS = out_w.shape[2]
    S = RS - R
    H = head1.shape[1]
    C = head2.shape[1]
    hop = upsample.shape[0]
    taps = upsample.shape[1]
    steps = samples_out.shape[0]
    skip_scale = np.float32(1.0 / math.sqrt(layers))

    spans = (kernel - 1) * dilations
    offsets = np.zeros(layers, np.int64)
    for layer in range(1, layers):
        offsets[layer] = offsets[layer - 1] + spans[layer - 1]
    history = np.zeros((offsets[layers - 1] + spans[layers - 1], R), np.float32)

    x = np.empty(R, np.float32)
    a = np.empty(G, np.float32)
    z = np.empty(half, np.float32)
    o = np.empty(RS, np.float32)
    skip = np.empty(S, np.float32)
    hidden = np.empty(H, np.float32)
    logits = np.empty(C, np.float32)
    cdf = np.empty(C, np.float64)
    previous = silence

    for t in range(steps):
        frame = t // hop
        phase = t - frame * hop
        for r in range(R):
            x[r] = embedding[previous, r]
        skip[:] = 0.0
        for layer in range(layers):
            d = dilations[layer]
            span = spans[layer]
            base = offsets[layer]
            w = dilated[layer]
            a[:] = 0.0
            for j in range(kernel - 1):
                accumulate(a, w, j * R, history[base + (t - (kernel - 1 - j) * d) % span], R, G)
            accumulate(a, w, (kernel - 1) * R, x, R, G)
            column = layer * G
            for g in range(G):
                a[g] = a[g] * dilated_scale[layer, g] + constant[column + g]
            for k in range(taps):
                u = upsample[phase, k]
                row = local[frame + k]
                for g in range(G):
                    a[g] += u * row[column + g]
            for g in range(half):
                z[g] = tanh32(a[g]) * sigmoid32(a[half + g])
            history[base + t % span, :] = x  # x_l[t] replaces x_l[t - (k - 1) d], now used up
            o[:] = 0.0
            accumulate(o, out_w[layer], 0, z, half, RS)
            for r in range(R):
                x[r] = (x[r] + o[r] * out_scale[layer, r] + out_bias[layer, r]) * _SQRT_HALF
            for s in range(S):
                skip[s] += o[R + s] * out_scale[layer, R + s] + out_bias[layer, R + s]
        for s in range(S):
            skip[s] = max(skip[s] * skip_scale, np.float32(0.0))
        hidden[:] = head1_bias
        accumulate(hidden, head1, 0, skip, S, H)
        for h in range(H):
            hidden[h] = max(hidden[h], np.float32(0.0))
        logits[:] = head2_bias
        accumulate(logits, head2, 0, hidden, H, C)
        if logits_out.shape[0] > 0:
            logits_out[t, :] = logits
        if forced.shape[0] > 0:
            previous = forced[t]
        else:
            previous = sample_inverse_cdf(logits, noise[t], temperature, cdf)
        samples_out[t] = previous


def _input_major(weight: torch.Tensor) -> np.ndarray:
    """[..., out, in] -> contiguous float32 numpy [..., in, out]."""
    return np.ascontiguousarray(weight.detach().float().transpose(-1, -2).cpu().numpy())


def quantize(weight: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Input-major float32 weights [..., in, out] -> (stored weights, float32 scales [..., out]).

    float32: unchanged, scales 1. bfloat16: round to nearest even, kept as uint16 bit patterns.
    int8: symmetric per output channel, w = q * scale with |q| <= 127.
    """
    ones = np.ones(weight.shape[:-2] + weight.shape[-1:], np.float32)
    if dtype == "float32":
        return np.ascontiguousarray(weight, np.float32), ones
    if dtype == "bfloat16":  # bit patterns, typed uint16
        bits = torch.from_numpy(np.ascontiguousarray(weight)).to(torch.bfloat16).view(torch.int16).numpy()
        return bits.view(np.uint16).copy(), ones
    if dtype == "int8":
        peak = np.abs(weight).max(axis=-2)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(weight / scale[..., None, :]), -127, 127).astype(np.int8)
        return np.ascontiguousarray(q), scale
    raise ValueError(f"unknown weight dtype {dtype!r}; use float32, bfloat16 or int8")


class NumbaWaveNet:
    """Packed weights of one WaveNet and the call into `wavenet_loop` (one stream at a time)."""

    def __init__(self, model, dtype: str) -> None:
        self.model, self.dtype = model, dtype
        with torch.no_grad():
            L, G, R, k = model.dilated_weight.shape
            dilated = _input_major(model.dilated_weight.permute(0, 1, 3, 2).reshape(L, G, k * R))  # [L, k*R, G]
            self.dilated, self.dilated_scale = quantize(dilated, dtype)
            self.out, self.out_scale = quantize(_input_major(model.out_weight), dtype)  # [L, G/2, R+S]
            self.out_bias = model.out_bias.detach().float().numpy().copy()
            self.embedding = model.embedding.weight.detach().float().numpy().copy()
            self.head1, self.head1_bias = _input_major(model.head1.weight), model.head1.bias.detach().numpy().copy()
            self.head2, self.head2_bias = _input_major(model.head2.weight), model.head2.bias.detach().numpy().copy()
            self.upsample = model.upsampler.weight.detach().float().numpy().copy()
            self.dilations = np.asarray(model.dilations, np.int64)

    @property
    def weight_bytes(self) -> int:
        arrays = (self.dilated, self.dilated_scale, self.out, self.out_scale, self.head1, self.head2)
        return int(sum(a.nbytes for a in arrays))

    def run(self, local, constant, noise, forced, samples, logits, temperature: float) -> None:
        """Same arguments as NativeWaveNet.run (torch tensors; `logits` may be None)."""
        m = self.model
        local, constant, noise = local.numpy(), constant.numpy(), noise.numpy()
        forced = None if forced is None else forced.numpy()
        out = samples.numpy()
        record = np.empty((samples.shape[0], 0, m.classes), np.float32) if logits is None else logits.numpy()
        no_forcing = np.empty(0, np.int64)
        for b in range(samples.shape[0]):
            wavenet_loop(
                self.embedding, self.dilated, self.dilated_scale, self.out, self.out_scale, self.out_bias,
                self.head1, self.head1_bias, self.head2, self.head2_bias, self.dilations, m.kernel_size,
                local[b], constant[b], self.upsample, noise[b], float(temperature),
                no_forcing if forced is None else forced[b], m.silence, record[b], out[b],
            )  # fmt: skip
