"""Block-sparse (16x1) matrix-vector products in Triton: the GPU side of Sparse WaveRNN (engine
`sparse-cuda`, engines/cuda/sparse.py), for one stream or a few (one launch; each program reads its
weights once and applies them to every stream).

Layout (ELL over 16-row groups): rows pad to a multiple of 16; every group of 16 output rows keeps
the same number of blocks, `width` (its largest block count), the shorter groups padded with zero
blocks that point at column 0:
    values [groups, width, 16]   the weight dtype (float32, bfloat16, float16)
    cols   [groups, width]       int32, the column of each block
A program owning GROUPS consecutive groups loads its [GROUPS, WIDTH, 16] values once (in a persistent
kernel they stay in registers across steps), gathers one activation per block and reduces over the
blocks: 16 outputs per group for WIDTH loads of x, the 16x1 property the WaveRNN paper exploits.
The padding costs what the busiest group costs; magnitude pruning per gate keeps groups balanced
(at 95% sparsity of WaveRNN-896, about 45 blocks a group on average against some 65 at most).

Any matrix packs (its exact zeros decide the blocks), so 4x4- or unstructured-pruned weights run
too, with more (partly zero) blocks. Everything here runs compiled on a GPU and under the Triton
interpreter (TRITON_INTERPRET=1) on a CPU, which is how the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

GROUP_ROWS = 16


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass
class EllMatrix:
    """A matrix in 16x1 ELL form (see the module docstring)."""

    values: torch.Tensor
    cols: torch.Tensor
    rows: int
    n_cols: int

    @property
    def groups(self) -> int:
        return self.values.shape[0]

    @property
    def width(self) -> int:
        return self.values.shape[1]

    @property
    def stored_blocks(self) -> int:
        """Blocks holding weights (the rest of the width is padding)."""
        return int((self.values != 0).any(dim=2).sum())

    def to_dense(self) -> torch.Tensor:
        """The float32 matrix [rows, n_cols] (for tests)."""
        out = torch.zeros(self.groups, self.n_cols, GROUP_ROWS, device=self.values.device)
        out.scatter_add_(1, self.cols.long().unsqueeze(-1).expand(-1, -1, GROUP_ROWS), self.values.float())
        return out.permute(0, 2, 1).reshape(-1, self.n_cols)[: self.rows]


def pack_ell(weight: torch.Tensor, dtype: torch.dtype = torch.float32, device=None) -> EllMatrix:
    """weight [rows, cols] -> 16x1 ELL (blocks with any non-zero weight kept, in column order)."""
    weight = weight.detach().float().cpu()
    rows, cols = weight.shape
    groups = -(-rows // GROUP_ROWS)
    padded = torch.zeros(groups * GROUP_ROWS, cols)
    padded[:rows] = weight
    tiles = padded.reshape(groups, GROUP_ROWS, cols).permute(0, 2, 1)  # [groups, cols, 16]
    present = (tiles != 0).any(dim=2)
    width = max(1, int(present.sum(dim=1).max()))
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :width]  # present columns first
    kept = torch.gather(present, 1, order)
    values = torch.gather(tiles, 1, order.unsqueeze(-1).expand(-1, -1, GROUP_ROWS)) * kept.unsqueeze(-1)
    block_cols = torch.where(kept, order, torch.zeros_like(order)).to(torch.int32)
    device = device if device is not None else weight.device
    return EllMatrix(values.to(device, dtype).contiguous(), block_cols.to(device).contiguous(), rows, cols)


@triton.jit
def load_ell_tile(values_ptr, cols_ptr, group0, n_groups, width, GROUPS: tl.constexpr, WIDTH: tl.constexpr):
    """Groups group0 .. group0 + GROUPS of an ELL matrix -> (values [GROUPS, WIDTH, 16], cols [GROUPS, WIDTH]).

    Groups past n_groups and blocks past width read as zero blocks of column 0.
    """
    g = group0 + tl.arange(0, GROUPS)
    b = tl.arange(0, WIDTH)
    r = tl.arange(0, 16)
    where = (g[:, None] < n_groups) & (b[None, :] < width)
    cols = tl.load(cols_ptr + g[:, None] * width + b[None, :], mask=where, other=0)
    offsets = (g[:, None, None] * width + b[None, :, None]) * 16 + r[None, None, :]
    values = tl.load(values_ptr + offsets, mask=where[:, :, None], other=0.0)
    return values, cols


@triton.jit
def ell_matvec(values, cols, x_ptr, GROUPS: tl.constexpr):
    """values [GROUPS, WIDTH, 16] times x gathered at cols [GROUPS, WIDTH] -> [GROUPS * 16] float32.

    x is read with `.cg` (from L2): in the engine it is the hidden state other programs just wrote.
    """
    x = tl.load(x_ptr + cols, cache_modifier=".cg")
    y = tl.sum(values.to(tl.float32) * x[:, :, None], axis=1)  # [GROUPS, 16]
    return tl.reshape(y, [GROUPS * 16])


@triton.jit
def ell_matvec_kernel(
    values_ptr, cols_ptr, bias_ptr, x_ptr, y_ptr, n_rows, n_cols, n_groups, width, n_streams,
    GROUPS: tl.constexpr, WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Y = X W^T (+ bias) for an ELL matrix W and n_streams rows of X [n_streams, n_cols] (Y [n_streams,
    n_rows]); program p computes rows [16 GROUPS p, 16 GROUPS (p + 1)) of every stream, loading its
    tile of weights once and reusing it for each stream in turn."""
    group0 = tl.program_id(0) * GROUPS
    values, cols = load_ell_tile(values_ptr, cols_ptr, group0, n_groups, width, GROUPS, WIDTH)
    rows = group0 * 16 + tl.arange(0, GROUPS * 16)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rows, mask=rows < n_rows, other=0.0)
    for stream in range(n_streams):
        y = ell_matvec(values, cols, x_ptr + stream * n_cols, GROUPS)
        if HAS_BIAS:
            y += bias
        tl.store(y_ptr + stream * n_rows + rows, y, mask=rows < n_rows)


def ell_matvec_launch(
    matrix: EllMatrix,
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    groups_per_program: int = 4,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = W x (+ bias) with one launch, float32 out, on the matrix's device.

    x [cols] -> y [rows], or a batch of streams x [B, cols] -> y [B, rows] (each program reads its
    weights once for all B). `out`, when given, receives y (a float32 tensor of y's shape).
    """
    if x.shape[-1] != matrix.n_cols or x.dim() not in (1, 2):
        raise ValueError(f"x must be [{matrix.n_cols}] or [B, {matrix.n_cols}], got {tuple(x.shape)}")
    streams = 1 if x.dim() == 1 else x.shape[0]
    shape = (matrix.rows,) if x.dim() == 1 else (streams, matrix.rows)
    if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous float32 tensor of shape {shape}")
    y = torch.empty(shape, device=x.device, dtype=torch.float32) if out is None else out
    grid = (-(-matrix.groups // groups_per_program),)
    ell_matvec_kernel[grid](
        matrix.values, matrix.cols, bias if bias is not None else y, x.contiguous(), y,
        matrix.rows, matrix.n_cols, matrix.groups, matrix.width, streams,
        GROUPS=groups_per_program, WIDTH=next_power_of_2(matrix.width), HAS_BIAS=bias is not None,
    )  # fmt: skip
    return y
