"""Subscale WaveRNN on the CUDA engine's graph step against the reference engine.

Without a GPU the stepper runs its ops eagerly on CPU tensors (`use_graph=False`, what `CudaEngine`
does on a CPU device); the test marked `gpu` runs it captured in CUDA graphs on a CUDA device.
"""

from __future__ import annotations

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cuda import CudaEngine
from vocoders.engines.cuda.subscale import ContextWeights, SubscaleGraphStepper, SubscaleSampler, step_tables
from vocoders.engines.cuda.wavernn_pack import WaveRNNPack
from vocoders.features import MelConfig
from vocoders.models import SubscaleWaveRNN
from vocoders.sampling import draw_noise

HOP_100 = MelConfig.preset("hifigan", hop_length=100, win_length=400, n_fft=512).to_dict()


def subscale_model(subscale, horizon, kernel=2, mel=None, biases=False):
    torch.manual_seed(subscale + horizon + kernel)
    sizes = dict(context_channels=4, hidden_size=40, cond_channels=8, cond_blocks=1, out_hidden=24)
    model = SubscaleWaveRNN(subscale=subscale, horizon=horizon, context_kernel=kernel, mel=mel, **sizes).eval()
    if biases:  # non-zero context biases: a slot that should read zeros would show
        with torch.no_grad():
            torch.nn.init.normal_(model.context.conv_in.bias)
            for layer in model.context.layers:
                torch.nn.init.normal_(layer.bias)
    return model


def case(model, frames, batch, seed=0):
    """(cond, noise, reference samples, reference teacher-forced logits on those samples)."""
    generator = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=generator) - 5
    with torch.no_grad():
        cond = model.conditioning(mel)
    noise = draw_noise(batch, model.num_samples(cond), model.noise_per_step, seed=seed)
    reference = make_engine("reference", model)
    samples = reference.generate(cond, noise)
    return cond, noise, samples, reference.forced_logits(cond, samples)


def sampler(model, batch, chunk, device="cpu"):
    pack = WaveRNNPack.from_model(model.core, device)
    stepper = SubscaleGraphStepper(pack, ContextWeights(model, torch.device(device)), batch, chunk, use_graph=False)
    return SubscaleSampler(model, pack, stepper)


def assert_logits_close(logits, expected, bound=1e-4):
    finite = torch.isfinite(expected)
    assert logits.shape == expected.shape and torch.equal(finite, torch.isfinite(logits))
    assert (logits[finite] - expected[finite]).abs().max() <= bound


@pytest.mark.parametrize(
    "subscale, horizon, frames, batch, chunk",
    [(16, 3, 1, 1, 40), (8, 3, 2, 2, 64)],
)  # chunks that do not divide the step count: the last one is padded with idle steps
def test_same_samples_and_logits_as_the_reference(subscale, horizon, frames, batch, chunk):
    model = subscale_model(subscale, horizon)
    cond, noise, expected, expected_logits = case(model, frames, batch)
    run = sampler(model, batch, chunk)
    samples = run.generate(cond, noise)
    assert samples.shape == expected.shape == (batch, frames * model.hop_length)
    assert torch.equal(samples, expected)
    assert len(samples.unique()) > 10  # free running, not stuck on one class
    assert_logits_close(run.forced_logits(cond, expected), expected_logits)
    for temperature in (0.0, 0.7):  # greedy and tempered draws, from the same stepper (state reset)
        assert torch.equal(
            run.generate(cond, noise, temperature), make_engine("reference", model).generate(cond, noise, temperature)
        )


def test_a_horizon_past_the_sub_tensor_length_leaves_steps_where_nothing_runs():
    """hop 100, B = 8: N = 13 positions per sub-tensor <= F = 14, so there are steps between one
    sub-tensor's end and the next one's start where the core runs no stream at all."""
    model = subscale_model(8, 14, mel=HOP_100)
    cond, noise, expected, expected_logits = case(model, frames=1, batch=1, seed=2)
    tables = step_tables(ContextWeights(model, torch.device("cpu")), expected.shape[1], 200, torch.device("cpu"))
    busy = tables["running"].any(dim=1)
    first, last = int(busy.nonzero()[0]), int(busy.nonzero()[-1])
    assert not busy[first : last + 1].all()  # idle steps inside the order
    run = sampler(model, 1, 50)
    assert torch.equal(run.generate(cond, noise), expected)
    assert_logits_close(run.forced_logits(cond, expected), expected_logits)


def test_kernel_3_biases_batch_2_and_a_signal_that_ends_inside_a_step_through_the_engine():
    """Context kernel 3 with non-zero biases, batch 2, hop 100 (not a multiple of B = 8: the last
    step's later sub-tensors run past the end, their samples dropped and read as zeros), through
    `CudaEngine` on CPU tensors (its graph step runs eagerly there)."""
    model = subscale_model(8, 5, kernel=3, mel=HOP_100, biases=True)
    cond, noise, expected, expected_logits = case(model, frames=3, batch=2, seed=5)
    assert expected.shape[1] % 8 != 0
    engine = CudaEngine(model, "cpu", chunk_frames=1)
    assert engine.kernel_for(2) == "graph" and isinstance(engine.sampler(2), SubscaleSampler)
    assert torch.equal(engine.generate(cond, noise), expected)
    assert_logits_close(engine.forced_logits(cond, expected), expected_logits)


def test_the_cuda_engine_takes_subscale_on_graph_only(monkeypatch):
    model = subscale_model(8, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert CudaEngine.available(model, "cuda") is None
    with pytest.raises(ValueError, match="subscale_wavernn runs on 'graph'"):
        CudaEngine(model, "cpu", kernel="persistent")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_captured_in_cuda_graphs():
    """The same comparisons on a CUDA device, each chunk replayed from a captured graph, and a second
    utterance of another length through the same graphs with no host synchronisation."""
    model = subscale_model(8, 5, kernel=3, mel=HOP_100, biases=True)
    cond, noise, expected, expected_logits = case(model, frames=3, batch=2, seed=5)
    engine = make_engine("cuda", model, "cuda", chunk_frames=1)
    samples = engine.generate(cond, noise)
    stepper = engine.sampler(2).stepper
    assert stepper.use_graph and (1.0, False) in stepper._graphs
    assert samples.device.type == "cuda" and torch.equal(samples.cpu(), expected)
    assert_logits_close(engine.forced_logits(cond, expected).cpu(), expected_logits)

    model16 = subscale_model(16, 4)
    cond, noise, expected, _ = case(model16, frames=2, batch=2, seed=1)
    engine = make_engine("cuda", model16, "cuda")
    assert torch.equal(engine.generate(cond, noise).cpu(), expected)
    short_cond, short_noise = cond[:, :-1].cuda(), noise[:, : model16.hop_length].cuda()
    short = make_engine("reference", model16).generate(short_cond.cpu(), short_noise.cpu())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        samples = engine.generate(short_cond, short_noise)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(samples.cpu(), short)
