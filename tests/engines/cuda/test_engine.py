"""The CUDA engine and its kernels against the reference engine.

Without a GPU, the Triton kernels run under the Triton interpreter (TRITON_INTERPRET=1, set here
before Triton is first imported) on CPU tensors and the CUDA-graph stepper runs its ops eagerly; the
tests marked `gpu` run the real thing on a CUDA device.

Reduced precision (bf16 / fp16 weights, float32 accumulation): the tiny random model's logits are
small (|logit| < ~1), so rounding a weight to bf16 (relative error 2^-9) moves a logit by at most
~1e-2 and typically ~1e-3; fp16 (2^-12) by ~8x less. With the same noise a draw changes only when its
uniform number falls between the moved CDF boundaries, so teacher-forced draws agree at a rate of
1 - O(logit error); free-running sequences agree up to the first such flip and then follow their own
(equally valid) trajectory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

from vocoders.engines import ENGINES, PREFERENCE, make_engine  # noqa: E402
from vocoders.engines.cuda import CudaEngine  # noqa: E402
from vocoders.engines.cuda.wavernn import GraphStepper, WaveRNNSampler  # noqa: E402
from vocoders.engines.cuda.wavernn_pack import WaveRNNPack  # noqa: E402
from vocoders.features import MelConfig  # noqa: E402
from vocoders.models import WaveRNN  # noqa: E402
from vocoders.sampling import draw_noise, sample_categorical  # noqa: E402

from ...conftest import REPO  # noqa: E402
from ..engine_checks import forced_draw_agreement, max_logit_error  # noqa: E402

try:
    import triton
    import triton.language as tl

    from vocoders.engines.cuda.triton_common import draw_class

    @triton.jit
    def draw_rows(logits_ptr, noise_ptr, temperature_ptr, out_ptr, n, GREEDY: tl.constexpr, CLASSES: tl.constexpr):
        """One draw per program from row program_id of logits [rows, n]."""
        row = tl.program_id(0)
        classes = tl.arange(0, CLASSES)
        logits = tl.load(logits_ptr + row * n + classes, mask=classes < n, other=0.0)
        u = tl.load(noise_ptr + row)
        tl.store(out_ptr + row, draw_class(logits, n, u, tl.load(temperature_ptr), GREEDY, CLASSES))

except ImportError:
    draw_rows = None

needs_interpreter = pytest.mark.skipif(not INTERPRET, reason="Triton interpreter tests run on CPU tensors")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="needs a CUDA device")


def kernels():
    pytest.importorskip("triton")
    from vocoders.engines.cuda import triton_wavernn

    return triton_wavernn


def make_model(hidden: int = 32, hop: int = 256, out_hidden: int = 24) -> WaveRNN:
    torch.manual_seed(0)
    mel = MelConfig(hop_length=hop).to_dict()
    return WaveRNN(mel=mel, hidden_size=hidden, cond_channels=8, cond_blocks=1, out_hidden=out_hidden).eval()


def case(model: WaveRNN, batch: int, frames: int, seed: int = 0):
    """(mel, cond, noise, reference samples, teacher-forced logits of the parallel pass)."""
    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=gen) - 5
    with torch.no_grad():
        cond = model.conditioning(mel)
    noise = draw_noise(batch, model.num_samples(cond), model.noise_per_step, seed=seed)
    reference = make_engine("reference", model).generate(cond, noise)
    with torch.no_grad():
        parallel = model.forward_logits(mel, reference)
    return mel, cond, noise, reference, parallel


# ---- engine registration and refusal --------------------------------------------------------------
def test_cuda_engine_is_registered_and_refuses_cpu():
    model = make_model()
    assert ENGINES["cuda"] is CudaEngine and PREFERENCE.index("cuda") < PREFERENCE.index("reference")
    reason = CudaEngine.available(model, "cpu")
    assert reason is not None and "CUDA" in reason
    with pytest.raises(RuntimeError, match="engine 'cuda' cannot run wavernn on cpu: needs a CUDA device"):
        make_engine("cuda", model, "cpu")
    assert make_engine("auto", model, "cpu").name != "cuda"


def test_cuda_engine_availability_on_a_cuda_device(monkeypatch):
    model = make_model()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "not available" in CudaEngine.available(model, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert CudaEngine.available(model, "cuda") is None
    monkeypatch.setattr(type(model), "name", "unknown_vocoder")
    assert "no CUDA path for model 'unknown_vocoder'" in CudaEngine.available(model, "cuda")


def test_cuda_engine_refuses_bad_options():
    model = make_model()
    with pytest.raises(ValueError, match="unknown CUDA kernel 'warp'"):
        CudaEngine(model, "cpu", kernel="warp")
    with pytest.raises(ValueError, match="engine 'cuda' stores weights as float32, bfloat16, float16, not 'int8'"):
        CudaEngine(model, "cpu", dtype="int8")
    engine = CudaEngine(model, "cpu", kernel="auto", persistent_max_batch=2)
    assert engine.kernel_for(64) == "graph"


# ---- the CUDA-graph step, eagerly on the CPU --------------------------------------------------------
def test_graph_stepper_matches_reference_across_chunks():
    """Float32: identical samples and logits within 1e-4, with the state carried over chunk borders."""
    model = make_model()
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=2)
    pack = WaveRNNPack.from_model(model, "cpu")
    sampler = WaveRNNSampler(pack, GraphStepper(pack, 2, steps=256, use_graph=False), chunk_frames=1)
    assert torch.equal(sampler.generate(cond, noise), reference)
    assert max_logit_error(sampler.forced_logits(cond, reference), parallel) <= 1e-4


def test_graph_stepper_pads_a_short_last_chunk_and_follows_temperature():
    model = make_model(hop=8)
    mel, cond, noise, reference, parallel = case(model, batch=1, frames=3)
    pack = WaveRNNPack.from_model(model, "cpu")
    sampler = WaveRNNSampler(pack, GraphStepper(pack, 1, steps=16, use_graph=False), chunk_frames=2)
    assert torch.equal(sampler.generate(cond, noise), reference)  # chunks of 16 and 8 steps
    assert max_logit_error(sampler.forced_logits(cond, reference), parallel) <= 1e-4
    for temperature in (0.0, 0.6):
        expected = make_engine("reference", model).generate(cond, noise, temperature)
        assert torch.equal(sampler.generate(cond, noise, temperature), expected)


@pytest.mark.parametrize("dtype, bound, agreement", [("bfloat16", 2e-2, 0.97), ("float16", 4e-3, 0.99)])
def test_graph_stepper_reduced_precision(dtype, bound, agreement):
    """bf16/fp16 weights and matrix inputs, float32 sums: the stated logit bound and draw agreement."""
    model = make_model()
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=1)
    pack = WaveRNNPack.from_model(model, "cpu", dtype)
    assert pack.recurrent.dtype == getattr(torch, dtype) and pack.bias_hh.dtype == torch.float32
    sampler = WaveRNNSampler(pack, GraphStepper(pack, 2, steps=256, use_graph=False), chunk_frames=1)
    logits = sampler.forced_logits(cond, reference)
    error = max_logit_error(logits, parallel)
    assert 0 < error <= bound  # really reduced, and within the bound
    assert forced_draw_agreement(logits, parallel, noise) >= agreement
    samples = sampler.generate(cond, noise)
    assert samples.shape == reference.shape and 0 <= samples.min() and samples.max() < 65536


# ---- Triton kernels under the interpreter ------------------------------------------------------------
@needs_interpreter
def test_triton_draw_matches_sample_categorical():
    """The kernels' inverse-CDF draw picks the class `sample_categorical` picks, greedy and tempered."""
    if draw_rows is None:
        pytest.skip("triton is not installed")
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(24, 5, generator=gen) * 3
    u = torch.rand(24, generator=gen)
    u[:2] = torch.tensor([0.0, 0.9999999])
    for temperature in (1.0, 0.5, 0.0):
        out = torch.empty(24, dtype=torch.int32)
        t = torch.tensor([temperature], dtype=torch.float64)
        draw_rows[(24,)](logits, u, t, out, 5, GREEDY=temperature <= 0, CLASSES=8)
        assert torch.equal(out.long(), sample_categorical(logits, u, temperature))


