"""Small numba building blocks for compiled sampling loops (single thread, float32 arithmetic).

- `weight_value`: one stored weight as float32, whatever its storage: float32; int8 (times a
  per-output scale the caller applies); bfloat16 bit patterns in a uint16 array (numba has no
  half-precision arrays on the CPU).
- `accumulate`: acc[o] += sum_i W[row0 + i, o] * x[i], the matrix-vector product in "axpy" form over
  an input-major matrix, so the inner loop runs over contiguous outputs and vectorises.
- `exp32`, `tanh32`, `sigmoid32`: branch-free float32 versions that LLVM vectorises (the libm calls
  numba emits for np.tanh / np.exp do not vectorise). Absolute error below 1e-6.
- `sample_inverse_cdf`: the float64 inverse-CDF draw of `vocoders.sampling.sample_categorical`.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# No nnan/ninf/afn: keep IEEE special values and the exact libm exp of the sampler.
FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

_LOG2E = np.float32(1.4426950408889634)
_LN2 = np.float32(math.log(2.0))
_EXP2_MIN = np.float32(-126.0)
_EXP2_MAX = np.float32(126.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
# Taylor coefficients of e^r, |r| <= ln(2) / 2: degree 7 leaves a relative error below 1e-8.
_C2, _C3, _C4, _C5, _C6, _C7 = (np.float32(1.0 / math.factorial(k)) for k in range(2, 8))


@intrinsic
def bits_to_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value, i32 = args[0], ir.IntType(32)
        if bits.bitwidth > 32:
            value = builder.trunc(value, i32)
        elif bits.bitwidth < 32:
            value = builder.zext(value, i32)
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


def weight_value(w):
    """A stored weight as float32 (pure-Python form; numba uses the overload below)."""
    if isinstance(w, np.uint16):
        return np.array(np.uint32(w) << 16, np.uint32).view(np.float32)[()]
    return np.float32(w)


@overload(weight_value, inline="always")
def _weight_value(w):
    if w == types.uint16:  # bfloat16 bit pattern: the high half of a float32
        return lambda w: bits_to_float32(np.uint32(w) << 16)
    if w in (types.int8, types.float32):
        return lambda w: np.float32(w)
    return None


@njit(fastmath=FASTMATH, inline="always")
def accumulate(acc, weights, row0, x, n_in, n_out):
    """acc[:n_out] += weights[row0 : row0 + n_in, :n_out].T @ x[:n_in] (weights input-major)."""
    i = 0
    while i + 4 <= n_in:  # four inputs per pass: a quarter of the accumulator loads and stores
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        r = row0 + i
        for o in range(n_out):
            acc[o] += (
                weight_value(weights[r, o]) * x0
                + weight_value(weights[r + 1, o]) * x1
                + weight_value(weights[r + 2, o]) * x2
                + weight_value(weights[r + 3, o]) * x3
            )
        i += 4
    while i < n_in:
        xi = x[i]
        for o in range(n_out):
            acc[o] += weight_value(weights[row0 + i, o]) * xi
        i += 1


@njit(fastmath=FASTMATH, inline="always")
def exp32(x):
    """e^x in float32 for x in about [-87, 87]: 2^n by exponent bits times a polynomial for e^r."""
    y = min(max(x * _LOG2E, _EXP2_MIN), _EXP2_MAX)
    n = np.floor(y + _HALF)
    r = (y - n) * _LN2
    p = _ONE + r * (_ONE + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
    return p * bits_to_float32(np.int32(n) + 127 << 23)


@njit(fastmath=FASTMATH, inline="always")
def tanh32(x):
    return _ONE - _TWO / (exp32(_TWO * x) + _ONE)


@njit(fastmath=FASTMATH, inline="always")
def sigmoid32(x):
    return _ONE / (_ONE + exp32(-x))


@njit(inline="always")
def _softmax_cdf(logits, temperature, cdf):
    """cdf[k] = running sum of exp(logits / temperature - max) in float64; returns (max, total)."""
    top = -np.inf
    for k in range(logits.shape[0]):
        top = max(top, np.float64(logits[k]) / temperature)
    total = 0.0
    for k in range(logits.shape[0]):
        total += np.exp(np.float64(logits[k]) / temperature - top)
        cdf[k] = total
    return top, total


@njit(inline="always")
def _draw(cdf, n, threshold):
    """The first class whose running sum passes `threshold` (the count of those at or below it)."""
    count = 0
    for k in range(n):
        if cdf[k] <= threshold:
            count += 1
    return min(count, n - 1)


@njit(inline="always")
def sample_inverse_cdf(logits, uniform, temperature, cdf):
    """The class an inverse-CDF draw picks, as `sampling.sample_categorical` (float64 CDF).

    logits: [K] float32; uniform in [0, 1); temperature 0 = argmax; cdf: [K] float64 scratch.
    """
    n = logits.shape[0]
    if temperature <= 0.0:
        best = 0
        for k in range(1, n):
            if logits[k] > logits[best]:
                best = k
        return best
    _, total = _softmax_cdf(logits, temperature, cdf)
    return _draw(cdf, n, np.float64(uniform) * total)


@njit(inline="always")
def sample_inverse_cdf_floored(logits, uniform, temperature, floor, cdf):
    """`sample_inverse_cdf` with `sampling.sample_categorical`'s probability floor (floor > 0)."""
    n = logits.shape[0]
    if temperature <= 0.0 or floor <= 0.0:
        return sample_inverse_cdf(logits, uniform, temperature, cdf)
    top, total = _softmax_cdf(logits, temperature, cdf)
    running = 0.0
    for k in range(n):  # each class's weight again (the same exp), over the running total as torch divides
        running += max(np.exp(np.float64(logits[k]) / temperature - top) / total - floor, 0.0)
        cdf[k] = running
    return _draw(cdf, n, np.float64(uniform) * running)
