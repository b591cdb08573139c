import pytest
import torch

from vocoders.engines import ENGINES, make_engine
from vocoders.sampling import draw_noise, sample_categorical


def test_inverse_cdf_sampling_matches_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(20000, 1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    draws = sample_categorical(logits, u)
    freq = torch.bincount(draws, minlength=4).double() / 20000
    assert torch.allclose(freq, torch.softmax(logits[0].double(), 0), atol=0.01)
    assert torch.equal(sample_categorical(logits[:3], u[:3], temperature=0.0), torch.tensor([2, 2, 2]))
    edge = sample_categorical(torch.zeros(2, 4), torch.tensor([0.0, 0.999999]))
    assert edge.tolist() == [0, 3]


def test_low_temperature_sharpens():
    logits = torch.tensor([[0.0, 0.5]]).repeat(5000, 1)
    u = torch.rand(5000, generator=torch.Generator().manual_seed(1))
    hot = sample_categorical(logits, u, 1.0).float().mean()
    cold = sample_categorical(logits, u, 0.1).float().mean()
    assert cold > hot + 0.2


def test_noise_is_reproducible():
    assert torch.equal(draw_noise(2, 10, 2, seed=3), draw_noise(2, 10, 2, seed=3))
    assert not torch.equal(draw_noise(2, 10, 2, seed=3), draw_noise(2, 10, 2, seed=4))


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_matches_the_reference(tiny_model, name):
    """Same weights and noise: the same samples; teacher forcing: the parallel pass's logits."""
    model = tiny_model
    reason = ENGINES[name].available(model, "cpu")
    if reason is not None:
        pytest.skip(f"{name} cannot run {model.name}: {reason}")  # device engines: test_engine_cuda.py
    mel = torch.randn(2, 80, 2 + 2 * model.mel_context) - 5
    with torch.no_grad():
        cond = model.conditioning(mel)
    noise = draw_noise(2, model.num_samples(cond), model.noise_per_step, seed=0)
    reason = ENGINES[name].available(model, torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"engine {name} cannot run here: {reason}")
    reference = make_engine("reference", model).generate(cond, noise)
    engine = make_engine(name, model)
    samples = engine.generate(cond, noise)
    assert samples.shape == (2, 512) and samples.dtype == torch.long
    assert torch.equal(samples, reference)
    with torch.no_grad():
        parallel = model.forward_logits(mel, reference)
    assert (engine.forced_logits(cond, reference) - parallel).abs().max() <= 1e-4


def test_auto_finds_an_engine_for_every_model(tiny_model):
    assert make_engine("auto", tiny_model).available(tiny_model, "cpu") is None


def test_generation_is_deterministic_and_noise_driven(tiny_model):
    model = tiny_model
    cond = model.conditioning(torch.randn(1, 80, 1 + 2 * model.mel_context) - 5).detach()
    engine = make_engine("auto", model)
    per_step = model.noise_per_step
    a = engine.generate(cond, draw_noise(1, 256, per_step, seed=0))
    b = engine.generate(cond, draw_noise(1, 256, per_step, seed=0))
    c = engine.generate(cond, draw_noise(1, 256, per_step, seed=1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and model.decode(a).abs().max() <= 1.0


def test_engine_errors(tiny_wavernn):
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("warp-drive", tiny_wavernn)
    engine = make_engine("reference", tiny_wavernn)
    cond = tiny_wavernn.conditioning(torch.randn(1, 80, 1 + 2 * tiny_wavernn.mel_context)).detach()
    with pytest.raises(ValueError, match="noise must have shape"):
        engine.generate(cond, torch.rand(1, 10, 2))