@needs_interpreter
def test_triton_phased_kernels_match_reference():
    """Several programs, a block of units that straddles the coarse/fine border (H 24, 8 units each)."""
    tw = kernels()
    model = make_model(hidden=24, hop=4, out_hidden=20)
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=1)
    pack = WaveRNNPack.from_model(model, "cpu")
    runner = tw.TritonWaveRNN(pack, batch=2, mode="phased", units=8)
    assert runner.programs == 3 and pack.half % runner.units != 0
    inputs = pack.sample_inputs(pack.frame_projection(cond), 0, 1)
    assert torch.equal(runner.run(inputs, noise), reference)
    runner.reset()
    logits = torch.full((2, 4, 2, pack.classes), float("-inf"))
    runner.run(inputs, noise, targets=reference, logits=logits)
    assert max_logit_error(logits, parallel) <= 1e-4


@needs_interpreter
def test_triton_persistent_kernel_matches_reference():
    """The persistent kernel (one program: the interpreter runs programs in turn) through the sampler,
    over two launches so the hidden state's double buffer and the previous sample carry over."""
    tw = kernels()
    model = make_model(hop=4)
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=2)
    pack = WaveRNNPack.from_model(model, "cpu")
    runner = tw.TritonWaveRNN(pack, batch=2, mode="persistent", max_programs=1)
    assert runner.programs == 1 and runner.units == 32
    sampler = WaveRNNSampler(pack, runner, chunk_frames=1)
    assert torch.equal(sampler.generate(cond, noise), reference)
    assert max_logit_error(sampler.forced_logits(cond, reference[:, :4]), parallel[:, :4]) <= 1e-4


