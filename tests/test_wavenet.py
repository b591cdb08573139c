import math

import pytest
import torch

from vocoders.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from vocoders.engines import make_engine
from vocoders.models import WaveNet
from vocoders.sampling import draw_noise


def batch(model, frames=2, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=g) - 5
    audio = (torch.rand(batch, frames * model.hop_length, generator=g) * 2 - 1) * 0.5
    return mel, audio


def small(**kwargs):
    torch.manual_seed(0)
    args = dict(layers=6, cycles=2, residual_channels=8, gate_channels=12, skip_channels=8, cond_channels=8)
    return WaveNet(**{**args, "cond_blocks": 1, **kwargs}).eval()


def test_shapes_and_loss(tiny_wavenet):
    mel, audio = batch(tiny_wavenet)
    targets = tiny_wavenet.encode(audio)
    assert targets.min() >= 0 and targets.max() < 256
    logits = tiny_wavenet.forward_logits(mel, targets)
    assert logits.shape == (2, 512, 256)
    loss, parts = tiny_wavenet.loss(mel, audio)
    assert loss.shape == () and parts == {}
    assert abs(loss.item() - math.log(256)) < 0.5  # about uniform at initialisation
    assert tiny_wavenet.silence == 128 and tiny_wavenet.decode(torch.tensor([128])).abs().max() < 1e-2


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_teacher_forced_equals_step_by_step(kernel_size):
    """Ring buffers reproduce the dilated convolutions: same logits as the parallel pass."""
    model = small(kernel_size=kernel_size)
    mel, audio = batch(model)
    targets = model.encode(audio)
    with torch.no_grad():
        parallel = model.forward_logits(mel, targets)
        layer_cond = model.upsample(model.conditioning(mel))
        state = model.initial_state(2, "cpu")
        steps = []
        for t in range(targets.shape[1]):
            state, sample, logits = model.step(state, layer_cond[:, t], torch.zeros(2, 1), 1.0, forced=targets[:, t])
            assert torch.equal(sample, targets[:, t])
            steps.append(logits)
    assert (torch.stack(steps, 1) - parallel).abs().max() <= 1e-4


def test_causality():
    """Logits up to t do not depend on the sample at t; those after it do."""
    model = small()
    mel, audio = batch(model, batch=1)
    targets = model.encode(audio)
    t = 300
    changed = targets.clone()
    changed[0, t] = (changed[0, t] + 100) % 256
    with torch.no_grad():
        a, b = model.forward_logits(mel, targets), model.forward_logits(mel, changed)
    assert torch.equal(a[0, : t + 1], b[0, : t + 1])
    assert not torch.allclose(a[0, t + 1], b[0, t + 1])


@pytest.mark.parametrize("kernel_size,cycles", [(3, 2), (2, 3)])
def test_receptive_field(kernel_size, cycles):
    """The inputs a prediction sees are exactly the last `receptive_field` ones."""
    model = small(kernel_size=kernel_size, cycles=cycles)
    per_cycle = model.layers // cycles
    assert model.receptive_field == 1 + (kernel_size - 1) * cycles * (2**per_cycle - 1)
    mel, audio = batch(model, batch=1)
    captured = []
    hook = model.embedding.register_forward_hook(lambda m, i, out: captured.append(out) or out.retain_grad())
    logits = model.forward_logits(mel, model.encode(audio))
    hook.remove()
    t = 400
    logits[0, t].sum().backward()
    seen = captured[0].grad[0].abs().sum(-1) > 0  # [T]: inputs whose gradient is not zero
    expected = torch.zeros_like(seen)
    expected[t - model.receptive_field + 1 : t + 1] = True
    assert torch.equal(seen, expected)


def test_projecting_before_upsampling_is_exact(tiny_wavenet):
    """The upsampler is linear and channel-shared: project-then-upsample = upsample-then-project."""
    model = tiny_wavenet
    mel, _ = batch(model)
    with torch.no_grad():
        cond = model.conditioning(mel)
        direct = torch.nn.functional.linear(model.upsampler(cond), model.cond_weight)
        direct = direct + model.dilated_bias.reshape(-1)
        assert (model.upsample(cond) - direct).abs().max() < 1e-5


