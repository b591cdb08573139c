"""Block-sparse packing of pruned matrices for the native kernels (layout: `sparse_matrix` in
vocoders/csrc/kernels.h).

A weight [rows, cols] pruned in blocks of br x bc (br divides 16) becomes: rows padded to a multiple
of 16 and cut into groups of br rows; per group the blocks that hold any non-zero weight, in column
order. Arrays:
    group_start [groups + 1] int32   group g owns blocks group_start[g] .. group_start[g + 1]
    block_col   [blocks] int32       first column of each block
    values      [blocks, bc, br]     each block column by column (a 16x1 block is one 16-lane vector)
    bias        [rows padded] float32 or None
A matrix with most blocks present is packed dense (`dense` = True): values [cols, rows padded],
column-major, no indices; the kernel multiplies it over the non-zero inputs only (the ones a ReLU
left), reading each active column as one contiguous run.

The packing is found from the weights themselves (exact zeros), not from masks: a pruned matrix
packs the same whether or not its checkpoint kept the masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_ROWS = 16
# Codes shared with kernels.h (enum weight_dtype).
SPARSE_DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 3}
STORAGE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Block shapes with a vectorised kernel, and their cost per block relative to a 16x1 block.
FAST_BLOCKS = {(16, 1): 1.0, (4, 4): 1.3}
# A matrix whose cheapest packing keeps more than this fraction of its values is packed dense.
DENSE_ABOVE = 0.6


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass
class SparseMatrix:
    """A block-sparse matrix as the native kernels read it (tensors kept alive while they run)."""

    values: torch.Tensor
    group_start: torch.Tensor
    block_col: torch.Tensor
    bias: torch.Tensor | None
    rows: int
    cols: int
    block: tuple[int, int]
    dtype: str
    dense: bool

    @property
    def blocks(self) -> int:
        """16x1 / 4x4 / ... blocks stored (a dense matrix: its 16-row column runs)."""
        return self.values.numel() // (self.block[0] * self.block[1])

    @property
    def stored_weights(self) -> int:
        """Values stored (and read per product): blocks x block size."""
        return int(self.values.numel())

    @property
    def nbytes(self) -> int:
        """Bytes one product reads: values, indices (not for a dense matrix) and bias."""
        total = self.values.numel() * self.values.element_size()
        if not self.dense:
            total += (self.block_col.numel() + self.group_start.numel()) * 4
        if self.bias is not None:
            total += self.bias.numel() * 4
        return total

    def spec(self) -> tuple[int, int, int, int, int, int, int, int, int, int]:
        """(values, group_start, block_col, bias, rows, cols, block_rows, block_cols, dtype, dense) for _native."""
        return (
            self.values.data_ptr(),
            self.group_start.data_ptr(),
            self.block_col.data_ptr(),
            0 if self.bias is None else self.bias.data_ptr(),
            self.rows,
            self.cols,
            self.block[0],
            self.block[1],
            SPARSE_DTYPE_CODES[self.dtype],
            int(self.dense),
        )

    def to_dense(self) -> torch.Tensor:
        """The float32 weights [rows, cols] the kernel multiplies by (for tests)."""
        if self.dense:
            return self.values.float().T[: self.rows].contiguous()
        br, bc = self.block
        rows_padded = _round_up(self.rows, PACK_ROWS)
        out = torch.zeros(rows_padded // br, br, self.cols)
        counts = (self.group_start[1:] - self.group_start[:-1]).long()
        group_of_block = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        values = self.values.float()
        for c in range(bc):
            out[group_of_block, :, self.block_col.long() + c] = values[:, c, :]
        return out.reshape(rows_padded, self.cols)[: self.rows]


def block_presence(weight: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Which blocks of weight [rows, cols] hold a non-zero: [rows_padded / br, cols / bc] bool."""
    br, bc = block
    rows, cols = weight.shape
    padded = torch.zeros(_round_up(rows, PACK_ROWS), cols, dtype=weight.dtype)
    padded[:rows] = weight
    tiles = padded.reshape(padded.shape[0] // br, br, cols // bc, bc)
    return (tiles != 0).any(dim=3).any(dim=1)


def choose_block(weight: torch.Tensor) -> tuple[tuple[int, int], bool]:
    """The cheapest fast packing of weight [rows, cols]: (block shape, dense?)."""
    rows, cols = weight.shape
    costs = {}
    for block, per_block in FAST_BLOCKS.items():
        if cols % block[1] == 0:
            present = int(block_presence(weight, block).sum())
            costs[block] = (present * per_block, present * block[0] * block[1])
    block = min(costs, key=lambda b: costs[b][0])
    dense = costs[(16, 1)][1] > DENSE_ABOVE * _round_up(rows, PACK_ROWS) * cols
    return ((16, 1), True) if dense else (block, False)


def pack_sparse(
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    dtype: str = "float32",
    block: tuple[int, int] | None = None,
    dense: bool | None = None,
) -> SparseMatrix:
    """Pack weight [rows, cols] (and bias [rows]) in block-sparse form; `block`/`dense` None: choose."""
    if weight.dim() != 2:
        raise ValueError(f"pack_sparse expects a 2-D weight, got shape {tuple(weight.shape)}")
    if dtype not in STORAGE:
        raise ValueError(f"unknown weight dtype {dtype!r}; known: {', '.join(STORAGE)}")
    weight = weight.detach().float().cpu()
    if block is None:
        block, chosen_dense = choose_block(weight)
        dense = chosen_dense if dense is None else dense
    br, bc = block
    if PACK_ROWS % br or weight.shape[1] % bc:
        raise ValueError(f"block {br}x{bc} needs rows dividing 16 and columns dividing {weight.shape[1]}")
    dense = bool(dense) and block == (16, 1)
    rows, cols = weight.shape
    rows_padded = _round_up(rows, PACK_ROWS)
    padded = torch.zeros(rows_padded, cols)
    padded[:rows] = weight
    packed_bias = None
    if bias is not None:
        packed_bias = torch.zeros(rows_padded)
        packed_bias[:rows] = bias.detach().float().cpu()
    if dense:
        values = padded.T.to(STORAGE[dtype]).contiguous()
        no_index = torch.zeros(1, dtype=torch.int32)
        return SparseMatrix(values, no_index, no_index, packed_bias, rows, cols, (16, 1), dtype, True)
    present = block_presence(padded, block)
    tiles = padded.reshape(rows_padded // br, br, cols // bc, bc).permute(0, 2, 3, 1)  # [groups, blocks, bc, br]
    values = tiles[present].to(STORAGE[dtype]).contiguous()  # row-major over (group, block): column order
    group_start = torch.zeros(present.shape[0] + 1, dtype=torch.int32)
    group_start[1:] = torch.cumsum(present.sum(dim=1), 0).to(torch.int32)
    block_col = (present.nonzero()[:, 1] * bc).to(torch.int32).contiguous()
    return SparseMatrix(values, group_start, block_col, packed_bias, rows, cols, (br, bc), dtype, dense)
