import pytest
import torch

from vocoders.models import WaveRNN


def batch(model, frames=3, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.n_mels, frames + 2 * model.mel_context, generator=g) - 5
    audio = (torch.rand(batch, frames * model.hop_length, generator=g) * 2 - 1) * 0.5
    return mel, audio


def test_shapes_and_loss(tiny_wavernn):
    mel, audio = batch(tiny_wavernn)
    targets = tiny_wavernn.encode(audio)
    logits = tiny_wavernn.forward_logits(mel, targets)
    assert logits.shape == (2, 3 * 256, 2, 256)
    loss, parts = tiny_wavernn.loss(mel, audio)
    assert loss.shape == () and set(parts) == {"coarse", "fine"}
    assert abs(float(loss.detach()) - (parts["coarse"] + parts["fine"])) < 1e-4
    assert 4.0 < parts["coarse"] < 7.0  # about ln(256) at initialisation


def test_coarse_ignores_current_coarse_fine_sees_it(tiny_wavernn):
    """Gradient test: coarse logits at t depend on nothing at or after c(t); fine logits at t see c(t)."""
    model = tiny_wavernn
    mel, audio = batch(model, frames=1, batch=1)
    targets = model.encode(audio)
    cond = model.upsample(model.conditioning(mel))
    coarse, fine = model.split(targets)
    prev = torch.nn.functional.pad(targets[:, :-1], (1, 0), value=model.silence)
    c_prev, f_prev = model.split(prev)
    inputs = torch.stack([model.scale_coarse(c_prev), model.scale_fine(f_prev), model.scale_coarse(coarse)], -1)
    inputs.requires_grad_(True)
    x = torch.cat([inputs, cond], -1)
    h0 = torch.zeros(1, 1, model.hidden_size)
    w = [model.masked_weight_ih(), model.gru_weight_hh, model.gru_bias_ih, model.gru_bias_hh]
    hidden, _ = torch._VF.gru(x, h0, w, True, 1, 0.0, False, False, True)
    t = 100
    coarse_logit = model.O2(torch.relu(model.O1(hidden[0, t, : model.half]))).sum()
    (grad,) = torch.autograd.grad(coarse_logit, inputs, retain_graph=True)
    assert grad[0, t:, 2].abs().max() == 0  # c(t) and later coarse inputs
    assert grad[0, t + 1 :, :].abs().max() == 0  # nothing from the future at all
    assert grad[0, t, :2].abs().max() > 0 and grad[0, t - 1, 2].abs() > 0
    fine_logit = model.O4(torch.relu(model.O3(hidden[0, t, model.half :]))).sum()
    (grad,) = torch.autograd.grad(fine_logit, inputs)
    assert grad[0, t, 2].abs() > 0  # the fine half sees c(t)
    assert grad[0, t + 1 :, :].abs().max() == 0


def test_perturbing_current_coarse_changes_only_fine_logits(tiny_wavernn):
    model = tiny_wavernn
    mel, audio = batch(model, frames=1, batch=1)
    targets = model.encode(audio)
    t = 50
    changed = targets.clone()
    changed[0, t] = (changed[0, t] + 77 * 256) % 65536  # change c(t), keep f(t)
    with torch.no_grad():
        a = model.forward_logits(mel, targets)
        b = model.forward_logits(mel, changed)
    assert torch.equal(a[0, : t + 1, 0], b[0, : t + 1, 0])  # coarse up to and including t
    assert not torch.equal(a[0, t, 1], b[0, t, 1])  # fine at t sees c(t)
    assert torch.equal(a[0, :t, 1], b[0, :t, 1])


def test_teacher_forced_equals_step_by_step(tiny_wavernn):
    model = tiny_wavernn
    mel, audio = batch(model, frames=2, batch=2)
    targets = model.encode(audio)
    with torch.no_grad():
        parallel = model.forward_logits(mel, targets)
        cond = model.upsample(model.conditioning(mel))
        state = model.initial_state(2, "cpu")
        steps = []
        for t in range(targets.shape[1]):
            state, sample, logits = model.step(state, cond[:, t], torch.zeros(2, 2), 1.0, forced=targets[:, t])
            assert torch.equal(sample, targets[:, t])
            steps.append(logits)
    assert (torch.stack(steps, 1) - parallel).abs().max() <= 1e-5


