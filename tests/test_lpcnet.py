"""The LPCNet-style model: its sample representation, excitation targets, step, refusals, learning."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vocoders.audio import mulaw_decode, mulaw_encode, preemphasize
from vocoders.engines import make_engine
from vocoders.lpc import predict
from vocoders.models import LPCNet
from vocoders.models.lpcnet import pcm_classes, pcm_values
from vocoders.sampling import draw_noise

from .conftest import tone


def small(**kwargs):
    torch.manual_seed(0)
    return LPCNet(hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16, **kwargs)


def test_samples_are_the_pre_emphasised_signal_and_decode_back():
    model = small()
    audio = torch.from_numpy(tone(0.1)).unsqueeze(0)
    samples = model.encode(audio)
    assert samples.dtype == torch.long and samples.min() >= 0 and samples.max() < 65536
    assert torch.allclose(pcm_values(samples), preemphasize(audio, 0.85), atol=1.0 / 32768)
    assert (model.decode(samples) - audio).abs().max() < 1e-3  # 16-bit steps, summed by the de-emphasis
    assert torch.equal(pcm_classes(pcm_values(samples)), samples)


def test_the_network_is_trained_on_the_excitation_of_the_mel_derived_filter():
    model = small()
    audio = torch.from_numpy(tone(6 * 256 / 22050)).unsqueeze(0)[:, : 6 * 256]
    mel = model.pad_mel(torch.randn(1, 80, 6) - 4)
    cond = model.upsample(model.conditioning(mel))
    assert cond.shape == (1, 6 * 256, 8 + 16)
    lpc = cond[0, :, 8:]
    assert torch.equal(lpc[:256], lpc[:1].expand(256, 16))  # one filter per frame, repeated
    assert not torch.equal(lpc[255], lpc[256])
    targets = model.encode(audio)
    _, excitation = model._inputs(cond, targets)
    signal = pcm_values(targets)
    assert torch.equal(excitation, mulaw_encode(signal - predict(signal, cond[..., 8:]), 256))


def test_a_generated_sample_is_the_prediction_plus_the_sampled_excitation():
    model = small().eval()
    mel = model.pad_mel(torch.randn(1, 80, 3) - 4)
    cond = model.upsample(model.conditioning(mel))
    state = model.initial_state(1, "cpu")
    noise = draw_noise(1, 40, 1, seed=3)
    with torch.no_grad():
        for t in range(40):
            history = state[1]
            prediction = sum(cond[:, t, 8 + k] * history[:, k] for k in range(16))
            state, sample, logits = model.step(state, cond[:, t], noise[:, t], 1.0)
            assert logits.shape == (1, 256)
            expected = pcm_classes(prediction + mulaw_decode(state[2], 256))
            assert torch.equal(sample, expected)
            assert state[1][0, 0] == pcm_values(sample)[0]


def test_with_the_frame_gain_the_excitation_is_normalised_and_loudness_follows_the_mel():
    from vocoders.lpc import lpc_from_mel

    model = small(excitation_rms=0.08).eval()
    mel = model.pad_mel(torch.randn(1, 80, 4) - 4)
    frame_cond = model.conditioning(mel)
    assert frame_cond.shape[-1] == 8 + 16 + 1 and model.scale_channel == 8 + 16
    _, gain = lpc_from_mel(mel[..., model.cond_net.context : -model.cond_net.context], model.mel_config, with_gain=True)
    assert torch.allclose(frame_cond[0, :, -1], gain[0] / 0.08)  # every frame, the upsampler's context too
    cond = model.upsample(frame_cond)
    audio = torch.from_numpy(tone(4 * 256 / 22050)).unsqueeze(0)[:, : 4 * 256] * 0.01
    targets = model.encode(audio)
    _, excitation = model._inputs(cond, targets)
    signal = pcm_values(targets)
    scale = cond[..., -1]
    assert torch.equal(excitation, mulaw_encode((signal - predict(signal, cond[..., 8:24])) / scale, 256))
    # Generation: s_t = p_t + a mu^-1(e_t), so a mel 30 dB quieter gives audio about 30 dB quieter.
    noise = draw_noise(1, 4 * 256, 1, seed=2)
    engine = make_engine("cpu", model)
    loud = model.decode(engine.generate(model.conditioning(mel), noise, 1.0))
    quiet = model.decode(engine.generate(model.conditioning(mel - 30 / 20 * math.log(10)), noise, 1.0))
    ratio_db = 20 * math.log10(float(loud.square().mean().sqrt() / quiet.square().mean().sqrt()))
    assert 24.0 < ratio_db < 36.0, ratio_db
    state = model.initial_state(1, "cpu")
    with torch.no_grad():
        for t in range(20):
            history = state[1]
            prediction = sum(cond[:, t, 8 + k] * history[:, k] for k in range(16))
            state, sample, _ = model.step(state, cond[:, t], noise[:, t], 1.0)
            assert torch.equal(sample, pcm_classes(prediction + cond[:, t, -1] * mulaw_decode(state[2], 256)))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="lpc_order"):
        small(lpc_order=0)
    with pytest.raises(ValueError, match="preemphasis"):
        small(preemphasis=1.0)
    with pytest.raises(ValueError, match="hidden_size"):
        LPCNet(hidden_size=0)
    with pytest.raises(ValueError, match="excitation_rms"):
        small(excitation_rms=-0.1)


def test_the_reference_engine_runs_it_and_temperature_zero_is_deterministic():
    model = small().eval()
    engine = make_engine("reference", model)
    cond = model.conditioning(model.pad_mel(torch.randn(2, 80, 2) - 4))
    noise = draw_noise(2, 512, 1, seed=0)
    first = engine.generate(cond, noise, 0.0)
    assert first.shape == (2, 512)
    assert torch.equal(first, engine.generate(cond, draw_noise(2, 512, 1, seed=1), 0.0))
    assert not torch.equal(engine.generate(cond, noise, 1.0), engine.generate(cond, draw_noise(2, 512, 1, seed=1), 1.0))


def test_a_few_steps_of_training_lower_the_excitation_loss():
    model = small()
    audio = torch.from_numpy(tone(4 * 256 / 22050, freq=140.0)).unsqueeze(0)[:, : 4 * 256]
    from vocoders.features import MelSpectrogram

    mel = model.pad_mel(MelSpectrogram(model.mel_config)(audio))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss, parts = model.loss(mel, audio)
        first = float(loss.detach()) if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert first == pytest.approx(math.log(256), abs=0.3)
    assert float(loss.detach()) < first - 0.5


def test_noise_injection_resynthesises_the_inputs_and_keeps_the_clean_targets():
    model = small(injected_noise=2.0)
    audio = torch.from_numpy(tone(4 * 256 / 22050)).unsqueeze(0)[:, : 4 * 256].repeat(3, 1)
    mel = model.pad_mel(torch.randn(3, 80, 4) - 4)
    cond = model.upsample(model.conditioning(mel))
    targets = model.encode(audio)
    signal_in, prediction, excitation_in, excitation = model._noisy_history(cond, targets)
    clean = pcm_values(targets)
    lpc = cond[..., 8:]
    for t in (0, 1, 100, 1023):  # each input is what the noisy synthesis before it gave
        history = torch.stack([signal_in[:, t - k] if t - k >= 0 else torch.zeros(3) for k in range(16)], dim=1)
        assert torch.equal(prediction[:, t], sum(lpc[:, t, k] * history[:, k] for k in range(16)))
        assert torch.equal(excitation[:, t], mulaw_encode(clean[:, t] - prediction[:, t], 256))
    assert not torch.equal(excitation_in[:, 1:], excitation[:, :-1])  # noise was added to what is fed
    assert (signal_in[:, 1:] - clean[:, :-1]).abs().max() < 0.2  # and the synthesis stays near the clean signal
    model.train()
    loss, _ = model.loss(mel, audio)
    loss.backward()
    assert model.embed_excitation.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "ltp, rms", [(0.0, 0.0), (0.85, 0.0), (0.85, 0.08)], ids=["short-term", "with-long-term", "long-term+gain"]
)
def test_the_compiled_re_synthesis_equals_the_pytorch_loop(ltp, rms):
    from vocoders.models.lpcnet import noisy_history_reference
    from vocoders.models.lpcnet_numba import mulaw_tables, noisy_history

    model = small(pitch_phase=8, ltp_gain=ltp, ltp_limit=0.05, excitation_rms=rms) if ltp else small()
    audio = torch.from_numpy(tone(3 * 256 / 22050)).unsqueeze(0)[:, : 3 * 256].repeat(2, 1)
    with torch.no_grad():
        cond = model.upsample(model.conditioning(model.pad_mel(torch.randn(2, 80, 3) - 4)))
    if ltp:  # voiced everywhere at a period of 100, so the long-term predictor acts
        cond[..., model.period_channel] = 100.0
        cond[..., model.period_channel + 1] = 1.0
    clean = pcm_values(model.encode(audio))
    lpc = cond[..., 8 : model.period_channel].detach()
    offsets = torch.round(torch.randn(2, clean.shape[1]) * 3).long()
    long_term = model._long_term_inputs(cond)
    if long_term is None:
        extra = (np.zeros((2, 0), np.int64), np.zeros((2, 0), np.float32), np.zeros(0, np.float32), 0.0)
    else:
        extra = (long_term[0].numpy(), long_term[1].numpy(), long_term[2].numpy(), long_term[3])
    scale = model.excitation_scale(cond)
    scale = (scale if scale is not None else torch.ones_like(clean)).contiguous()
    compiled = noisy_history(clean.numpy(), lpc.contiguous().numpy(), offsets.numpy(), *mulaw_tables(), *extra,
                             scale.numpy())  # fmt: skip
    reference = noisy_history_reference(clean, lpc, offsets, long_term, None if rms == 0 else scale)
    for fast, slow in zip(compiled, reference, strict=True):
        assert torch.equal(torch.from_numpy(fast), slow)
    if rms:  # the targets are classes of the normalised excitation
        signal_in, prediction, excitation_in, excitation = reference
        assert torch.equal(excitation, mulaw_encode((clean - prediction) / scale, 256))
    if ltp:  # and the long-term predictor changed the predictions
        without = noisy_history_reference(clean, lpc, offsets)
        assert not torch.equal(without[1], reference[1])


# ---- long-term prediction --------------------------------------------------------------------------
def _pulse_train(period: int, frames: int) -> torch.Tensor:
    """[1, frames * 256] a decaying resonance re-excited every `period` samples."""
    t = torch.arange(frames * 256, dtype=torch.float64)
    phase = torch.remainder(t, period)
    return (0.3 * torch.exp(-phase / 40.0) * torch.cos(2 * math.pi * phase / 18.0)).float().unsqueeze(0)


def test_pitch_taps_read_the_excitation_one_period_back():
    model = small(pitch_taps=3)
    mel = model.pad_mel(torch.randn(1, 80, 6) - 4)
    frame_cond = model.conditioning(mel)
    assert frame_cond.shape[-1] == 8 + 16 + 1
    lags = frame_cond[0, :, -1]
    assert torch.all((lags >= model.periods.min_lag) & (lags <= model.periods.max_lag))
    assert torch.equal(lags, lags.round())
    cond = model.upsample(frame_cond)
    past = torch.randint(0, 256, (1, cond.shape[1]))
    taps = model._taps(cond, past)
    assert taps.shape == (1, cond.shape[1], 3)
    for t in (0, 10, 300, 700, 1535):
        period = int(cond[0, t, -1])
        for j, k in enumerate((-1, 0, 1)):
            expected = past[0, t - period + k] if t - period + k >= 0 else 128
            assert int(taps[0, t, j]) == int(expected)


@pytest.mark.parametrize("phase", [0, 8])
def test_training_feeds_the_true_pitch_and_teaches_the_head(phase):
    model = small(pitch_taps=3, pitch_phase=phase)
    audio = _pulse_train(150, 8)
    mel = model.pad_mel(torch.randn(1, 80, 8) - 4)
    periods, voiced, complete = model.true_periods(audio)
    assert periods.shape == voiced.shape == complete.shape == (1, 8)
    assert (voiced & complete).sum() >= 3 and torch.all(periods[voiced & complete] == 150)
    truth = (periods, voiced)
    _, _, frame_cond = model._teacher_forced(mel, model.encode(audio), pitch=truth)
    u, channel = model.upsample_context, model.period_channel
    assert torch.equal(frame_cond[0, u : u + 8, channel], periods[0].float())
    if phase:
        assert torch.equal(frame_cond[0, u : u + 8, channel + 1], voiced[0].float())
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(20):
        loss, parts = model.loss(mel, audio)
        if step == 0:
            first = parts
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    expected = {"excitation_ce", "period_ce", "period_within_50c", "voiced"} | ({"vuv_agree"} if phase else set())
    assert set(parts) == expected
    assert first["period_ce"] > parts["period_ce"] + 1.0
    assert parts["period_within_50c"] == 1.0
    period, voiced_out = model.predicted_pitch(model.conditioning(mel)[:, u : u + 8, : model.cond_channels])
    on = (voiced & complete)[0]
    assert torch.all((1200 * torch.log2(period[0][on].float() / 150)).abs() <= 50)  # generation uses the head
    if phase:
        assert parts["vuv_agree"] == 1.0 and torch.equal(voiced_out[0][complete[0]], voiced[0][complete[0]])


def test_the_phase_input_follows_the_true_pulses_in_training_and_the_clock_in_generation():
    from vocoders.features import MelSpectrogram

    model = small(pitch_phase=8)
    audio = _pulse_train(150, 8)
    mel = model.pad_mel(MelSpectrogram(model.mel_config)(audio))
    periods, voiced, _ = model.true_periods(audio)
    frame_cond = model.conditioning(mel).detach()
    u = model.upsample_context
    frame_cond[:, u : u + 8, model.period_channel] = periods.float()
    frame_cond[:, u : u + 8, model.period_channel + 1] = voiced.float()
    cond = model.upsample(frame_cond)
    _, excitation = model._inputs(cond, model.encode(audio))
    trained = model._phases(cond, excitation)
    clock = model._phases(cond, None)
    voiced_samples = voiced.repeat_interleave(256, dim=1)
    assert torch.all(trained[~voiced_samples] == 8) and torch.all(clock[~voiced_samples] == 8)
    # In training the cycle restarts at the residual's pulses, one period apart (the first pulse is
    # found in the start's transient, where the filter has no history yet).
    starts = torch.nonzero((trained[0] == 0) & (F.pad(trained[0], (1, 0), value=8)[:-1] != 0)).flatten()
    assert len(starts) >= 10 and torch.all(starts.diff()[1:] == 150)
    # The clock of generation gives the same phases as the step recurrence.
    state = model.initial_state(1, "cpu")
    with torch.no_grad():
        for t in range(cond.shape[1]):
            before = state[4]  # the pulse clock
            state, _, _ = model.step(state, cond[:, t], torch.full((1, 1), 0.5), 1.0)
            n = 0 if int(before) >= int(cond[0, t, model.period_channel]) else int(before)
            lag = int(cond[0, t, model.period_channel])
            expected = (n if n < 4 else 4 + (n - 4) * 4 // (lag - 4)) if voiced_samples[0, t] else 8
            assert int(clock[0, t]) == expected


def test_noise_injection_trains_the_taps_and_the_period_head():
    model = small(pitch_taps=3, injected_noise=3.0).train()
    audio = _pulse_train(120, 6).repeat(2, 1)
    mel = model.pad_mel(torch.randn(2, 80, 6) - 4)
    loss, _ = model.loss(mel, audio)
    loss.backward()
    assert model.embed_taps.weight.grad.abs().sum() > 0 and model.period_head[0].weight.grad.abs().sum() > 0


def test_bad_pitch_settings_are_refused():
    with pytest.raises(ValueError, match="pitch_taps"):
        small(pitch_taps=2)
    with pytest.raises(ValueError, match="fmin"):
        small(pitch_taps=3, pitch_fmin=400.0, pitch_fmax=100.0)
    with pytest.raises(ValueError, match="pitch_phase"):
        small(pitch_phase=-1)
    with pytest.raises(ValueError, match="twice the shortest period"):
        small(pitch_phase=90)
    with pytest.raises(ValueError, match="ltp_gain"):
        small(pitch_phase=8, ltp_gain=1.0)
    with pytest.raises(ValueError, match="ltp_limit"):
        small(pitch_phase=8, ltp_gain=0.5, ltp_limit=-1.0)


def test_the_long_term_predictor_repeats_the_low_band_one_period_back():
    """Training and generation compute the same prediction, and at generation the predictor is a comb
    at the frame's period: the generated low band repeats itself one period later."""
    from vocoders.lpc import long_term_predict, long_term_step

    model = small(pitch_phase=8, ltp_gain=0.9).eval()
    assert model.ltp_taps.shape == (31,) and float(model.ltp_taps.sum()) == pytest.approx(1.0, abs=1e-6)
    residual = torch.randn(2, 600)
    period = torch.randint(44, 300, (2, 600))
    gain = torch.where(torch.rand(2, 600) > 0.3, torch.tensor(0.9), torch.tensor(0.0))
    parallel = long_term_predict(residual, period, gain, model.ltp_taps)
    bounded = long_term_predict(residual, period, gain, model.ltp_taps, limit=0.1)
    assert parallel.abs().max() > 0.09 * 1.5 and bounded.abs().max() <= 0.9 * 0.1 + 1e-7
    memory = torch.zeros(2, model.residual_memory)
    for t in range(600):
        assert torch.equal(long_term_step(memory, period[:, t], gain[:, t], model.ltp_taps), parallel[:, t])
        assert torch.equal(long_term_step(memory, period[:, t], gain[:, t], model.ltp_taps, 0.1), bounded[:, t])
        memory = torch.cat([residual[:, t : t + 1], memory[:, :-1]], dim=1)

    frames = 24
    mel = model.pad_mel(torch.randn(1, 80, frames) - 4)
    cond = model.conditioning(mel)
    cond[..., model.period_channel] = 120.0  # every frame voiced at a period of 120 samples
    cond[..., model.period_channel + 1] = 1.0
    noise = draw_noise(1, frames * 256, 1, seed=0)
    combed = pcm_values(make_engine("reference", model).generate(cond, noise, 1.0))[0]
    model.ltp_gain = 0.0
    plain = pcm_values(make_engine("reference", model).generate(cond, noise, 1.0))[0]

    def low_band_correlation(signal: torch.Tensor, lag: int) -> float:
        low = torch.nn.functional.conv1d(signal.view(1, 1, -1), model.ltp_taps.view(1, 1, -1))[0, 0, 2000:]
        return float(torch.nn.functional.cosine_similarity(low[lag:], low[:-lag], dim=0))

    assert low_band_correlation(combed, 120) > 0.5
    assert low_band_correlation(combed, 120) > low_band_correlation(plain, 120) + 0.3
    assert low_band_correlation(combed, 120) > low_band_correlation(combed, 60) + 0.3


