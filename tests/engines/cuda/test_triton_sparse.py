"""The Triton block-sparse (16x1 ELL) kernels against PyTorch.

Without a GPU they run under the Triton interpreter (TRITON_INTERPRET=1, set here before Triton is
first imported) on CPU tensors; on a CUDA machine the same tests run the compiled kernels.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

NO_TRITON = importlib.util.find_spec("triton") is None
pytestmark = pytest.mark.skipif(NO_TRITON, reason="needs triton (pip install '.[gpu]')")

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def pruned(shape, block, sparsity=0.8, seed=0):
    from vocoders.sparsity import prune_blocks

    torch.manual_seed(seed)
    weight = torch.randn(*shape)
    return weight * prune_blocks(weight, sparsity, block)


@pytest.mark.parametrize("block", [(16, 1), (4, 4), (1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ell_packing_round_trip(block, dtype):
    from vocoders.engines.cuda.triton_sparse import pack_ell

    weight = pruned((40, 48), block)
    matrix = pack_ell(weight, dtype)
    assert matrix.values.shape[0] == 3 and matrix.values.shape[2] == 16  # 40 rows -> 3 groups of 16
    assert torch.equal(matrix.to_dense(), weight.to(dtype).float())
    if block == (16, 1):  # every kept 16x1 block is stored once; the rest of the width is padding
        present = torch.nn.functional.pad(weight, (0, 0, 0, 8)).reshape(3, 16, 48).ne(0).any(dim=1)
        assert matrix.stored_blocks == int(present.sum()) and matrix.width == int(present.sum(dim=1).max())


@pytest.mark.parametrize("block,groups", [((16, 1), 1), ((16, 1), 4), ((4, 4), 2), ((1, 1), 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ell_matvec_kernel_matches_torch(block, groups, dtype):
    from vocoders.engines.cuda.triton_sparse import ell_matvec_launch, pack_ell

    weight = pruned((72, 64), block)
    matrix = pack_ell(weight, dtype, device=DEVICE)
    x, bias = torch.randn(64, device=DEVICE), torch.randn(72, device=DEVICE)
    y = ell_matvec_launch(matrix, x, bias, groups_per_program=groups)
    expected = matrix.to_dense() @ x + bias
    assert y.shape == (72,) and torch.allclose(y, expected, atol=1e-5, rtol=1e-5)
    no_bias = ell_matvec_launch(matrix, x, None, groups_per_program=groups)
    assert torch.allclose(no_bias, expected - bias, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ell_matvec_kernel_takes_a_batch_of_streams(dtype):
    """x [B, cols] -> y [B, rows]: each stream's product as if alone (weights read once per program)."""
    from vocoders.engines.cuda.triton_sparse import ell_matvec_launch, pack_ell

    weight = pruned((40, 48), (16, 1))
    matrix = pack_ell(weight, dtype, device=DEVICE)
    x, bias = torch.randn(3, 48, device=DEVICE), torch.randn(40, device=DEVICE)
    out = torch.full((3, 40), float("nan"), device=DEVICE)
    y = ell_matvec_launch(matrix, x, bias, groups_per_program=2, out=out)
    assert y is out and torch.allclose(y, x @ matrix.to_dense().t() + bias, atol=1e-5, rtol=1e-5)
    single = ell_matvec_launch(matrix, x[1], bias, groups_per_program=2)
    assert torch.allclose(single, y[1], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match=r"x must be \[48\] or \[B, 48\]"):
        ell_matvec_launch(matrix, torch.randn(3, 40, device=DEVICE))
    with pytest.raises(ValueError, match="out must be a contiguous float32"):
        ell_matvec_launch(matrix, x, out=torch.empty(3, 41, device=DEVICE))
