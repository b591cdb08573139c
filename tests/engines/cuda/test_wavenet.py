"""WaveNet on the CUDA engine against the reference engine.

Without a GPU the graph step runs its ops eagerly on CPU tensors (the same code the CUDA graph
captures); the tests marked `gpu` run the captured graph on a CUDA device. There is no Triton kernel
for WaveNet, so nothing here needs the Triton interpreter.
"""

from __future__ import annotations

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cuda import CudaEngine
from vocoders.engines.cuda.wavenet import WaveNetGraphStepper, WaveNetPack, WaveNetSampler, ring_length
from vocoders.features import MelConfig
from vocoders.models import WaveNet
from vocoders.sampling import draw_noise, sample_categorical

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_model(kernel_size: int = 3, hop: int = 64, **kwargs) -> WaveNet:
    """6 layers in 2 cycles: dilations 1, 2, 4; with k = 3 the longest ring span is 8 steps."""
    torch.manual_seed(0)
    args = dict(layers=6, cycles=2, residual_channels=8, gate_channels=12, skip_channels=8, cond_channels=8)
    mel = MelConfig(hop_length=hop).to_dict()
    return WaveNet(mel=mel, kernel_size=kernel_size, cond_blocks=1, **{**args, **kwargs}).eval()


def case(model: WaveNet, batch: int, frames: int, seed: int = 0, speaker=None):
    """(cond, noise, reference samples, teacher-forced logits of the parallel pass)."""
    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=gen) - 5
    with torch.no_grad():
        cond = model.conditioning(mel, speaker)
        noise = draw_noise(batch, model.num_samples(cond), 1, seed=seed)
        reference = make_engine("reference", model).generate(cond, noise)
        parallel = model.forward_logits(mel, reference, speaker)
    return cond, noise, reference, parallel


def sampler(model: WaveNet, batch: int, chunk_frames: int, dtype: str = "float32") -> WaveNetSampler:
    pack = WaveNetPack.from_model(model, "cpu", dtype)
    stepper = WaveNetGraphStepper(pack, batch, chunk_frames * model.hop_length, use_graph=False)
    return WaveNetSampler(pack, stepper, chunk_frames)


def test_ring_length_divides_the_chunk():
    assert ring_length(8, 64) == 8 and ring_length(12, 64) == 16 and ring_length(64, 256) == 64
    assert ring_length(3, 5) == 5
    with pytest.raises(ValueError, match="shorter than the longest ring span"):
        ring_length(65, 64)


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_graph_step_matches_reference_across_chunks(kernel_size):
    """Float32: identical samples and logits within 1e-4; the ring buffers carry over chunk borders."""
    model = make_model(kernel_size)
    cond, noise, reference, parallel = case(model, batch=2, frames=3)
    run = sampler(model, batch=2, chunk_frames=2)  # 2 chunks, the last one short (padded)
    assert run.stepper.period == ring_length((kernel_size - 1) * 4, 128)
    assert torch.equal(run.generate(cond, noise), reference)
    assert (run.forced_logits(cond, reference) - parallel).abs().max() <= 1e-4
    for temperature in (0.0,):
        expected = make_engine("reference", model).generate(cond, noise, temperature)
        assert torch.equal(run.generate(cond, noise, temperature), expected), temperature


def test_cuda_engine_object_runs_wavenet_on_cpu_tensors():
    """The engine as `make_engine` builds it, with a speaker (global conditioning); CPU tensors, no graph."""
    model = make_model(speakers=3, speaker_channels=4)
    cond, noise, reference, parallel = case(model, batch=2, frames=3, speaker=torch.tensor([0, 2]))
    engine = CudaEngine(model, "cpu")
    assert engine.kernel_for(1) == "graph" and engine.kernel_for(64) == "graph"
    assert engine.chunk_frames * model.hop_length >= (model.kernel_size - 1) * max(model.dilations)
    assert torch.equal(engine.generate(cond, noise), reference)
    assert (engine.forced_logits(cond, reference) - parallel).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="noise must have shape"):
        engine.generate(cond, noise[:, :-1])
    with pytest.raises(ValueError, match="targets must have shape"):
        engine.forced_logits(cond, reference[:, :-1])


