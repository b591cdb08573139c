"""LPCNet's sample arithmetic in numba, exactly as the PyTorch code does it, and the noise-injected re-synthesis.

The compiled engine (`engines/cpu/lpcnet.py`) and training (`LPCNet._noisy_history`) share these:
mu-law classes by a search over the float32 class thresholds of `vocoders.audio.mulaw_encode`
itself (torch's float32 log1p is not the C library's, so recomputing the formula here would
disagree next to some boundaries), the 16-bit PCM rounding of `models.lpcnet.pcm_classes`, and
the prediction summed in `lpc.predict_step`'s order. No fastmath anywhere: these must round as
PyTorch's float32 elementwise operations do.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from numba import njit

from ..audio import mulaw_decode, mulaw_encode

EXCITATION_CLASSES = 256
PCM_BITS = 16

_PCM_HALF = 1 << (PCM_BITS - 1)  # 32768: the class of 0.0, and the scale of one unit
_PCM_MAX = (1 << PCM_BITS) - 1


# ---- mu-law thresholds ---------------------------------------------------------------------------
def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys that sort as the values do (-0.0 and 0.0 share key 0)."""
    bits = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _unordered(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, np.int64)
    bits = np.where(keys < 0, (-keys) | 0x80000000, keys).astype(np.uint32)
    return bits.view(np.float32)


@functools.lru_cache(maxsize=1)
def mulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    """(thresholds [255] float32, decoded [256] float32) of the 256-class mu-law of `vocoders.audio`.

    thresholds[k - 1] is the smallest float32 x with mulaw_encode(x) >= k, so the class of x is
    the number of thresholds <= x (NaN: none, class 0, as torch gives). Found by bisection over
    the ordered float32 values in [-1, 1] (mulaw_encode is non-decreasing; the tests check the
    classes next to every threshold and on a dense grid).
    """
    classes = np.arange(1, EXCITATION_CLASSES, dtype=np.int64)
    low = np.full(classes.shape, _ordered(np.float32(-1.0)), np.int64)  # class 0 here
    high = np.full(classes.shape, _ordered(np.float32(1.0)), np.int64)  # class 255 here
    with torch.no_grad():
        while np.any(high - low > 1):
            middle = (low + high) // 2
            reached = mulaw_encode(torch.from_numpy(_unordered(middle)), EXCITATION_CLASSES).numpy() >= classes
            high = np.where(reached, middle, high)
            low = np.where(reached, low, middle)
        decoded = mulaw_decode(torch.arange(EXCITATION_CLASSES), EXCITATION_CLASSES).float().numpy()
    return np.ascontiguousarray(_unordered(high)), np.ascontiguousarray(decoded)


@njit(cache=True, nogil=True)
def mulaw_class(x, thresholds):
    """The mu-law class of float32 x: the number of thresholds <= x (a NaN compares false: 0)."""
    low = 0
    high = thresholds.shape[0]
    while low < high:
        middle = (low + high) >> 1
        if thresholds[middle] <= x:
            low = middle + 1
        else:
            high = middle
    return low


@njit(cache=True, nogil=True)
def pcm_class(x):
    """`models.lpcnet.pcm_classes` of one float32: round(x * 32768) in float64 (half to even) + 32768, clipped."""
    value = np.float64(x)
    if value != value:  # NaN: torch's long() of it is INT64_MIN, clipped to 0
        return 0
    value = min(max(value, -1.0), 1.0)
    u = np.int64(np.rint(value * 32768.0)) + _PCM_HALF
    return min(max(u, 0), _PCM_MAX)


@njit(cache=True, nogil=True)
def pcm_value(u):
    """`models.lpcnet.pcm_values` of one class: (u - 32768) / 32768 in float64, as float32."""
    return np.float32(np.float64(u - _PCM_HALF) / 32768.0)


@njit(cache=True, nogil=True)
def mulaw_classes(values, thresholds):
    """mu-law classes of a float32 array (for tests and tools)."""
    out = np.empty(values.shape[0], np.int64)
    for i in range(values.shape[0]):
        out[i] = mulaw_class(values[i], thresholds)
    return out


@njit(cache=True, nogil=True)
def pcm_class_array(values):
    """PCM classes of a float32 array (for tests and tools)."""
    out = np.empty(values.shape[0], np.int64)
    for i in range(values.shape[0]):
        out[i] = pcm_class(values[i])
    return out


@njit(cache=True, nogil=True)
def noisy_history(clean, lpc, offsets, thresholds, decoded, period, gain, taps, limit, scale):
    """The re-synthesis of `LPCNet._noisy_history` (its PyTorch loop is the reference), stream by stream.

    clean [B, T] f32 (the pre-emphasised signal), lpc [B, T, order] f32 (each sample's predictor),
    offsets [B, T] int64 (the noise, in mu-law classes); thresholds, decoded: `mulaw_tables()`;
    the long-term predictor: period [B, T] int64, gain [B, T] f32, taps [2M + 1] f32 (0 taps: none),
    limit (0: no bound), summed as `lpc.long_term_step`; scale [B, T] f32: the excitation scale a
    of each sample (ones without the frame gain: x / 1 and 1 x are exact).
    Returns s_{t-1} and p_t (f32), e_{t-1} as fed and the clean target e_t (int64), each [B, T].
    """
    batch, steps = clean.shape
    order = lpc.shape[2]
    n_taps = taps.shape[0]
    half = n_taps // 2
    limit32 = np.float32(limit)
    reach = 1
    if n_taps > 0:
        for b in range(batch):
            for t in range(steps):
                reach = max(reach, period[b, t] + half + 1)
    residuals = np.zeros(reach, np.float32)
    signal_in = np.empty((batch, steps), np.float32)
    prediction = np.empty((batch, steps), np.float32)
    excitation_in = np.empty((batch, steps), np.int64)
    target = np.empty((batch, steps), np.int64)
    history = np.zeros(order, np.float32)
    for b in range(batch):
        history[:] = 0.0
        residuals[:] = 0.0
        previous = EXCITATION_CLASSES // 2
        for t in range(steps):
            p = np.float32(0.0)
            for k in range(order):
                p = np.float32(p + np.float32(lpc[b, t, k] * history[k]))
            short = p
            if n_taps > 0:
                y = np.float32(0.0)
                for j in range(n_taps):
                    y = np.float32(y + np.float32(taps[j] * residuals[period[b, t] - (j - half) - 1]))
                if limit32 > 0:
                    y = min(max(y, -limit32), limit32)
                p = np.float32(short + np.float32(gain[b, t] * y))
            e = mulaw_class(np.float32(np.float32(clean[b, t] - p) / scale[b, t]), thresholds)
            signal_in[b, t] = history[0]
            prediction[b, t] = p
            excitation_in[b, t] = previous
            target[b, t] = e
            previous = min(max(e + offsets[b, t], 0), EXCITATION_CLASSES - 1)
            noisy = pcm_value(pcm_class(np.float32(p + np.float32(scale[b, t] * decoded[previous]))))
            for k in range(order - 1, 0, -1):
                history[k] = history[k - 1]
            history[0] = noisy
            if n_taps > 0:
                for k in range(reach - 1, 0, -1):
                    residuals[k] = residuals[k - 1]
                residuals[0] = np.float32(noisy - short)
    return signal_in, prediction, excitation_in, target
