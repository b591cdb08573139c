"""Weights packed for the native kernels (the layouts are documented in vocoders/csrc/kernels.h).

A matrix [rows, cols] becomes blocks of 16 rows; inside a block, groups of G columns (G = 1 for
float32, 2 for bfloat16, 4 for int8) take 64 bytes each, so the kernel streams the weights in
order and accumulates 16 outputs in one vector. Rows pad to a multiple of 16 and columns to a
multiple of G with zeros. Reduced precision keeps float32 accumulation: bfloat16 rounds each
weight to nearest even; int8 stores round(w / scale) with one float32 scale per row
(max |w| / 127, symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK_ROWS = 16
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "int8": 2}
GROUP_COLUMNS = {"float32": 1, "bfloat16": 2, "int8": 4}


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass
class PackedMatrix:
    """A packed matrix and its per-row scale (int8) and bias, all float32 but `data`.

    data: [rows_padded / 16, cols_padded / G, 16, G]; scale, bias: [rows_padded] or None.
    """

    data: torch.Tensor
    scale: torch.Tensor | None
    bias: torch.Tensor | None
    rows: int
    cols: int
    dtype: str

    @property
    def rows_padded(self) -> int:
        return _round_up(self.rows, PACK_ROWS)

    @property
    def cols_padded(self) -> int:
        return _round_up(self.cols, GROUP_COLUMNS[self.dtype])

    @property
    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in (self.scale, self.bias) if t is not None)
        return self.data.numel() * self.data.element_size() + extra

    def spec(self) -> tuple[int, int, int, int, int, int]:
        """(data, scale, bias, rows, cols, dtype code) with addresses as integers, for vocoders._native."""
        return (
            self.data.data_ptr(),
            0 if self.scale is None else self.scale.data_ptr(),
            0 if self.bias is None else self.bias.data_ptr(),
            self.rows,
            self.cols,
            DTYPE_CODES[self.dtype],
        )

    def dequantized(self) -> torch.Tensor:
        """The float32 weights [rows, cols] the kernel effectively multiplies by."""
        values = self.data.float().permute(0, 2, 1, 3).reshape(self.rows_padded, self.cols_padded)
        if self.scale is not None:
            values = values * self.scale.unsqueeze(1)
        return values[: self.rows, : self.cols].contiguous()


def quantize(weight: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight [rows, cols] float -> (stored values, per-row scale or None) for `dtype`."""
    weight = weight.detach().float()
    if dtype == "float32":
        return weight.contiguous(), None
    if dtype == "bfloat16":
        return weight.to(torch.bfloat16), None
    if dtype == "int8":
        scale = weight.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        values = torch.round(weight / scale.unsqueeze(1)).clamp_(-127, 127).to(torch.int8)
        return values, scale
    raise ValueError(f"unknown weight dtype {dtype!r}; known: {', '.join(DTYPE_CODES)}")


def pack_matrix(weight: torch.Tensor, bias: torch.Tensor | None = None, dtype: str = "float32") -> PackedMatrix:
    """Pack weight [rows, cols] (and bias [rows]) for the native matrix-vector kernels."""
    if weight.dim() != 2:
        raise ValueError(f"pack_matrix expects a 2-D weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    values, scale = quantize(weight, dtype)
    group = GROUP_COLUMNS[dtype]
    rows_padded, cols_padded = _round_up(rows, PACK_ROWS), _round_up(cols, group)
    padded = torch.zeros(rows_padded, cols_padded, dtype=values.dtype)
    padded[:rows, :cols] = values
    data = padded.reshape(rows_padded // PACK_ROWS, PACK_ROWS, cols_padded // group, group).permute(0, 2, 1, 3)
    packed_scale = None
    if scale is not None:
        packed_scale = torch.ones(rows_padded)
        packed_scale[:rows] = scale
    packed_bias = None
    if bias is not None:
        packed_bias = torch.zeros(rows_padded)
        packed_bias[:rows] = bias.detach().float()
    return PackedMatrix(data.contiguous(), packed_scale, packed_bias, rows, cols, dtype)


def padded_vector(values: torch.Tensor, length: int) -> torch.Tensor:
    """A float32 copy of 1-D `values`, zero-padded to `length` (kernels read whole 16-lane vectors)."""
    out = torch.zeros(length)
    out[: values.numel()] = values.detach().float().reshape(-1)
    return out
