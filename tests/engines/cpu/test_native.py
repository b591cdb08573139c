"""The compiled kernels of vocoders._native against PyTorch, on every instruction set this CPU runs."""

import pytest
import torch

from vocoders.engines.cpu.packing import pack_matrix, quantize
from vocoders.native import load_native

native = load_native()
pytestmark = pytest.mark.skipif(native is None, reason="vocoders._native is not built")
ISAS = native.isas() if native is not None else ()


def test_portable_code_is_always_there():
    assert ISAS[-1] == "portable"
    with pytest.raises(ValueError, match="not available"):
        native.read_sum(0, 0, 1, "quantum")


@pytest.mark.parametrize("isa", ISAS)
def test_read_sum_reads_every_value(isa):
    values = torch.arange(1024, dtype=torch.float32)
    assert native.read_sum(values.data_ptr(), values.numel(), 3, isa) == 3 * float(values.sum())


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("streams", [1, 2, 3, 6])
def test_packed_matvec_matches_torch(isa, dtype, streams):
    """Odd shapes (padding of rows and columns), a bias, several streams in one pass and beyond one."""
    generator = torch.Generator().manual_seed(streams)
    rows, cols = 37, 29
    weight = torch.randn(rows, cols, generator=generator) * 0.1
    bias = torch.randn(rows, generator=generator)
    packed = pack_matrix(weight, bias, dtype)
    x = torch.zeros(streams, packed.cols_padded + 3)
    x[:, :cols] = torch.randn(streams, cols, generator=generator)
    y = torch.full((streams, packed.rows_padded + 5), float("nan"))
    native.matvec(packed.spec(), x.data_ptr(), x.shape[1], y.data_ptr(), y.shape[1], streams, isa)
    exact = x[:, :cols] @ packed.dequantized().T + bias
    assert (y[:, :rows] - exact).abs().max() <= 1e-5
    assert torch.isnan(y[:, packed.rows_padded :]).all()  # nothing written past the padded rows
    if dtype == "float32":
        assert torch.equal(packed.dequantized(), weight)


def test_reduced_precision_rounding():
    weight = torch.tensor([[1.0, -0.5, 0.25, 1.0 + 2**-10], [0.0, 0.0, 0.0, 0.0]])
    values, scale = quantize(weight, "bfloat16")
    assert scale is None and values.float()[0, 3] == 1.0  # 8 mantissa bits: 1 + 2^-10 rounds to 1
    values, scale = quantize(torch.tensor([[1.0, -0.5, 0.25, -1.0], [0.0, 0.0, 0.0, 0.0]]), "int8")
    assert values.dtype == torch.int8 and values[0].tolist() == [127, -64, 32, -127]  # -63.5: half to even
    assert scale[1] == 1.0  # an all-zero row keeps a harmless scale
    with pytest.raises(ValueError, match="unknown weight dtype"):
        quantize(weight, "float8")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_batched_matvec_over_tiles_of_row_blocks(isa, dtype):
    """Rows in several L2 tiles (the last one partial), nine streams in three groups: each stream its own product."""
    generator = torch.Generator().manual_seed(9)
    rows, cols, streams = 600, 2100, 9
    weight = torch.randn(rows, cols, generator=generator) * 0.05
    bias = torch.randn(rows, generator=generator)
    packed = pack_matrix(weight, bias, dtype)
    x = torch.zeros(streams, packed.cols_padded)
    x[:, :cols] = torch.randn(streams, cols, generator=generator)
    y = torch.full((streams, packed.rows_padded), float("nan"))
    native.matvec(packed.spec(), x.data_ptr(), x.shape[1], y.data_ptr(), y.shape[1], streams, isa)
    exact = x[:, :cols] @ packed.dequantized().T + bias
    assert (y[:, :rows] - exact).abs().max() <= 1e-3
    one = torch.full((1, packed.rows_padded), float("nan"))
    native.matvec(packed.spec(), x[4].data_ptr(), x.shape[1], one.data_ptr(), one.shape[1], 1, isa)
    assert torch.equal(one[0], y[4])  # a stream's result does not depend on the others in its batch


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("streams", [1, 2, 3, 4])
def test_float32_rows_do_not_depend_on_how_blocks_are_grouped(isa, streams):
    """Float32 row blocks go through the kernel in groups (8, 6, 4, 2 or 1 at once by ISA and
    streams): every count of blocks from 1 to 13 leaves each row's sum bit for bit as in the full matrix."""
    generator = torch.Generator().manual_seed(streams)
    cols = 45
    weight = torch.randn(13 * 16, cols, generator=generator) * 0.1
    bias = torch.randn(13 * 16, generator=generator)
    x = torch.randn(streams, cols, generator=generator)

    def product(rows: int) -> torch.Tensor:
        packed = pack_matrix(weight[:rows], bias[:rows])
        y = torch.full((streams, packed.rows_padded), float("nan"))
        native.matvec(packed.spec(), x.data_ptr(), cols, y.data_ptr(), packed.rows_padded, streams, isa)
        return y

    full = product(13 * 16)
    assert (full - (x @ weight.T + bias)).abs().max() <= 1e-5
    for blocks in range(1, 13):
        assert torch.equal(product(16 * blocks), full[:, : 16 * blocks]), blocks
