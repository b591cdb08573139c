"""The WaveNet CPU engine (C loop and numba fallback) held to the reference engine."""

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.engines.cpu.wavenet import WaveNetCPUEngine
from vocoders.sampling import draw_noise

from ...test_wavenet import batch, small


def backends():
    """The loops this installation has: numba always, the C kernel when vocoders._native is built."""
    from vocoders.native import native_status

    return ["numba"] + (["native"] if native_status()[0] is not None else [])


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_cpu_engine_reproduces_the_reference(kernel_size, backend):
    """Same noise: the same samples (at several temperatures), teacher forcing: the parallel logits."""
    model = small(kernel_size=kernel_size)
    mel = torch.randn(2, 80, 2 + 2 * model.mel_context) - 5
    cond = model.conditioning(mel).detach()
    noise = draw_noise(2, model.num_samples(cond), 1, seed=3)
    engine = WaveNetCPUEngine(model, backend=backend)
    for temperature in (1.0, 0.7, 0.0):
        reference = make_engine("reference", model).generate(cond, noise, temperature)
        assert torch.equal(engine.generate(cond, noise, temperature), reference), temperature
    with torch.no_grad():
        parallel = model.forward_logits(mel, reference)
    assert (engine.forced_logits(cond, reference) - parallel).abs().max() <= 1e-4


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_weights_stay_close(tiny_wavenet, dtype, backend):
    """bf16 / int8 storage changes the logits by a little, not a lot (exactness is float32's job)."""
    model = tiny_wavenet
    mel, audio = batch(model)
    targets = model.encode(audio)
    cond = model.conditioning(mel).detach()
    with torch.no_grad():
        parallel = model.forward_logits(mel, targets)
    engine = WaveNetCPUEngine(model, dtype=dtype, backend=backend)
    error = (engine.forced_logits(cond, targets) - parallel).abs().max()
    assert 0 < error <= 0.05
    assert engine.weight_bytes() < WaveNetCPUEngine(model, backend=backend).weight_bytes()


def test_cpu_engine_refuses_what_it_cannot_run(tiny_wavernn, tiny_wavenet):
    with pytest.raises(RuntimeError, match="wavenet"):
        WaveNetCPUEngine(tiny_wavernn)
    with pytest.raises(ValueError, match="float16"):
        WaveNetCPUEngine(tiny_wavenet, dtype="float16")
    with pytest.raises(ValueError, match="backend"):
        WaveNetCPUEngine(tiny_wavenet, backend="gpu")
    assert isinstance(make_engine("cpu", tiny_wavenet), WaveNetCPUEngine)
    cond = tiny_wavenet.conditioning(torch.randn(1, 80, 1 + 2 * tiny_wavenet.mel_context)).detach()
    with pytest.raises(ValueError, match="noise must have shape"):
        make_engine("cpu", tiny_wavenet).generate(cond, torch.rand(1, 10, 1))
