"""Triton building blocks shared by the sampling kernels (import only where Triton is installed).

Every function here is a `@triton.jit` helper that runs both compiled on a GPU and under the Triton
interpreter (TRITON_INTERPRET=1) on a CPU, so the kernels built from them are tested in CI.

Conventions: matrices are row-major with a row stride; a "tile" is the rows a program owns, loaded
once and padded to power-of-two blocks with zeros; vectors exchanged between programs of one launch
are read with `.cg` (from L2, never a stale L1 line).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_tile(ptr, row0, n_rows, n_cols, stride, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Rows row0 .. row0 + ROWS of a [n_rows, n_cols] matrix -> [ROWS, COLS], zeros outside it."""
    rows = row0 + tl.arange(0, ROWS)
    cols = tl.arange(0, COLS)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def load_vector(ptr, first, n, SIZE: tl.constexpr):
    """Elements first .. first + SIZE of a read-only vector of length n -> [SIZE], zeros outside it."""
    index = first + tl.arange(0, SIZE)
    return tl.load(ptr + index, mask=index < n, other=0.0)


@triton.jit
def load_exchanged(ptr, first, n, SIZE: tl.constexpr):
    """Like `load_vector`, for data other programs of this launch wrote: read from L2, bypassing L1."""
    index = first + tl.arange(0, SIZE)
    return tl.load(ptr + index, mask=index < n, other=0.0, cache_modifier=".cg")


@triton.jit
def matvec(tile, x):
    """tile [R, K] (any float dtype) times x [K] float32 -> [R] float32, accumulated in float32."""
    return tl.sum(tile.to(tl.float32) * x[None, :], axis=1)


@triton.jit
def tanh(x):
    """tanh from one exp of a non-positive argument (no overflow, absolute error ~1 ulp)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -t, t)


@triton.jit
def draw_class(logits, n_classes, u, temperature, GREEDY: tl.constexpr, CLASSES: tl.constexpr):
    """Inverse-CDF draw, the rule of `vocoders.sampling.sample_categorical`.

    logits [CLASSES] (entries >= n_classes ignored); u: uniform scalar; temperature: float64 scalar.
    Returns the first k with cdf[k] > u * cdf[-1], the CDF accumulated in float64; argmax when GREEDY.
    """
    k = tl.arange(0, CLASSES)
    valid = k < n_classes
    if GREEDY:
        index = tl.argmax(tl.where(valid, logits, float("-inf")), axis=0).to(tl.int32)
    else:
        z = tl.where(valid, logits.to(tl.float64) / temperature, float("-inf"))
        weights = tl.exp(z - tl.max(z, axis=0))
        cdf = tl.cumsum(weights, axis=0)
        threshold = u.to(tl.float64) * tl.max(cdf, axis=0)
        index = tl.minimum(tl.sum((cdf <= threshold).to(tl.int32), axis=0), n_classes - 1)
    return index


@triton.jit
def pick(values, i, SIZE: tl.constexpr):
    """values[i] of a register vector [SIZE] (i a runtime scalar)."""
    return tl.sum(tl.where(tl.arange(0, SIZE) == i, values, 0), axis=0)


@triton.jit
def grid_sync(counter_ptr, target):
    """Wait until every program of the launch has arrived: a monotonic global counter reaches `target`.

    The caller passes target = programs * (number of this sync within the launch, from 1), so the
    counter (zeroed before the launch) never needs resetting. Only valid when all programs are
    resident at once (grid <= SMs at one program per SM); under the interpreter, programs run one
    after another, so only a grid of one program passes.
    """
    tl.debug_barrier()  # every thread of this program has issued its stores
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    while tl.load(counter_ptr, volatile=True) < target:
        pass
    tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")  # order the loads that follow
    tl.debug_barrier()
