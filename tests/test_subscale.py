"""Subscale WaveRNN: folding, the staggered order, the dependency scheme, and step == parallel."""

import pytest
import torch

from vocoders.engines import make_engine
from vocoders.models import SubscaleWaveRNN
from vocoders.models.subscale_context import fold, subscale_order, unfold
from vocoders.sampling import draw_noise, sample_categorical


def tiny(subscale=4, horizon=3, **kwargs):
    torch.manual_seed(0)
    sizes = dict(context_channels=4, hidden_size=32, cond_channels=8, cond_blocks=1, out_hidden=24)
    return SubscaleWaveRNN(subscale=subscale, horizon=horizon, **{**sizes, **kwargs}).eval()


def inputs(model, frames=2, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=g) - 5
    targets = torch.randint(0, 65536, (batch, frames * model.hop_length), generator=g)
    return mel, targets


@pytest.mark.parametrize("factor", [1, 3, 8, 16])
def test_fold_is_its_own_inverse_on_any_length(factor):
    for length in [*range(1, 40), 255, 256, 257, 1000]:
        x = torch.randn(2, length)
        folded = fold(x, factor)
        assert folded.shape == (2, factor, -(-length // factor))
        assert torch.equal(unfold(folded, length), x)
        i = torch.arange(length)
        assert torch.equal(folded[:, i % factor, i // factor], x)  # sample i -> sub-tensor i mod B
    features = torch.randn(2, 37, 5)  # time on axis 1, features after it
    folded = fold(features, 8, dim=1)
    assert folded.shape == (2, 8, 5, 5) and torch.equal(folded[:, 3, 4], features[:, 35])
    assert torch.equal(unfold(folded, 37, dim=1), features)


@pytest.mark.parametrize("length,factor,horizon", [(64, 4, 3), (61, 4, 3), (100, 16, 2), (50, 3, 0), (7, 8, 5)])
def test_order_is_a_staggered_permutation(length, factor, horizon):
    order = subscale_order(length, factor, horizon)
    produced = order[order >= 0]
    assert torch.equal(produced.sort().values, torch.arange(length))  # each sample exactly once
    positions = -(-length // factor)
    for s in range(factor):  # sub-tensor s runs in time order from step s * (F + 1)
        column = order[:, s]
        assert torch.equal(column[column >= 0], torch.arange(s, length, factor))
        if s < length:
            assert int((column >= 0).nonzero()[0]) == s * (horizon + 1)
    if length % factor == 0:
        assert order.shape[0] == positions + (factor - 1) * (horizon + 1)
        assert (order >= 0).all(dim=1).sum() == max(0, positions - (factor - 1) * (horizon + 1))


def step_of(model, length):
    """The step at which each sample position is produced: [length]."""
    order = model.generation_order(length)
    steps = torch.arange(order.shape[0]).unsqueeze(1).expand_as(order)
    result = torch.full((length,), -1)
    result[order[order >= 0]] = steps[order >= 0]
    return result


@pytest.mark.parametrize("subscale,horizon", [(4, 3), (8, 2)])
def test_changing_a_sample_not_yet_generated_never_changes_one_already_generated(subscale, horizon):
    """Perturbation over the real order: for steps t, re-draw every sample produced after t; the logits of
    every sample produced up to t stay the same. Samples of one step do not see each other either."""
    model = tiny(subscale, horizon)
    mel, targets = inputs(model, frames=1)
    length = targets.shape[1]
    when = step_of(model, length)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        base = model.forward_logits(mel, targets)
        last = int(when.max())
        for t in [0, 1, horizon, horizon + 1, subscale * (horizon + 1), last // 2, last - 1]:
            later = when > t
            changed = torch.where(later, torch.randint(0, 65536, targets.shape, generator=g), targets)
            logits = model.forward_logits(mel, changed)
            done = ~later
            assert torch.allclose(logits[:, done], base[:, done], atol=1e-6, rtol=0), f"step {t} leaked"
            assert not torch.allclose(logits[:, later], base[:, later])  # the perturbation did something
        same_step = (when == last // 2).nonzero().flatten()
        assert len(same_step) >= 2
        for p in same_step:
            changed = targets.clone()
            changed[0, p] = (changed[0, p] + 12345) % 65536
            others = same_step[same_step != p]
            assert torch.equal(model.forward_logits(mel, changed)[:, others], base[:, others])


def test_each_sample_sees_the_earlier_sub_tensors_up_to_the_horizon():
    """The context reaches sub-tensor s - 1 at position i + F (the newest dependency), not i + F + 1."""
    model = tiny(4, 3)
    mel, targets = inputs(model, frames=1)
    B, F = 4, 3
    s, i = 2, 20
    target = B * i + s
    with torch.no_grad():
        base = model.forward_logits(mel, targets)[0, target]
        for k, should_change in [(i + F, True), (i - 5, True), (i + F + 1, False)]:
            changed = targets.clone()
            changed[0, B * k + s - 1] = (changed[0, B * k + s - 1] + 30000) % 65536
            moved = not torch.equal(model.forward_logits(mel, changed)[0, target], base)
            assert moved == should_change, (k, should_change)


@pytest.mark.parametrize("subscale,horizon,frames", [(4, 3, 2), (3, 2, 1), (8, 4, 1), (16, 2, 2)])
def test_step_by_step_equals_teacher_forcing(subscale, horizon, frames):
    """The reference engine's incremental steps (context caches, staggered slots) == the parallel pass."""
    model = tiny(subscale, horizon)
    mel, targets = inputs(model, frames=frames, batch=2)
    engine = make_engine("reference", model)
    with torch.no_grad():
        parallel = model.forward_logits(mel, targets)
        stepped = engine.forced_logits(model.conditioning(mel), targets)
    assert stepped.shape == parallel.shape == (2, frames * 256, 2, 256)
    assert (stepped - parallel).abs().max() <= 1e-4


def test_free_running_samples_are_draws_from_their_teacher_forced_distribution():
    """Generation follows the order: each generated sample is what its noise draws from the logits the
    parallel pass gives when fed the generated signal."""
    model = tiny(4, 3)
    mel, _ = inputs(model, frames=1, batch=2)
    with torch.no_grad():
        cond = model.conditioning(mel)
        noise = draw_noise(2, 256, 2, seed=3)
        samples = make_engine("reference", model).generate(cond, noise)
        logits = model.forward_logits(mel, samples)
    coarse, fine = model.core.split(samples)
    assert torch.equal(coarse, sample_categorical(logits[:, :, 0].flatten(0, 1), noise[..., 0].flatten()).view(2, -1))
    assert torch.equal(fine, sample_categorical(logits[:, :, 1].flatten(0, 1), noise[..., 1].flatten()).view(2, -1))
    other = make_engine("reference", model).generate(cond, draw_noise(2, 256, 2, seed=4))
    assert not torch.equal(other, samples)


def test_loss_trains_every_part():
    model = tiny(8, 4).train()
    mel, targets = inputs(model, frames=2, batch=2)
    audio = model.decode(targets)
    loss, parts = model.loss(mel, audio)
    assert set(parts) == {"coarse", "fine"} and 4.0 < parts["coarse"] < 7.0
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    masked = model.context.conv_in.weight.grad.reshape(8, 4, 8, 2, 2)
    for s in range(8):  # no gradient through a masked (z >= s) connection
        assert masked[s, :, s:].abs().max() == 0


def test_kwargs_rebuild_and_bad_sizes():
    model = tiny(8, 4)
    again = SubscaleWaveRNN(**model.kwargs)
    again.load_state_dict(model.state_dict())
    assert again.kwargs == model.kwargs and again.samples_per_step == 8
    with pytest.raises(ValueError, match="subscale"):
        SubscaleWaveRNN(subscale=0)
    with pytest.raises(ValueError, match="horizon"):
        SubscaleWaveRNN(subscale=4, horizon=-1)
    with pytest.raises(NotImplementedError, match="start_state"):
        model.initial_state(1, "cpu")


def test_checkpoint_load_and_vocode(tmp_path):
    import vocoders
    from vocoders.checkpoint import save_checkpoint

    model = tiny(8, 2)
    path = save_checkpoint(tmp_path / "subscale.safetensors", model, step=3)
    voc = vocoders.load(path)
    assert voc.model.name == "subscale_wavernn" and voc.model.subscale == 8
    mel = torch.zeros(80, 3) - 4
    audio = voc(mel, seed=0)
    assert audio.shape == (768,) and audio.abs().max() <= 1
    assert torch.equal(audio, voc(mel, seed=0))


def test_step_cost_counts_b_samples_and_every_weight_once():
    model = tiny(8, 4)
    cost, core = model.step_cost(), model.core.step_cost()
    assert cost.samples_per_step == 8
    context_weights = sum(
        m.weight.numel() for m in [model.context.conv_in, *model.context.layers, model.context.conv_out]
    )
    core_weights = sum(rows * cols for rows, cols in core.matrices.values())
    cond_weights = 3 * model.core.hidden_size * model.core.cond_channels
    assert sum(r * c for r, c in cost.matrices.values()) == core_weights + cond_weights + context_weights
    assert cost.flops > 8 * 2 * (core_weights + cond_weights)  # every sample multiplies the shared weights