@needs_interpreter
def test_triton_persistent_kernel_bf16_weights():
    """bf16 weights kept in registers, float32 state and sums: the same bound as the graph path."""
    tw = kernels()
    model = make_model(hop=16)
    mel, cond, noise, reference, parallel = case(model, batch=1, frames=1)
    pack = WaveRNNPack.from_model(model, "cpu", "bfloat16")
    sampler = WaveRNNSampler(pack, tw.TritonWaveRNN(pack, batch=1, max_programs=1), chunk_frames=1)
    logits = sampler.forced_logits(cond, reference)
    assert 0 < max_logit_error(logits, parallel) <= 2e-2
    assert forced_draw_agreement(logits, parallel, noise) >= 0.9  # 32 draws: at most three flips


@pytest.mark.slow
@needs_interpreter
@pytest.mark.parametrize("mode", ["persistent", "phased"])
def test_triton_kernels_long_run_odd_batch_and_temperature(mode):
    """Three streams (a padded stream block), 48 steps over chunks of 32 and 16, temperature 0.7."""
    tw = kernels()
    model = make_model(hop=16)
    mel, cond, noise, reference, parallel = case(model, batch=3, frames=3)
    pack = WaveRNNPack.from_model(model, "cpu")
    options = {"max_programs": 1} if mode == "persistent" else {"units": 8}
    sampler = WaveRNNSampler(pack, tw.TritonWaveRNN(pack, batch=3, mode=mode, **options), chunk_frames=2)
    expected = make_engine("reference", model).generate(cond, noise, 0.7)
    assert torch.equal(sampler.generate(cond, noise, 0.7), expected)
    assert max_logit_error(sampler.forced_logits(cond, reference), parallel) <= 1e-4


@needs_interpreter
def test_triton_runner_refuses_bad_configuration():
    tw = kernels()
    pack = WaveRNNPack.from_model(make_model(), "cpu")
    with pytest.raises(ValueError, match="mode must be"):
        tw.TritonWaveRNN(pack, 1, mode="warp")
    with pytest.raises(ValueError, match="exceed the 2 allowed"):
        tw.TritonWaveRNN(pack, 1, mode="persistent", max_programs=2, units=4)
    runner = tw.TritonWaveRNN(pack, 1, mode="persistent", max_programs=1)
    with pytest.raises(ValueError, match="built for batch 1"):
        runner.run(torch.zeros(2, 4, 96), torch.zeros(2, 4, 2))


@pytest.mark.parametrize(
    "hidden, max_stack", [(64, 32), pytest.param(896, 32, marks=pytest.mark.slow)], ids=["H64", "H896"]
)
def test_persistent_kernel_compiles_for_h100(hidden, max_stack):
    """Built for sm_90 by Triton's own compiler (no GPU needed): types the interpreter lets through
    are checked, and the resident weights fit the register file with (almost) no spills."""
    pytest.importorskip("triton")
    tool = REPO / "tools" / "compile_kernels.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(tool), "--hidden", str(hidden), "--dtype", "bf16", "--arch", "90"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["reg"] <= 255 and report["stack"] <= max_stack, report


