"""The CPU engines' own products for streaming: the native conditioning network and the W_cond projections.

Each must give a frame the same numbers whatever frames are computed with it (streaming computes a
few per chunk), and stay within float32 rounding of the PyTorch network.
"""

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cpu.conditioning import NativeConditioning
from vocoders.models import SubscaleWaveRNN, WaveRNN
from vocoders.native import load_native

from .test_sparse import sparse_model

NATIVE = load_native()
needs_native = pytest.mark.skipif(NATIVE is None, reason="the compiled extension vocoders._native is not built")
ISAS = NATIVE.isas() if NATIVE is not None else ()


def wavernn(blocks=2, channels=24):
    torch.manual_seed(0)
    return WaveRNN(hidden_size=40, cond_channels=channels, cond_blocks=blocks, out_hidden=19).eval()


def pieces(frames: int, sizes: list[int]) -> list[tuple[int, int]]:
    """(first, count) of consecutive pieces of `frames` output frames, cycling through `sizes`."""
    out, at, i = [], 0, 0
    while at < frames:
        count = min(sizes[i % len(sizes)], frames - at)
        out.append((at, count))
        at, i = at + count, i + 1
    return out


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("blocks, channels", [(2, 24), (0, 8), (3, 19)])
def test_native_conditioning_matches_pytorch_and_any_split(isa, blocks, channels):
    """Within float32 rounding of the PyTorch network; each frame identical however the frames are split
    (including a strided view of a longer mel, as a stream passes its buffer)."""
    model = wavernn(blocks, channels)
    net = NativeConditioning(model.cond_net, NATIVE, isa)
    mel = torch.randn(2, 80, 90) - 5  # 86 frames: more than one group of 64
    with torch.inference_mode():
        whole = net(mel)
        expected = model.cond_net(mel)
    assert whole.shape == expected.shape == (2, 86, channels)
    assert (whole - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    kernel = model.cond_net.conv_in.kernel_size[0]
    for sizes in ([1], [4], [3, 1, 7, 64]):
        split = torch.cat([net(mel[:, :, a : a + n + kernel - 1]) for a, n in pieces(86, sizes)], dim=1)
        assert torch.equal(split, whole), sizes


@needs_native
def test_cpu_engines_run_the_network_natively_where_they_can():
    """WaveRNN (dense and sparse engines) natively; Subscale WaveRNN and the reference engine in PyTorch."""
    mel = torch.randn(1, 80, 12) - 5
    for engine_name, model in (("cpu", wavernn()), ("sparse-cpu", sparse_model())):
        engine = make_engine(engine_name, model)
        assert isinstance(engine.native_cond, NativeConditioning)
        with torch.inference_mode():
            assert torch.equal(engine.conditioning(mel), engine.native_cond(mel))
            assert torch.allclose(engine.conditioning(mel), model.conditioning(mel), atol=1e-5)
    torch.manual_seed(0)
    subscale = SubscaleWaveRNN(subscale=4, horizon=1, context_channels=4, hidden_size=16, cond_channels=8).eval()
    assert make_engine("cpu", subscale).native_cond is None
    model = wavernn()
    with torch.inference_mode():
        assert torch.equal(make_engine("reference", model).conditioning(mel), model.conditioning(mel))


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("engine_name", ["cpu", "sparse-cpu"])
def test_projection_of_any_rows_equals_the_whole_one(monkeypatch, isa, engine_name):
    """W_cond applied to a few frames (a stream's chunk) gives exactly the rows of the whole utterance's
    product, close to the dense product; the sparse engine's block-sparse W_cond included."""
    monkeypatch.setenv("VOCODERS_ISA", isa)
    model = wavernn() if engine_name == "cpu" else sparse_model(hidden=64, targets=("gru_hh", "gru_ih"))
    engine = make_engine(engine_name, model)
    if engine_name == "sparse-cpu":
        assert engine.w_cond_sparse is not None  # the pruned input matrix takes the sparse kernel
    cond = torch.randn(2, 70, model.cond_net.conv_in.out_channels)
    whole = engine._project(cond)
    assert torch.allclose(whole, cond @ engine.packed.w_cond.T, atol=1e-5)
    for sizes in ([1], [4], [5, 2, 64]):
        split = torch.cat([engine._project(cond[:, a : a + n]) for a, n in pieces(70, sizes)], dim=1)
        assert torch.equal(split, whole), sizes


@needs_native
@pytest.mark.parametrize("engine_name", ["cpu", "sparse-cpu"])
def test_a_stream_projects_each_row_once_and_gets_the_whole_projection(engine_name):
    """CpuStream keeps the projection of the 2u rows consecutive chunks share and projects only the new
    ones: the rows it hands the loop equal the whole utterance's projection."""
    model = wavernn() if engine_name == "cpu" else sparse_model()
    engine = make_engine(engine_name, model)
    u2 = 2 * model.upsample_context
    cond = torch.randn(1, 30 + u2, model.cond_net.conv_in.out_channels)
    whole = engine._project(cond)
    stream, counted = engine.open_stream(1), []
    project = engine._project
    engine._project = lambda rows: counted.append(rows.shape[1]) or project(rows)
    chunks = pieces(30, [1, 4, 2, 7])
    for first, count in chunks:
        rows = stream.project(cond[:, first : first + count + u2])
        assert torch.equal(rows, whole[:, first : first + count + u2])
    assert counted == [chunks[0][1] + u2] + [count for _, count in chunks[1:]]
