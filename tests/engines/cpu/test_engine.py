"""The compiled CPU engine against the reference engine: every instruction set, batches, reduced precision."""

import copy
import sys

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cpu import CpuEngine
from vocoders.models import WaveRNN
from vocoders.native import load_native, native_status
from vocoders.sampling import draw_noise

native = load_native()
needs_native = pytest.mark.skipif(native is None, reason="vocoders._native is not built")
ISAS = native.isas() if native is not None else ()


@pytest.fixture
def odd_wavernn(mel_config):
    """Sizes that leave vector tails everywhere: half = 20 rows, out_hidden 19, 5 + 4 bits (unequal softmaxes)."""
    torch.manual_seed(1)
    return WaveRNN(mel=mel_config.to_dict(), hidden_size=40, cond_channels=8, cond_blocks=1, out_hidden=19, bits=9)


def inputs(model, batch=2, frames=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=generator)
    with torch.no_grad():
        cond = model.conditioning(mel - 5)
    return mel - 5, cond, draw_noise(batch, model.num_samples(cond), model.noise_per_step, seed=seed)


@needs_native
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("temperature", [1.0, 0.6, 0.0])
def test_same_samples_and_logits_as_the_reference(odd_wavernn, monkeypatch, isa, temperature):
    monkeypatch.setenv("VOCODERS_ISA", isa)
    model = odd_wavernn.eval()
    mel, cond, noise = inputs(model)
    reference = make_engine("reference", model).generate(cond, noise, temperature)
    engine = make_engine("cpu", model)
    assert engine.isa == isa
    assert torch.equal(engine.generate(cond, noise, temperature), reference)
    with torch.no_grad():
        parallel = model.forward_logits(mel, reference)
    logits = engine.forced_logits(cond, reference)
    assert logits.shape == parallel.shape
    assert torch.equal(torch.isinf(logits), torch.isinf(parallel))  # the shorter softmax padded with -inf
    finite = torch.isfinite(parallel)
    assert (logits[finite] - parallel[finite]).abs().max() <= 1e-4


@needs_native
def test_batches_spread_over_threads(odd_wavernn):
    """Three streams on two workers (2 + 1 streams per pass) give each stream its own reference samples."""
    model = odd_wavernn.eval()
    _, cond, noise = inputs(model, batch=3, frames=1, seed=4)
    reference = make_engine("reference", model).generate(cond, noise)
    threaded = CpuEngine(model, threads=2).generate(cond, noise)
    assert torch.equal(threaded, reference)
    alone = CpuEngine(model, threads=1).generate(cond[1:2], noise[1:2])
    assert torch.equal(alone, reference[1:2])


@needs_native
def test_chunks_carry_the_state(odd_wavernn, monkeypatch):
    """Generation in native calls of 100 samples (state handed over between calls) changes nothing."""
    import vocoders.engines.cpu.engine as cpu

    model = odd_wavernn.eval()
    _, cond, noise = inputs(model, batch=3, frames=2, seed=5)
    reference = make_engine("reference", model).generate(cond, noise)
    whole = CpuEngine(model, threads=2)
    samples, logits = whole.generate(cond, noise), whole.forced_logits(cond, reference)
    monkeypatch.setattr(cpu, "CHUNK_STEPS", 100)
    chunked = CpuEngine(model, threads=2)
    assert torch.equal(chunked.generate(cond, noise), samples)
    assert torch.equal(samples, reference)
    assert torch.equal(chunked.forced_logits(cond, reference), logits)


def with_weights_as_stored(model, engine):
    """A copy of `model` whose R and O1-O4 hold exactly the values the engine multiplies by."""
    stored = copy.deepcopy(model)
    packed = engine.packed
    with torch.no_grad():
        stored.gru_weight_hh.copy_(packed.R.dequantized())
        for name in ("O1", "O2", "O3", "O4"):
            getattr(stored, name).weight.copy_(getattr(packed, name).dequantized())
    return stored


