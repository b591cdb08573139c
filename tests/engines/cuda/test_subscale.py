"""Subscale WaveRNN on the CUDA engine's graph step against the reference engine.

Without a GPU the stepper runs its ops eagerly on CPU tensors (`use_graph=False`, what `CudaEngine`
does on a CPU device); the test marked `gpu` runs it captured in CUDA graphs on a CUDA device.
"""

from __future__ import annotations

import random

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cuda import CudaEngine
from vocoders.engines.cuda.subscale import (
    ContextWeights,
    SubscaleGraphStepper,
    SubscaleSampler,
    SubscaleSamplerStream,
    step_tables,
)
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


def random_chunks(frames: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < frames:
        sizes.append(min(rng.choice([1, 1, 2, 3]), frames - sum(sizes)))
    return sizes


def streamed(engine, cond, noise, sizes, temperature=1.0):
    """Run an engine stream over chunks of `sizes` frames -> (the pieces each call returned, all samples)."""
    model = engine.model
    u, hop = model.upsample_context, model.hop_length
    stream = engine.open_stream(cond.shape[0], temperature)
    pieces, at = [], 0
    for size in sizes:
        pieces.append(stream.run(cond[:, at : at + size + 2 * u], noise[:, at * hop : (at + size) * hop]))
        at += size
    pieces.append(stream.finish())
    return pieces, torch.cat(pieces, dim=1)


@pytest.mark.parametrize(
    "subscale, horizon, kernel, mel, frames, batch",
    [(8, 3, 2, None, 3, 1), (8, 5, 3, HOP_100, 4, 2), (4, 1, 2, HOP_100, 5, 2)],
)  # hop 100: the signal ends inside a step; stepper chunks of 13 and 25 steps end inside the order
def test_a_stream_gives_the_whole_utterance_for_any_chunking(subscale, horizon, kernel, mel, frames, batch):
    """The CUDA engine's stream (eager on CPU tensors) runs the whole utterance's staggered order as the
    conditioning arrives: each chunk returns the samples made up to the first one still missing (no
    more than `model.stream_lag` behind what has arrived), and `finish` the rest."""
    model = subscale_model(subscale, horizon, kernel=kernel, mel=mel, biases=True)
    cond, noise, expected, _ = case(model, frames, batch, seed=3)
    hop = model.hop_length
    for chunk_frames in (1, 2):
        engine = CudaEngine(model, "cpu", chunk_frames=chunk_frames)
        assert isinstance(engine.open_stream(batch), SubscaleSamplerStream)
        for sizes in ([1] * frames, [frames], random_chunks(frames, 0), random_chunks(frames, 1)):
            pieces, samples = streamed(engine, cond, noise, sizes)
            assert samples.shape == expected.shape and torch.equal(samples, expected), (chunk_frames, sizes)
            arrived = torch.tensor(sizes).cumsum(0) * hop
            made = [model.stream_made(model.stream_steps(int(n), ended=False), int(n)) for n in arrived]
            returned = torch.tensor([piece.shape[1] for piece in pieces[:-1]]).cumsum(0)
            assert returned.tolist() == made and (returned >= arrived - model.stream_lag).all()
    greedy = make_engine("reference", model).generate(cond, noise, 0.0)
    assert torch.equal(streamed(CudaEngine(model, "cpu"), cond, noise, random_chunks(frames, 2), 0.0)[1], greedy)


def test_a_stream_and_whole_utterances_on_one_engine_do_not_disturb_each_other():
    model = subscale_model(8, 2)
    cond, noise, expected, _ = case(model, frames=3, batch=2, seed=6)
    engine = CudaEngine(model, "cpu")
    u, hop = model.upsample_context, model.hop_length
    stream = engine.open_stream(2)
    first = stream.run(cond[:, : 1 + 2 * u], noise[:, :hop])
    assert torch.equal(engine.generate(cond, noise), expected)
    rest = stream.run(cond[:, 1:], noise[:, hop:])
    assert torch.equal(torch.cat([first, rest, stream.finish()], dim=1), expected)


def vocoder_streams_equal_whole(device: str, frames: int) -> None:
    """`Vocoder.stream` over the CUDA engine on `device`, batch 1 and 2, chunkings [1] * F, [F] and random."""
    from vocoders.inference import Vocoder

    model = subscale_model(8, 5, kernel=3, mel=HOP_100, biases=True)
    voc = Vocoder(model, device=device, engine="cuda")
    for batch in (1, 2):
        mel = torch.randn(80, frames) - 5 if batch == 1 else torch.randn(batch, 80, frames) - 5
        whole = voc(mel, seed=3)
        for sizes in ([1] * frames, [frames], random_chunks(frames, 4)):
            stream = voc.stream(batch=batch, seed=3)
            pieces, at = [], 0
            for size in sizes:
                stream.push(mel[..., at : at + size])
                at += size
                pieces.append(stream.pull())
            pieces.append(stream.close())
            assert isinstance(stream._engine, SubscaleSamplerStream)
            assert stream._engine.stepper.use_graph == (device == "cuda")
            assert torch.equal(torch.cat(pieces, dim=-1), whole), (batch, sizes)


def test_a_vocoder_stream_over_the_engine_on_cpu_tensors(monkeypatch):
    """The same path as on a GPU, eagerly: `Vocoder` is let build the CUDA engine on the CPU."""
    monkeypatch.setattr(CudaEngine, "available", classmethod(lambda cls, model, device: None))
    vocoder_streams_equal_whole("cpu", frames=5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_stream_on_a_gpu_equals_the_whole_utterance():
    """Through `Vocoder.stream` on a CUDA device: each stepper chunk replayed from a captured graph,
    the last one of a push padded with steps that change nothing."""
    vocoder_streams_equal_whole("cuda", frames=9)