@pytest.mark.parametrize("dtype,bound", [("bfloat16", 2e-2), ("float16", 3e-3)])
def test_graph_step_reduced_precision(dtype, bound):
    """bf16 / fp16 weights, float32 accumulation: logits within `bound` of the float32 parallel pass, and
    nearly every teacher-forced draw (same noise) picks the same class."""
    model = make_model()
    cond, noise, reference, parallel = case(model, batch=2, frames=4)
    logits = sampler(model, 2, 2, dtype).forced_logits(cond, reference)
    error = float((logits - parallel).abs().max())
    assert 0 < error <= bound
    flat_noise = noise[..., 0].flatten()
    a = sample_categorical(logits.flatten(0, 1), flat_noise)
    b = sample_categorical(parallel.flatten(0, 1), flat_noise)
    assert (a == b).float().mean() >= 0.97


def test_cuda_engine_refuses_wavenet_kernels_it_lacks():
    model = make_model()
    for kernel in ("persistent", "phased"):
        with pytest.raises(ValueError, match=f"CUDA kernel '{kernel}' has no wavenet version"):
            CudaEngine(model, "cpu", kernel=kernel)
    assert CudaEngine.available(model, "cpu") is not None  # off a CUDA device auto never picks it
    assert make_engine("auto", model, "cpu").name == "cpu"


# ---- on a CUDA device -----------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_engine_wavenet_graph_matches_reference(batch):
    model = make_model()
    cond, noise, reference, parallel = case(model, batch=batch, frames=5)
    engine = make_engine("auto", model, "cuda")
    assert engine.name == "cuda"
    samples = engine.generate(cond, noise)
    assert samples.device.type == "cuda" and torch.equal(samples.cpu(), reference)
    assert (engine.forced_logits(cond, reference).cpu() - parallel).abs().max() <= 1e-4


@pytest.mark.gpu
@needs_cuda
def test_cuda_engine_wavenet_never_synchronises_with_the_host():
    model = make_model()
    cond, noise, reference, _ = case(model, batch=2, frames=4)
    engine = make_engine("cuda", model, "cuda", dtype="bfloat16")
    engine.generate(cond, noise)  # first call: capture
    cond, noise = cond.cuda(), noise.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        engine.generate(cond, noise)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def streamed(stream, model, cond, noise, sizes):
    """Feed a stream frame-rate conditioning in chunks of `sizes` frames (with the upsampler's context)."""
    u, hop = model.upsample_context, model.hop_length
    pieces, at = [], 0
    for size in sizes:
        pieces.append(stream.run(cond[:, at : at + size + 2 * u], noise[:, at * hop : (at + size) * hop]))
        at += size
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("sizes", [[1] * 7, [7], [2, 1, 3, 1]])
def test_a_stream_continues_the_rings_across_chunks_shorter_than_the_ring(sizes):
    """Dilations up to 64 with k = 3: a ring of 128 steps over 64-step frames, entered at two phases."""
    model = make_model(layers=7, cycles=1)
    cond, noise, reference, _ = case(model, batch=2, frames=7)
    stream = CudaEngine(model, "cpu").open_stream(2)
    stepper = stream.sampler.stepper
    assert stepper.steps == model.hop_length and stepper.period == 128
    assert torch.equal(streamed(stream, model, cond, noise, sizes), reference)
    assert stepper.phase == (7 * model.hop_length) % 128


@pytest.mark.gpu
@needs_cuda
def test_a_wavenet_stream_on_the_device_equals_whole_and_captures_each_phase_once():
    from vocoders.inference import Vocoder

    model = make_model(layers=7, cycles=1)
    voc = Vocoder(model, device="cuda", engine="cuda")
    mel = torch.randn(2, 80, 11) - 5
    whole = voc(mel, seed=5)
    stream = voc.stream(batch=2, seed=5)
    pieces = []
    for at, size in ((0, 1), (1, 4), (5, 1), (6, 3), (9, 2)):
        stream.push(mel[:, :, at : at + size])
        pieces.append(stream.pull())
    pieces.append(stream.close())
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    stepper = stream._engine.sampler.stepper
    assert len(stepper._graphs) == stepper.period // model.hop_length  # one capture per phase, then replays