def test_the_upper_band_repeats_the_band_above_the_cutoff_at_its_ratio():
    """With ltp_upper_hz the predictor's filter passes the band above the cutoff at ltp_upper_ratio
    (the transitions of a 31-tap filter are wide: checked in the bands' middles)."""

    def response(model: LPCNet, hz: float) -> float:
        taps = model.ltp_taps.double()
        n = torch.arange(taps.shape[0], dtype=torch.float64)
        return float(torch.abs(torch.sum(taps * torch.exp(-2j * math.pi * hz / model.sample_rate * n))))

    low = small(pitch_phase=8, ltp_gain=0.85)
    both = small(pitch_phase=8, ltp_gain=0.85, ltp_upper_hz=4000.0, ltp_upper_ratio=0.5)
    assert response(both, 0.0) == pytest.approx(1.0, abs=1e-6) and response(both, 200.0) > 0.95
    assert response(low, 2500.0) < 0.1
    assert 0.4 < response(both, 2500.0) < 0.6
    assert response(both, 7000.0) < 0.05
    assert both.kwargs["ltp_upper_hz"] == 4000.0 and both.kwargs["ltp_upper_ratio"] == 0.5
    with pytest.raises(ValueError, match="ltp_upper_hz"):
        small(pitch_phase=8, ltp_gain=0.85, ltp_upper_hz=500.0, ltp_upper_ratio=0.5)
    with pytest.raises(ValueError, match="ltp_upper_ratio"):
        small(pitch_phase=8, ltp_gain=0.85, ltp_upper_hz=2500.0, ltp_upper_ratio=1.5)


