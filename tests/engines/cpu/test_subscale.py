"""Subscale WaveRNN on the compiled CPU engine against the reference engine (same logits, same samples)."""

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cpu import CpuEngine
from vocoders.features import MelConfig
from vocoders.models import SubscaleWaveRNN
from vocoders.native import load_native
from vocoders.sampling import draw_noise

native = load_native()
needs_native = pytest.mark.skipif(native is None, reason="vocoders._native is not built")
ISAS = native.isas() if native is not None else ()


def subscale_model(subscale, horizon, bits=16, out_hidden=24):
    """Odd sizes (hidden 40: vector tails in the GRU rows) and, with bits=9, unequal softmaxes (5 + 4 bits)."""
    torch.manual_seed(subscale + horizon)
    sizes = dict(context_channels=4, hidden_size=40, cond_channels=8, cond_blocks=1, out_hidden=out_hidden)
    return SubscaleWaveRNN(subscale=subscale, horizon=horizon, bits=bits, **sizes).eval()


def inputs(model, frames, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=generator) - 5
    with torch.no_grad():
        cond = model.conditioning(mel)
    steps = model.num_samples(cond)
    targets = torch.randint(0, 2**model.core.bits, (batch, steps), generator=generator)
    return mel, cond, targets, draw_noise(batch, steps, model.noise_per_step, seed=seed)


@needs_native
@pytest.mark.parametrize(
    "subscale, horizon, bits, frames, batch",
    [(16, 4, 16, 1, 1), (8, 3, 9, 2, 2), (16, 40, 16, 1, 1), (16, 2, 16, 1, 5)],
)  # (16, 40): N = 16 <= F leaves steps where no sub-tensor runs; batch 5 x 16 = 80 streams, over one 64-stream call
def test_teacher_forced_logits_match_the_reference_and_the_parallel_model(subscale, horizon, bits, frames, batch):
    model = subscale_model(subscale, horizon, bits)
    mel, cond, targets, _ = inputs(model, frames, batch)
    engine = make_engine("cpu", model)
    logits = engine.forced_logits(cond, targets)
    reference = make_engine("reference", model).forced_logits(cond, targets)
    with torch.no_grad():
        parallel = model.forward_logits(mel, targets)
    assert logits.shape == reference.shape == parallel.shape
    assert torch.equal(torch.isinf(logits), torch.isinf(reference))
    finite = torch.isfinite(reference)
    assert (logits[finite] - reference[finite]).abs().max() <= 1e-4
    assert (logits[finite] - parallel[finite]).abs().max() <= 1e-4


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("subscale, horizon, temperature", [(16, 4, 1.0), (8, 2, 0.7), (8, 2, 0.0)])
def test_same_samples_as_the_reference_from_the_same_noise(monkeypatch, isa, subscale, horizon, temperature):
    monkeypatch.setenv("VOCODERS_ISA", isa)
    model = subscale_model(subscale, horizon)
    _, cond, _, noise = inputs(model, frames=2, batch=2, seed=3)
    engine = make_engine("cpu", model)
    assert engine.isa == isa
    samples = engine.generate(cond, noise, temperature)
    reference = make_engine("reference", model).generate(cond, noise, temperature)
    assert samples.shape == reference.shape == (2, 2 * model.hop_length)
    assert torch.equal(samples, reference)
    assert len(samples.unique()) > 10  # free running, not stuck on one class


@needs_native
@pytest.mark.parametrize("isa", ISAS)
def test_kernel_3_biases_and_a_signal_that_ends_inside_a_step(monkeypatch, isa):
    """Context kernel 3, non-zero context biases, batch 2, hop 100 (not a multiple of B = 8: the last
    step's later sub-tensors run past the end, their samples dropped and read as zeros by the context)."""
    monkeypatch.setenv("VOCODERS_ISA", isa)
    torch.manual_seed(11)
    mel = MelConfig.preset("hifigan", hop_length=100, win_length=400, n_fft=512).to_dict()
    sizes = dict(context_channels=4, context_kernel=3, hidden_size=40, cond_channels=8, cond_blocks=1, out_hidden=24)
    model = SubscaleWaveRNN(subscale=8, horizon=5, mel=mel, **sizes).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.context.conv_in.bias)
        for layer in model.context.layers:
            torch.nn.init.normal_(layer.bias)
    mel, cond, targets, noise = inputs(model, frames=3, batch=2, seed=5)
    assert model.num_samples(cond) % 8 != 0
    engine = make_engine("cpu", model)
    reference = make_engine("reference", model)
    assert torch.equal(engine.generate(cond, noise), reference.generate(cond, noise))
    logits, expected = engine.forced_logits(cond, targets), reference.forced_logits(cond, targets)
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(logits))
    assert (logits[finite] - expected[finite]).abs().max() <= 1e-4


@needs_native
def test_utterances_split_over_threads_give_the_same_samples():
    model = subscale_model(8, 2)
    _, cond, targets, noise = inputs(model, frames=1, batch=3, seed=2)
    one, two = CpuEngine(model, threads=1), CpuEngine(model, threads=2)
    assert torch.equal(one.generate(cond, noise), two.generate(cond, noise))
    assert torch.equal(one.forced_logits(cond, targets), two.forced_logits(cond, targets))


@needs_native
def test_auto_picks_the_cpu_engine_for_subscale():
    model = subscale_model(8, 2)
    assert CpuEngine.available(model, "cpu") is None
    assert make_engine("auto", model).name == "cpu"
    assert CpuEngine.available(model, "meta") is not None


def test_a_changed_step_is_not_taken_for_the_subscale_one():
    class Variant(SubscaleWaveRNN):
        def step(self, state, cond_t, noise_t, temperature, forced=None):
            return super().step(state, cond_t, noise_t, temperature, forced)

    model = Variant(subscale=4, horizon=2, context_channels=4, hidden_size=32, cond_channels=8, cond_blocks=1)
    assert "WaveRNN step only" in CpuEngine.available(model, "cpu")


@needs_native
def test_the_loop_runs_an_utterance_in_pieces_over_windows_of_it():
    """The native loop's state is the caller's: steps in pieces, each over a window of the samples it
    touches (from the oldest one not yet made), give the samples of one call; a step that would read
    a sample outside its window is refused."""
    model = subscale_model(8, 3)
    _, cond, _, noise = inputs(model, frames=2, batch=2, seed=4)
    loop = make_engine("cpu", model).subscale
    whole = loop.run(cond, noise, None, 1.0)[0]
    features = model.upsample(cond).detach().contiguous()
    steps = model.num_samples(cond)
    state, out = loop.new_state(2), torch.zeros(2, steps, dtype=torch.long)
    end = model.stream_steps(steps, ended=True)
    for last in (-1, 0, 1, 7, 30, 31, 50, end):
        origin = model.stream_made(state.step, steps)
        window = slice(origin, steps)
        loop.steps(state, last, steps, features[:, window], noise[:, window], out[:, window], origin)
    assert state.step == end and torch.equal(out, whole)
    state = loop.new_state(2)
    loop.steps(state, 20, steps, features, noise, out, 0)
    with pytest.raises(ValueError, match="outside the window"):  # step 20 makes sample 98 (sub-tensor 2, position 12)
        loop.steps(state, 21, steps, features[:, 100:], noise[:, 100:], out[:, 100:], 100)