def test_other_bit_depths():
    model = WaveRNN(hidden_size=16, cond_channels=4, cond_blocks=0, bits=10).eval()
    audio = torch.linspace(-1, 0.99, 512).unsqueeze(0)
    targets = model.encode(audio)
    assert targets.max() < 1024
    assert (model.decode(targets) - audio).abs().max() <= 1 / 512 + 1e-6
    mel = torch.randn(1, 80, 2 + 2 * model.mel_context) - 5
    assert model.forward_logits(mel, targets).shape == (1, 512, 2, 32)


def test_bad_sizes_refused():
    with pytest.raises(ValueError, match="even"):
        WaveRNN(hidden_size=33)
    with pytest.raises(ValueError, match="bits"):
        WaveRNN(bits=17)


def test_learns_a_segment():
    """A few Adam steps on one batch lower the loss: gradients reach every part of the model."""
    torch.manual_seed(0)
    model = WaveRNN(hidden_size=32, cond_channels=8, cond_blocks=1)
    mel, audio = batch(model, frames=2, batch=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, _ = model.loss(mel, audio)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first - 0.5


@pytest.mark.parametrize("bits, fine_bits", [(8, None), (10, None), (10, 2)])
def test_mulaw_encoding_round_trip_and_class_split(bits, fine_bits):
    model = WaveRNN(
        hidden_size=16,
        cond_channels=4,
        cond_blocks=1,
        bits=bits,
        fine_bits=fine_bits,
        encoding="mulaw",
        preemphasis=0.86,
    )
    assert model.coarse_classes * model.fine_classes == 1 << bits
    assert model.fine_classes == 1 << (fine_bits or bits // 2)
    t = torch.arange(8192, dtype=torch.float32)
    audio = (0.4 * torch.sin(t / 9.0) * torch.sin(t / 1500.0)).unsqueeze(0)
    classes = model.encode(audio)
    assert classes.dtype == torch.int64 and classes.min() >= 0 and classes.max() < 1 << bits
    coarse, fine = model.split(classes)
    assert coarse.max() < model.coarse_classes and fine.max() < model.fine_classes
    assert torch.equal((coarse << model.fine_bits) | fine, classes)
    # mu-law error is relative to the amplitude, and de-emphasis keeps it low-pass: the error stays small
    error = (model.decode(classes) - audio).abs().max()
    assert error < {8: 0.05, 10: 0.012}[bits]
    assert model.kwargs["encoding"] == "mulaw" and model.kwargs["preemphasis"] == 0.86


def test_bad_encoding_refused():
    with pytest.raises(ValueError, match="encoding"):
        WaveRNN(hidden_size=16, encoding="alaw")
    with pytest.raises(ValueError, match="preemphasis"):
        WaveRNN(hidden_size=16, preemphasis=1.0)
    with pytest.raises(ValueError, match="fine_bits"):
        WaveRNN(hidden_size=16, bits=10, fine_bits=0)


def test_uneven_linear_split_keeps_the_pcm_value():
    """Linear 16 bits split 12 + 4 encodes the same PCM values as the byte split; only the softmaxes differ."""
    even, uneven = WaveRNN(hidden_size=16), WaveRNN(hidden_size=16, fine_bits=4)
    audio = torch.linspace(-0.9, 0.9, 1001).unsqueeze(0)
    assert torch.equal(even.encode(audio), uneven.encode(audio))
    assert torch.equal(uneven.decode(uneven.encode(audio)), even.decode(even.encode(audio)))
    coarse, fine = uneven.split(uneven.encode(audio))
    assert coarse.max() < 4096 and fine.max() < 16