def test_voicing_is_the_unvoiced_probability_below_the_threshold_not_the_argmax():
    """The head's voiced mass spreads over many lags: a frame with P(unvoiced) = 0.4 is voiced at the
    default threshold although the unvoiced class beats every single lag."""
    model = small(pitch_phase=8).eval()
    lags = model.periods.classes
    logits = torch.zeros(1, 1, lags + 1)
    logits[..., 100] = 1.0  # the likeliest lag
    logits[..., lags] = math.log(0.4 / 0.6 * (lags - 1 + math.e))  # P(unvoiced) = 0.4
    assert logits.argmax(-1).item() == lags and logits.softmax(-1)[0, 0, lags] == pytest.approx(0.4)
    period, voiced = model._pitch_from_logits(logits)
    assert period.item() == model.periods.min_lag + 100 and voiced.item()
    model.voicing_threshold = 0.3
    assert not model._pitch_from_logits(logits)[1].item()
    with pytest.raises(ValueError, match="voicing_threshold"):
        small(pitch_phase=8, voicing_threshold=1.0)


def test_training_dither_leaves_no_digital_silence_and_only_in_training():
    """With train_dither the signal the network learns from is never exactly zero for long, and stays
    within a few 16-bit steps of the audio; validation (eval mode) and train_dither 0 see the audio as is."""
    model = small(train_dither=2.0)
    seen = []
    original = model._teacher_forced

    def recording(mel, targets, **kwargs):
        seen.append(targets)
        return original(mel, targets, **kwargs)

    model._teacher_forced = recording
    audio = torch.zeros(2, 4 * 256)
    mel = torch.full((2, 80, 4 + 2 * model.mel_context), math.log(1e-5))
    model.train()
    model.loss(mel, audio)
    model.eval()
    with torch.no_grad():
        model.loss(mel, audio)
    dithered, clean = pcm_values(seen[0]), pcm_values(seen[1])
    assert torch.all(clean == 0)
    assert (dithered != 0).float().mean() > 0.3 and dithered.abs().max() <= 4 / 32768
    model.train_dither = 0.0
    model.train()
    model.loss(mel, audio)
    assert torch.all(pcm_values(seen[2]) == 0)
    with pytest.raises(ValueError, match="train_dither"):
        small(train_dither=-1.0)


def test_noise_injection_runs_with_the_long_term_predictor():
    """The re-synthesis includes the long-term predictor, so a model with it can learn to recover."""
    model = small(pitch_phase=8, ltp_gain=0.85, ltp_limit=0.1, injected_noise=2.0).train()
    audio = _pulse_train(120, 6).repeat(2, 1)
    mel = model.pad_mel(torch.randn(2, 80, 6) - 4)
    loss, parts = model.loss(mel, audio)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and model.embed_phase.weight.grad.abs().sum() > 0
    cond = model.upsample(model.conditioning(mel)).detach()
    cond[..., model.period_channel], cond[..., model.period_channel + 1] = 120.0, 1.0
    model.ltp_gain = 0.0  # the same noise draws without the long-term predictor give other predictions
    torch.manual_seed(0)
    first = model._noisy_history(cond, model.encode(audio))[1]
    model.ltp_gain = 0.85
    torch.manual_seed(0)
    second = model._noisy_history(cond, model.encode(audio))[1]
    assert not torch.equal(first, second)