# ---- on a CUDA device -----------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kernel", ["persistent", "graph", "phased"])
def test_cuda_engine_matches_reference(kernel):
    """H 64 gives the persistent kernel 64 programs: the grid syncs are exercised for real."""
    model = make_model(hidden=64)
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=2)
    engine = make_engine("cuda", model, "cuda", kernel=kernel)
    if kernel == "persistent":
        assert engine.sampler(2).stepper.programs > 1
    if kernel == "phased":
        assert type(engine.sampler(2).stepper).__name__ == "CapturedStepper"
    samples = engine.generate(cond, noise)
    assert samples.device.type == "cuda" and torch.equal(samples.cpu(), reference)
    assert max_logit_error(engine.forced_logits(cond, reference).cpu(), parallel) <= 1e-4


@pytest.mark.gpu
@needs_cuda
def test_cuda_engine_wavernn_896_persistent_and_graph():
    """The paper's size: the persistent kernel fits its registers and matches; the graph path too."""
    model = make_model(hidden=896, out_hidden=448)
    mel, cond, noise, reference, parallel = case(model, batch=1, frames=1)
    for kernel in ("persistent", "graph"):
        engine = make_engine("cuda", model, "cuda", kernel=kernel)
        assert max_logit_error(engine.forced_logits(cond, reference).cpu(), parallel) <= 1e-4
        agree = (engine.generate(cond, noise).cpu() == reference).float().mean()
        assert agree >= 0.99  # float32 on another device: a rare boundary flip is possible


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kernel", ["persistent", "graph"])
def test_cuda_engine_bf16(kernel):
    model = make_model(hidden=64)
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=1)
    engine = make_engine("cuda", model, "cuda", kernel=kernel, dtype="bfloat16")
    logits = engine.forced_logits(cond, reference).cpu()
    assert max_logit_error(logits, parallel) <= 2e-2
    assert forced_draw_agreement(logits, parallel, noise) >= 0.97


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kernel", ["persistent", "graph", "phased"])
def test_cuda_engine_never_synchronises_with_the_host(kernel):
    model = make_model(hidden=64)
    mel, cond, noise, reference, parallel = case(model, batch=2, frames=2)
    engine = make_engine("cuda", model, "cuda", kernel=kernel)
    engine.generate(cond, noise)  # first call: compile / capture
    cond, noise = cond.cuda(), noise.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        samples = engine.generate(cond, noise)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(samples.cpu(), reference)


@pytest.mark.gpu
@needs_cuda
def test_auto_picks_cuda_on_a_cuda_device():
    model = make_model()
    engine = make_engine("auto", model, "cuda")
    assert engine.name == "cuda" and engine.kernel_for(1) == "persistent" and engine.kernel_for(64) == "graph"


def test_sampler_stream_continues_the_loop_for_any_chunking():
    """A stream over the graph stepper (eager on the CPU) gives the whole utterance's samples chunk by chunk."""
    from vocoders.engines.cuda.wavernn import SamplerStream
    from vocoders.models.layers import FrameUpsampler

    model = make_model()
    mel, cond, noise, reference, _ = case(model, batch=2, frames=5)
    pack = WaveRNNPack.from_model(model, "cpu")
    u, hop = model.upsample_context, model.hop_length
    assert isinstance(model.upsampler, FrameUpsampler)
    for sizes in ([1, 1, 1, 1, 1], [2, 3], [5]):
        stream = SamplerStream(WaveRNNSampler(pack, GraphStepper(pack, 2, steps=hop, use_graph=False), 1), 1.0)
        pieces, at = [], 0
        for size in sizes:
            pieces.append(stream.run(cond[:, at : at + size + 2 * u], noise[:, at * hop : (at + size) * hop]))
            at += size
        assert torch.equal(torch.cat(pieces, dim=1), reference), sizes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stream_equals_whole_utterance_on_the_device():
    from vocoders.inference import Vocoder

    model = make_model()
    voc = Vocoder(model, device="cuda", engine="cuda")
    mel = torch.randn(2, 80, 9) - 5
    whole = voc(mel, seed=3)
    stream = voc.stream(batch=2, seed=3)
    pieces = []
    for at, size in ((0, 1), (1, 4), (5, 1), (6, 3)):
        stream.push(mel[:, :, at : at + size])
        pieces.append(stream.pull())
    pieces.append(stream.close())
    assert torch.equal(torch.cat(pieces, dim=1), whole)
