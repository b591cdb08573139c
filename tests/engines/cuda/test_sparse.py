"""The block-sparse GPU engine (sparse-cuda) against the reference engine.

Without a GPU its Triton ELL kernel runs under the interpreter (TRITON_INTERPRET=1, set here before
Triton is first imported) on CPU tensors, and the CUDA-graph step runs its ops eagerly; the tests
marked `gpu` run the compiled kernel inside a captured CUDA graph.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

from vocoders.engines import ENGINES, PREFERENCE, make_engine  # noqa: E402
from vocoders.engines.cpu.sparse import rounded_model  # noqa: E402
from vocoders.engines.cuda.sparse import SparseCudaEngine, SparseGraphStepper  # noqa: E402
from vocoders.models import WaveRNN  # noqa: E402
from vocoders.sampling import draw_noise  # noqa: E402
from vocoders.sparsity import Pruner, PruningSchedule  # noqa: E402

from ..engine_checks import forced_draw_agreement, max_logit_error  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton ('.[gpu]')")
needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="CPU tensors run only under the Triton interpreter")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="needs a CUDA device")


def sparse_model(hidden=32, out_hidden=32, block="16x1", targets=("gru_hh", "O1", "O3"), sparsity=0.75, hop=16):
    """A tiny WaveRNN pruned in `block` blocks (R, and O1 / O3 by default), short hop for short runs."""
    from vocoders.features import MelConfig

    torch.manual_seed(0)
    mel = MelConfig(hop_length=hop).to_dict()
    model = WaveRNN(mel=mel, hidden_size=hidden, cond_channels=8, cond_blocks=1, out_hidden=out_hidden).eval()
    pruner = Pruner(model, PruningSchedule(final=sparsity, start=0, duration=1, every=1), block, targets=list(targets))
    pruner.prune(sparsity)
    pruner.apply()
    return model


def case(model: WaveRNN, batch: int, frames: int, seed: int = 0):
    """(mel, cond, noise) for `frames` frames of random conditioning."""
    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=gen) - 5
    with torch.no_grad():
        cond = model.conditioning(mel)
    return mel, cond, draw_noise(batch, model.num_samples(cond), model.noise_per_step, seed=seed)


def test_sparse_cuda_is_registered_after_the_dense_gpu_engine():
    assert ENGINES["sparse-cuda"] is SparseCudaEngine
    assert PREFERENCE.index("cuda") < PREFERENCE.index("sparse-cuda") < PREFERENCE.index("sparse-cpu")


def test_availability_and_refusals(monkeypatch):
    model = sparse_model()
    dense = WaveRNN(hidden_size=32, cond_channels=8, cond_blocks=1).eval()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert SparseCudaEngine.available(model, "cuda") is None
    assert "not sparse (R has 0% zeros" in SparseCudaEngine.available(dense, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in SparseCudaEngine.available(model, "cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "needs a CUDA device, got cpu" in SparseCudaEngine.available(model, "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert SparseCudaEngine.available(model, "cpu") is None  # the interpreter: CPU tensors, for tests
    assert "auto picks it on a CUDA device only" in SparseCudaEngine.available_to_auto(model, "cpu")
    assert make_engine("auto", model, "cpu").name != "sparse-cuda"  # never on a CPU device
    with pytest.raises(RuntimeError, match="engine 'sparse-cuda' cannot run wavernn on cpu: the model is not sparse"):
        make_engine("sparse-cuda", dense, "cpu")
    with pytest.raises(ValueError, match="stores weights as float32, bfloat16, float16, not 'int8'"):
        SparseCudaEngine(model, "cpu", dtype="int8")
    monkeypatch.setattr("vocoders.engines.cuda.sparse.triton_installed", lambda: False)
    assert "needs Triton" in SparseCudaEngine.available(model, "cpu")


@needs_interpreter
@pytest.mark.parametrize(
    "block, targets, batch, groups",
    [
        ("16x1", ("gru_hh", "O1", "O3"), 1, 1),
        ("16x1", ("gru_hh",), 2, 2),
        ("4x4", ("gru_hh", "O1", "O2", "O3", "O4"), 1, 8),  # programs of 8 groups: R's 6 leave 2 masked
    ],
    ids=["16x1-R-O1-O3-batch1", "16x1-R-only-batch2", "4x4-all-batch1"],
)
def test_sparse_cuda_matches_the_reference(monkeypatch, block, targets, batch, groups):
    """Float32, the same pruned weights and noise: the same samples over two chunks (state carried
    across the border), greedy too; teacher-forced logits within 1e-4 of the parallel pass."""
    model = sparse_model(block=block, targets=targets, hop=8)
    mel, cond, noise = case(model, batch=batch, frames=2)
    engine = make_engine("sparse-cuda", model, "cpu", chunk_frames=1, groups_per_program=groups)
    pack_names = {"gru_hh": "recurrent", "O1": "out1", "O2": "out2", "O3": "out3", "O4": "out4"}
    assert set(engine.ell) == {pack_names[t] for t in targets}  # the pruned matrices go sparse, the rest dense
    stepper = engine.sampler(batch).stepper
    assert isinstance(stepper, SparseGraphStepper) and not stepper.use_graph
    from vocoders.engines.cuda import triton_sparse

    launches, launch = [], triton_sparse.ell_matvec_launch
    monkeypatch.setattr(triton_sparse, "ell_matvec_launch", lambda *a, **k: launches.append(1) or launch(*a, **k))
    reference = make_engine("reference", model).generate(cond, noise)
    assert torch.equal(engine.generate(cond, noise), reference)
    assert len(launches) == len(engine.ell) * reference.shape[1]  # one ELL launch per sparse product
    with torch.no_grad():
        parallel = model.forward_logits(mel, reference)
    assert max_logit_error(engine.forced_logits(cond, reference), parallel) <= 1e-4
    greedy = make_engine("reference", model).generate(cond, noise, temperature=0.0)
    assert torch.equal(engine.generate(cond, noise, temperature=0.0), greedy)


@needs_interpreter
@pytest.mark.parametrize("dtype, bound, agreement", [("bfloat16", 2e-3, 0.95), ("float16", 3e-4, 0.98)])
def test_sparse_cuda_reduced_precision_on_rounded_weights(dtype, bound, agreement):
    """bf16 / fp16 weights, float32 sums: against the reference on the weights rounded as stored, the
    logits differ only by the dense products' inputs rounded to the weight dtype (O2 / O4 here; the ELL
    products keep float32 inputs). Measured on this model: 3.8e-4 (bf16), 5.1e-5 (fp16); the bounds
    leave ~5x."""
    model = sparse_model()
    mel, cond, noise = case(model, batch=1, frames=2)
    engine = make_engine("sparse-cuda", model, "cpu", dtype=dtype, chunk_frames=1, groups_per_program=4)
    assert engine.ell["recurrent"].values.dtype == getattr(torch, dtype)
    rounded = rounded_model(model, dtype)
    reference = make_engine("reference", rounded).generate(cond, noise)
    with torch.no_grad():
        parallel = rounded.forward_logits(mel, reference)
    logits = engine.forced_logits(cond, reference)
    assert max_logit_error(logits, parallel) <= bound
    assert forced_draw_agreement(logits, parallel, noise) >= agreement
    samples = engine.generate(cond, noise)
    assert samples.shape == reference.shape and 0 <= samples.min() and samples.max() < 65536


@needs_interpreter
def test_sparse_cuda_step_cost_counts_the_ell_reads():
    model = sparse_model()
    engine = make_engine("sparse-cuda", model, "cpu")
    cost, dense = engine.step_cost(), model.step_cost()
    ell = engine.ell["recurrent"]
    assert cost.kept["gru_weight_hh"] == ell.groups * ell.width * 16 >= int((model.gru_weight_hh != 0).sum())
    assert "O2" not in cost.kept and cost.index_bytes > 0
    assert cost.weight_bytes() < dense.weight_bytes()


# ---- on a CUDA device -----------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 3])
def test_sparse_cuda_engine_on_a_gpu_matches_reference(batch):
    """The compiled ELL kernel inside a captured CUDA graph: the reference's samples and logits."""
    model = sparse_model(hidden=64, out_hidden=48, sparsity=0.9)
    mel, cond, noise = case(model, batch=batch, frames=2)
    engine = make_engine("sparse-cuda", model, "cuda")
    assert engine.sampler(batch).stepper.use_graph
    reference = make_engine("reference", model).generate(cond, noise)
    samples = engine.generate(cond, noise)
    assert samples.device.type == "cuda" and torch.equal(samples.cpu(), reference)
    with torch.no_grad():
        parallel = model.forward_logits(mel, reference)
    assert max_logit_error(engine.forced_logits(cond, reference).cpu(), parallel) <= 1e-4
    bf16 = make_engine("sparse-cuda", model, "cuda", dtype="bfloat16")
    rounded = rounded_model(model, "bfloat16")
    with torch.no_grad():
        parallel = rounded.forward_logits(mel, reference)
    assert max_logit_error(bf16.forced_logits(cond, reference).cpu(), parallel) <= 2e-2