def test_speaker_embedding():
    model = small(speakers=3, speaker_channels=4)
    mel, audio = batch(model)
    targets = model.encode(audio)
    with torch.no_grad():
        one = model.forward_logits(mel, targets, speaker=1)
        two = model.forward_logits(mel, targets, speaker=torch.tensor([1, 2]))
    assert torch.equal(one[0], two[0]) and not torch.allclose(one[1], two[1])
    with pytest.raises(ValueError, match="multi-speaker"):
        model.conditioning(mel)
    with pytest.raises(ValueError, match="out of range"):
        model.conditioning(mel, speaker=3)
    with pytest.raises(ValueError, match="no speaker embedding"):
        small().conditioning(mel, speaker=0)
    cond = model.conditioning(mel, speaker=torch.tensor([0, 2])).detach()
    noise = draw_noise(2, model.num_samples(cond), 1, seed=0)
    reference = make_engine("reference", model).generate(cond, noise)
    assert torch.equal(make_engine("cpu", model).generate(cond, noise), reference)


def test_bad_sizes_refused():
    with pytest.raises(ValueError, match="multiple of cycles"):
        WaveNet(layers=10, cycles=4)
    with pytest.raises(ValueError, match="even"):
        WaveNet(gate_channels=33)
    with pytest.raises(ValueError, match="kernel_size"):
        WaveNet(kernel_size=1)


def test_learns_a_segment():
    """A few Adam steps on one batch lower the loss: gradients reach every part of the model."""
    model = small().train()
    mel, _ = batch(model)
    audio = 0.5 * torch.sin(torch.arange(512) * 0.2).repeat(2, 1)  # predictable from its past
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, _ = model.loss(mel, audio)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first - 1.0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_checkpoint_round_trip(tmp_path, tiny_wavenet):
    path = save_checkpoint(tmp_path / "wn.safetensors", tiny_wavenet, step=3)
    loaded = model_from_checkpoint(read_checkpoint(path)).eval()
    assert loaded.kwargs == tiny_wavenet.kwargs and loaded.receptive_field == tiny_wavenet.receptive_field
    mel, audio = batch(tiny_wavenet)
    targets = tiny_wavenet.encode(audio)
    with torch.no_grad():
        assert torch.equal(loaded.forward_logits(mel, targets), tiny_wavenet.forward_logits(mel, targets))


# ---- the compiled CPU engine -------------------------------------------------------------------


def test_tiny_training_run_and_synthesis(tmp_path):
    """`model=wavenet debug=tiny` trains through the shared Trainer; its checkpoint loads and vocodes."""
    from hydra import compose, initialize_config_module

    import vocoders
    from vocoders.training import train

    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["model=wavenet", "debug=tiny", f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path}"],
        )
    result = train(cfg)
    assert result.step == 4 and result.validation_audio.is_file() and result.metrics["loss"] > 0
    voc = vocoders.load(result.checkpoint)
    assert voc.model.name == "wavenet" and voc.engine.name == "cpu"
    audio = voc(voc.mel(torch.sin(torch.arange(2048) * 0.05) * 0.3), seed=0)
    assert audio.shape == (2048 // 256 * 256,) and audio.abs().max() <= 1


def test_multi_speaker_checkpoint_through_load(tmp_path, tiny_wavernn):
    import vocoders

    model = small(speakers=2, speaker_channels=4)
    voc = vocoders.load(save_checkpoint(tmp_path / "ms.safetensors", model, step=1))
    mel = torch.full((80, 3), -5.0)
    assert voc(mel, seed=0, speaker=1).shape == (3 * 256,)
    assert not torch.equal(voc(mel, seed=0, speaker=0), voc(mel, seed=0, speaker=1))
    for speaker, match in ((None, "multi-speaker"), (2, "out of range")):
        with pytest.raises(ValueError, match=match):
            voc(mel, speaker=speaker, source="m.npy")
    single = vocoders.load(save_checkpoint(tmp_path / "one.safetensors", tiny_wavernn, step=1))
    with pytest.raises(ValueError, match="m.npy: this vocoder has no speaker"):
        single(mel, speaker=0, source="m.npy")
