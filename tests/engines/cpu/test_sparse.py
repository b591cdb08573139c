"""Block-sparse packing, the native block-sparse kernels and the sparse CPU engine against the reference."""

import pytest
import torch

import vocoders
from vocoders.checkpoint import save_checkpoint
from vocoders.engines import make_engine
from vocoders.engines.cpu.sparse_packing import choose_block, pack_sparse
from vocoders.models import WaveRNN
from vocoders.native import load_native
from vocoders.sampling import draw_noise
from vocoders.sparsity import Pruner, PruningSchedule, prune_blocks

NATIVE = load_native()
needs_native = pytest.mark.skipif(NATIVE is None, reason="the compiled extension vocoders._native is not built")
ISAS = NATIVE.isas() if NATIVE is not None else ()


def pruned(shape, sparsity, block, seed=0):
    torch.manual_seed(seed)
    weight = torch.randn(*shape)
    return weight * prune_blocks(weight, sparsity, block)


@pytest.mark.parametrize("block", [(16, 1), (4, 4), (2, 2), (1, 1)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_packing_round_trip(block, dtype):
    weight = pruned((40, 48), 0.8, block)
    packed = pack_sparse(weight, torch.randn(40), dtype, block=(16, 1) if block == (1, 1) else block)
    rounded = weight.to(getattr(torch, dtype)).float()
    assert torch.equal(packed.to_dense(), rounded)
    assert packed.bias.shape == (48,)  # rows padded to 16
    if block != (1, 1):
        assert packed.stored_weights == int((weight != 0).sum())  # a pruned block stores nothing
        assert packed.group_start[-1] == packed.blocks == packed.block_col.numel()


def test_packing_chooses_the_cheapest_layout():
    assert choose_block(pruned((64, 64), 0.9, (16, 1))) == ((16, 1), False)
    assert choose_block(pruned((64, 64), 0.9, (4, 4))) == ((4, 4), False)
    assert choose_block(torch.randn(64, 64)) == ((16, 1), True)
    dense = pack_sparse(torch.randn(20, 8))
    assert dense.dense and dense.values.shape == (8, 32)  # column-major, rows padded
    with pytest.raises(ValueError, match="block 3x1"):
        pack_sparse(torch.randn(16, 8), block=(3, 1))


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "shape,block,dtype",
    [
        ((96, 64), (16, 1), "float32"),
        ((96, 64), (16, 1), "float16"),
        ((96, 64), (16, 1), "bfloat16"),
        ((40, 64), (4, 4), "float32"),
        ((40, 64), (4, 4), "float16"),
        ((24, 32), (2, 2), "float32"),
        ((300, 40), None, "float32"),  # dense, two chunks of rows
        ((300, 40), None, "bfloat16"),
    ],
)
def test_native_sparse_matvec_matches_torch(isa, shape, block, dtype):
    weight = torch.randn(*shape) if block is None else pruned(shape, 0.75, block)
    bias = torch.randn(shape[0])
    packed = pack_sparse(weight, bias, dtype, block=block)
    x = torch.randn(shape[1] + 16)
    x[: shape[1] : 3] = 0.0  # zero inputs, as after a ReLU
    x[16:32] = 0.0  # a whole 16-input chunk skipped by the dense layout's scan of non-zero inputs
    y = torch.full((packed.bias.numel(),), float("nan"))
    active = torch.zeros(shape[1], dtype=torch.int32)
    NATIVE.sparse_matvec(packed.spec(), x.data_ptr(), y.data_ptr(), active.data_ptr(), isa)
    expected = packed.to_dense() @ x[: shape[1]] + bias
    assert torch.allclose(y[: shape[0]], expected, atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("isa", ISAS)
def test_vectorised_activations_are_accurate(isa):
    """The sigmoid, tanh and exp the loops use (vectorised approximations) against float64."""
    x = torch.linspace(-30.0, 30.0, 48_000)
    for kind, exact, bound in [(0, torch.sigmoid, 2e-7), (1, torch.tanh, 4e-7)]:
        out = torch.empty_like(x)
        NATIVE.activation(kind, x.data_ptr(), out.data_ptr(), x.numel(), isa)
        assert (out.double() - exact(x.double())).abs().max() <= bound
    x = torch.linspace(-80.0, 80.0, 48_000)
    out = torch.empty_like(x)
    NATIVE.activation(2, x.data_ptr(), out.data_ptr(), x.numel(), isa)
    relative = (out.double() / torch.exp(x.double()) - 1.0).abs().max()
    assert relative <= 5e-7  # a few float32 ulp


def sparse_model(hidden=64, out_hidden=48, block="16x1", targets=("gru_hh", "gru_ih"), sparsity=0.9, seed=0):
    torch.manual_seed(seed)
    model = WaveRNN(hidden_size=hidden, cond_channels=8, cond_blocks=1, out_hidden=out_hidden).eval()
    pruner = Pruner(model, PruningSchedule(final=sparsity, start=0, duration=1, every=1), block, targets=list(targets))
    pruner.prune(sparsity)
    pruner.apply()
    return model


CASES = {
    "16x1": dict(block="16x1", dtype="float32"),
    "4x4-outputs": dict(block="4x4", targets=("gru_hh", "O1", "O3"), dtype="float32"),
    "16x1-all-float16": dict(block="16x1", targets=("gru_hh", "O1", "O2", "O3", "O4"), dtype="float16"),
    "16x1-bfloat16": dict(block="16x1", targets=("gru_hh", "O1", "O3"), dtype="bfloat16"),
    "unstructured": dict(block="1x1", hidden=32, out_hidden=32, dtype="float32"),
}


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_sparse_engine_matches_the_reference(monkeypatch, isa, case):
    """Same (pruned, rounded) weights and noise: the same samples; teacher forcing: the same logits."""
    from vocoders.engines.cpu.sparse import rounded_model

    options = dict(CASES[case])
    dtype = options.pop("dtype")
    model = sparse_model(**options)
    monkeypatch.setenv("VOCODERS_ISA", isa)
    engine = make_engine("sparse-cpu", model, dtype=dtype)
    reference_model = rounded_model(model, dtype)  # the weights as the engine stores them
    mel = torch.randn(2, 80, 2 + 2 * model.mel_context) - 5
    with torch.no_grad():
        cond = model.conditioning(mel)
    noise = draw_noise(2, model.num_samples(cond), 2, seed=0)
    reference = make_engine("reference", reference_model).generate(cond, noise)
    samples = engine.generate(cond, noise)
    assert torch.equal(samples, reference)
    with torch.no_grad():
        parallel = reference_model.forward_logits(mel, reference)
    forced = engine.forced_logits(cond, reference)
    finite = torch.isfinite(parallel)
    assert torch.equal(finite, torch.isfinite(forced))
    assert (forced[finite] - parallel[finite]).abs().max() <= 1e-4
    greedy = make_engine("reference", reference_model).generate(cond, noise, temperature=0.0)
    assert torch.equal(engine.generate(cond, noise, temperature=0.0), greedy)


@needs_native
def test_auto_picks_the_sparse_engine_for_sparse_checkpoints(tmp_path):
    model = sparse_model()
    assert make_engine("auto", model).name == "sparse-cpu"
    dense = WaveRNN(hidden_size=32, cond_channels=8, cond_blocks=1).eval()
    assert make_engine("auto", dense).name != "sparse-cpu"
    with pytest.raises(RuntimeError, match="not sparse"):
        make_engine("sparse-cpu", dense)
    path = save_checkpoint(tmp_path / "sparse.safetensors", model, 5)
    voc = vocoders.load(path)
    assert voc.engine.name == "sparse-cpu"
    audio = voc(torch.randn(80, 3) - 5, seed=0)
    assert audio.shape == (3 * voc.hop_length,) and torch.isfinite(audio).all()


@needs_native
def test_step_cost_counts_what_the_sparse_engine_reads():
    model = sparse_model(targets=("gru_hh", "gru_ih", "O1", "O3"))
    engine = make_engine("sparse-cpu", model)
    cond = model.conditioning(torch.randn(1, 80, 2 + 2 * model.mel_context) - 5).detach()
    engine.generate(cond, draw_noise(1, model.num_samples(cond), 2, seed=0))
    fraction = engine.input_fraction()
    assert 0.0 < fraction["O2"] < 1.0 and 0.0 < fraction["O4"] < 1.0  # ReLU zeros skipped
    cost, dense = engine.step_cost(), model.step_cost()
    assert cost.kept["gru_weight_hh"] == int((model.gru_weight_hh != 0).sum())
    assert cost.kept["O1"] == int((model.O1.weight != 0).sum())
    assert cost.kept["O2"] == round(model.O2.weight.numel() * fraction["O2"])
    assert cost.index_bytes > 0 and cost.weight_bytes() < dense.weight_bytes() and cost.flops < dense.flops


@needs_native
def test_benchmark_prunes_a_sparse_recipe_and_times_the_sparse_engine():
    from hydra import compose, initialize_config_module

    from vocoders.bench import run_benchmark

    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(
            config_name="benchmark",
            overrides=["recipe=sparse_wavernn", "debug=tiny", "bench.device=cpu", "bench.seconds=0.03"],
        )
    record = run_benchmark(cfg)
    assert record["engine"] == "sparse-cpu" and record["reference_agreement"] == 1.0
    assert record["sparsity"]["current"] == 0.95 and record["sparsity"]["block"] == [16, 1]
    assert record["floor"]["weight_bytes_per_step"] < WaveRNN(**record["model_kwargs"]).step_cost().weight_bytes()