@needs_native
@pytest.mark.parametrize(("dtype", "logit_bound"), [("bfloat16", 0.02), ("int8", 0.02)])
def test_reduced_precision_weights(tiny_wavernn, dtype, logit_bound):
    """Reduced precision changes only the stored weights, so:

    - against the reference run on those same rounded weights, logits agree to float32 rounding (1e-4);
    - against float32 weights, logits move by the weight rounding (bf16: 2^-9 relative per weight, int8:
      half a step of max|row| / 127) carried through the network; on this model that stays below
      `logit_bound` (measured: ~1e-3 bf16, ~2e-3 int8);
    - free-running, a draw changes only where a logit shift moves a class boundary past the noise, so
      most samples still agree (random weights forget a different sample quickly; a trained model may not).
    """
    model = tiny_wavernn
    mel, cond, noise = inputs(model, batch=2, frames=4)
    reference = make_engine("reference", model).generate(cond, noise)
    engine = make_engine("auto", model, dtype=dtype)
    assert engine.name == "cpu" and engine.dtype == dtype
    logits = engine.forced_logits(cond, reference)
    finite = torch.isfinite(logits)

    stored = with_weights_as_stored(model, engine)
    with torch.no_grad():
        exact = stored.forward_logits(mel, reference)
        full = model.forward_logits(mel, reference)
    assert (logits[finite] - exact[finite]).abs().max() <= 1e-4
    shift = (logits[finite] - full[finite]).abs().max()
    assert 0 < shift <= logit_bound
    assert torch.equal(engine.generate(cond, noise), make_engine("reference", stored).generate(cond, noise))
    agreement = (engine.generate(cond, noise) == reference).float().mean()
    assert agreement >= 0.9


def test_fallback_when_the_extension_is_absent(tiny_wavernn, monkeypatch):
    monkeypatch.setitem(sys.modules, "vocoders._native", None)  # import fails as if never built
    module, reason = native_status()
    assert module is None and "not built" in reason
    assert "not built" in CpuEngine.available(tiny_wavernn, "cpu")
    with pytest.raises(RuntimeError, match="engine 'cpu' cannot run wavernn on cpu: .*not built"):
        make_engine("cpu", tiny_wavernn)
    assert make_engine("auto", tiny_wavernn).name == "reference"
    with pytest.raises(RuntimeError, match="no engine can run wavernn on cpu with int8 weights"):
        make_engine("auto", tiny_wavernn, dtype="int8")
    monkeypatch.delitem(sys.modules, "vocoders._native")
    monkeypatch.setenv("VOCODERS_NATIVE", "0")
    assert "VOCODERS_NATIVE=0" in CpuEngine.available(tiny_wavernn, "cpu")


def test_refuses_what_it_cannot_run(tiny_wavernn):
    class OtherStep(WaveRNN):
        def step(self, state, cond_t, noise_t, temperature, forced=None):
            return super().step(state, cond_t, noise_t, temperature, forced)

    assert "CPU only" in CpuEngine.available(tiny_wavernn, "cuda")
    other = OtherStep(mel=tiny_wavernn.mel_config, hidden_size=8, cond_channels=4, cond_blocks=1)
    assert "WaveRNN step only" in CpuEngine.available(other, "cpu")
    with pytest.raises(ValueError, match="stores weights as float32, not 'int8'"):
        make_engine("reference", tiny_wavernn, dtype="int8")


@needs_native
@pytest.mark.parametrize("fine_bits", [5, 2, 1])
def test_mulaw_preemphasis_model_same_audio_as_the_reference(mel_config, fine_bits):
    """The engines see classes only: a mu-law model with pre-emphasis and any split of its 10 bits
    (5 + 5, 8 + 2, 9 + 1) gives the reference's samples and audio."""
    torch.manual_seed(3)
    model = WaveRNN(
        mel=mel_config.to_dict(), hidden_size=40, cond_channels=8, cond_blocks=1, bits=10, fine_bits=fine_bits,
        encoding="mulaw", preemphasis=0.86,
    ).eval()  # fmt: skip
    _, cond, noise = inputs(model, frames=2, seed=5)
    reference = make_engine("reference", model)
    engine = make_engine("cpu", model)
    assert torch.equal(engine.generate(cond, noise), reference.generate(cond, noise))
    assert torch.equal(engine.synthesize(cond, noise), reference.synthesize(cond, noise))
