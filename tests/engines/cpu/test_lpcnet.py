"""The LPCNet CPU engine (numba loop) held to the reference engine: samples, logits, streams, mu-law, PCM."""

import math
import random

import numpy as np
import pytest
import torch

from vocoders.audio import mulaw_encode
from vocoders.engines import ReferenceEngine, make_engine
from vocoders.engines.cpu import CpuEngine
from vocoders.engines.cpu.lpcnet import LPCNetCPUEngine, mulaw_classes, mulaw_tables, pcm_class_array
from vocoders.inference import Vocoder
from vocoders.models import LPCNet
from vocoders.models.lpcnet import pcm_classes
from vocoders.native import native_status
from vocoders.sampling import draw_noise

FRAMES = 6


def small(
    seed: int = 0, pitch_taps: int = 0, pitch_phase: int = 0, ltp_gain: float = 0.0, excitation_rms: float = 0.0
) -> LPCNet:
    """A tiny LPCNet whose logits are far from flat (O2 scaled up) and whose embeddings matter."""
    torch.manual_seed(seed)
    model = LPCNet(
        hidden_size=24,
        cond_channels=8,
        embedding=4,
        out_hidden=16,
        cond_blocks=1,
        pitch_taps=pitch_taps,
        pitch_phase=pitch_phase,
        ltp_gain=ltp_gain,
        excitation_rms=excitation_rms,
    ).eval()
    with torch.no_grad():
        model.O2.weight.mul_(8.0)
        model.gru_weight_ih.add_(0.2 * torch.randn_like(model.gru_weight_ih))
    return model


def test_mel(model: LPCNet) -> torch.Tensor:
    """The random mel around -5 [2, 80, FRAMES + 2c] of the `inputs` fixture."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, model.n_mels, FRAMES + 2 * model.mel_context, generator=generator) * 2 - 5


test_mel.__test__ = False  # a helper, not a test


def mix_voicing(model: LPCNet, mel: torch.Tensor) -> None:
    """Set the head's unvoiced bias so that each stream of `mel` has voiced and unvoiced frames."""
    u = model.upsample_context
    for bias in torch.linspace(0.0, 12.0, 241):
        with torch.no_grad():
            model.period_head[2].bias[-1] = bias
            cond = model.conditioning(mel)
        voiced = cond[:, u : cond.shape[1] - u, model.period_channel + 1] > 0.5
        if voiced.any(dim=1).all() and (~voiced).any(dim=1).all():
            return
    raise AssertionError("no unvoiced bias gives both voiced and unvoiced frames")


@pytest.fixture(
    scope="module",
    params=[(0, 0, 0.0, 0.0), (3, 0, 0.0, 0.0), (3, 8, 0.0, 0.0), (0, 8, 0.7, 0.0), (0, 8, 0.7, 0.08)],
    ids=["no-pitch", "taps", "taps+phase", "phase+ltp", "phase+ltp+gain"],
)
def model(request) -> LPCNet:
    """Without pitch, with 3 excitation taps one predicted period back, with taps and the pulse-phase
    input (8 classes, voicing from the head), with the phase and the long-term predictor, and with
    those and the excitation normalised by the frame gain."""
    taps, phase, ltp, rms = request.param
    model = small(pitch_taps=taps, pitch_phase=phase, ltp_gain=ltp, excitation_rms=rms)
    model.ltp_limit = 0.02 if ltp else 0.0  # small enough that the bound acts on these random weights' residuals
    if phase:  # a head bias that makes some frames voiced and some not
        mix_voicing(model, test_mel(model))
    return model


@pytest.fixture(scope="module")
def inputs(model):
    """(padded mel [2, 80, F + 2c], frame-rate conditioning, noise) of a random mel around -5."""
    mel = test_mel(model)
    with torch.no_grad():
        cond = model.conditioning(mel)
    return mel, cond, draw_noise(2, model.num_samples(cond), 1, seed=3)


@pytest.fixture(scope="module")
def references(model, inputs):
    """The reference engine's samples at temperatures 1, 0.7 and 0 (argmax)."""
    _, cond, noise = inputs
    torch.set_num_threads(1)  # module fixtures run before the autouse one that sets it
    reference = make_engine("reference", model)
    return {t: reference.generate(cond, noise, t) for t in (1.0, 0.7, 0.0)}


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_same_samples_as_the_reference(model, inputs, references, temperature):
    _, cond, noise = inputs
    engine = make_engine("cpu", model)
    assert isinstance(engine, LPCNetCPUEngine)
    samples = engine.generate(cond, noise, temperature)
    assert samples.dtype == torch.long and samples.shape == (2, FRAMES * model.hop_length)
    reference = references[temperature]
    assert len(reference.unique()) > 100  # a signal, not silence
    assert torch.equal(samples, reference)


def test_forced_logits_match_the_reference_and_the_parallel_pass(model, inputs, references):
    mel, cond, _ = inputs
    targets = references[1.0]
    engine = make_engine("cpu", model)
    logits = engine.forced_logits(cond, targets)
    with torch.no_grad():
        parallel = model.forward_logits(mel, targets)
    stepped = make_engine("reference", model).forced_logits(cond[:, :4], targets[:, : 2 * model.hop_length])
    assert logits.shape == parallel.shape == (2, FRAMES * model.hop_length, 256)
    assert parallel.std() > 0.5  # far from flat
    assert (logits - parallel).abs().max() <= 1e-4
    assert (logits[:, : stepped.shape[1]] - stepped).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="targets must have shape"):
        engine.forced_logits(cond, targets[:, :-1])


def chunk_sizes(frames: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < frames:
        sizes.append(min(rng.choice([1, 1, 2, 3]), frames - sum(sizes)))
    return sizes


def test_a_stream_of_chunks_equals_the_whole_utterance(model, inputs, references):
    """Each chunk's cond carries its frames plus the upsampler's context; the state carries over."""
    _, cond, noise = inputs
    engine = make_engine("cpu", model)
    u, hop = model.upsample_context, model.hop_length
    for sizes in ([1] * FRAMES, [FRAMES], chunk_sizes(FRAMES, 0)):
        stream, out, at = engine.open_stream(2, temperature=1.0), [], 0
        for size in sizes:
            out.append(stream.run(cond[:, at : at + size + 2 * u], noise[:, at * hop : (at + size) * hop]))
            at += size
        assert torch.equal(torch.cat(out, dim=1), references[1.0]), sizes


def test_vocoder_streaming_with_the_cpu_engine_equals_whole_utterances(model):
    voc = Vocoder(model, engine="auto")
    assert isinstance(voc.engine, LPCNetCPUEngine)
    frames = 11
    mel = torch.randn(80, frames, generator=torch.Generator().manual_seed(5)) - 5
    whole = voc(mel, seed=11)
    for sizes in ([1] * frames, chunk_sizes(frames, 1)):
        stream, out, at = voc.stream(seed=11), [], 0
        for size in sizes:
            stream.push(mel[..., at : at + size])
            at += size
            out.append(stream.pull())
        out.append(stream.close())
        assert torch.equal(torch.cat(out, dim=-1), whole), sizes


def test_engine_choice_and_refusals(model, tiny_wavernn):
    assert isinstance(make_engine("auto", model), LPCNetCPUEngine)
    assert isinstance(make_engine("cpu", model), LPCNetCPUEngine)
    assert isinstance(CpuEngine(model), LPCNetCPUEngine)
    if native_status()[0] is not None:  # the WaveRNN engine needs the compiled extension
        wavernn_engine = make_engine("cpu", tiny_wavernn)
        assert type(wavernn_engine) is CpuEngine
    assert "lpcnet models, not wavernn" in LPCNetCPUEngine.available(tiny_wavernn, "cpu")
    with pytest.raises(RuntimeError, match="lpcnet models, not wavernn"):
        LPCNetCPUEngine(tiny_wavernn)
    assert "CPU only" in LPCNetCPUEngine.available(model, "cuda")
    with pytest.raises(RuntimeError, match="CPU only"):
        make_engine("cpu", model, "meta")

    class OwnStep(LPCNet):
        def step(self, state, cond_t, noise_t, temperature, forced=None):
            return super().step(state, cond_t, noise_t, temperature, forced)

    torch.manual_seed(0)
    other = OwnStep(hidden_size=8, cond_channels=4, embedding=2, cond_blocks=1)
    with pytest.raises(RuntimeError, match="OwnStep overrides"):
        make_engine("cpu", other)
    assert "OwnStep overrides" in LPCNetCPUEngine.available(other, "cpu")
    assert isinstance(make_engine("auto", other), ReferenceEngine)
    with pytest.raises(ValueError, match="bfloat16"):
        LPCNetCPUEngine(model, dtype="bfloat16")


def test_bad_noise_is_refused(model, inputs):
    _, cond, noise = inputs
    engine = make_engine("cpu", model)
    with pytest.raises(ValueError, match="noise must have shape"):
        engine.generate(cond, noise[:, :-1])
    with pytest.raises(ValueError, match="streams"):
        engine.open_stream(1).run(cond, noise)


def _neighbours(values: np.ndarray, ulps: int) -> np.ndarray:
    """Every float32 within `ulps` steps of each value (both signs of zero included)."""
    values = np.asarray(values, np.float32)
    out = [values]
    up = down = values
    for _ in range(ulps):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        out += [up, down]
    return np.concatenate(out)


def test_mulaw_classes_equal_mulaw_encode():
    """On a dense grid of [-1.2, 1.2], next to every class boundary (the formula's and the bisection's),
    and at special values."""
    thresholds, _ = mulaw_tables()
    mu = 255
    k = np.arange(256) + 0.5  # the real boundary between classes k and k + 1: (c + 1) / 2 * mu = k + 0.5
    companded = 2.0 * k / mu - 1.0
    boundaries = np.sign(companded) * ((1.0 + mu) ** np.abs(companded) - 1.0) / mu
    special = np.array([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 1e-7, -1e-7, np.inf, -np.inf, np.nan, 3.0, -3.0])
    values = np.concatenate(
        [
            np.linspace(-1.2, 1.2, 1_200_001, dtype=np.float32),
            _neighbours(boundaries, 200),
            _neighbours(thresholds, 200),
            special.astype(np.float32),
            np.random.default_rng(0).uniform(-1.0, 1.0, 200_000).astype(np.float32) ** 3,
        ]
    )
    expected = mulaw_encode(torch.from_numpy(values), 256).numpy()
    assert np.array_equal(mulaw_classes(values, thresholds), expected)
    assert len(np.unique(expected)) == 256


def test_pcm_classes_equal_the_models():
    """Round half to even in float64 at every half step, clipping, NaN."""
    halves = (np.arange(-32768, 32768, 7) + 0.5) / 32768.0  # exact float32 values x * 32768 = n + 0.5
    values = np.concatenate(
        [
            halves.astype(np.float32),
            _neighbours(halves[::64], 2),
            np.random.default_rng(1).uniform(-1.1, 1.1, 100_000).astype(np.float32),
            np.array([0.0, -0.0, 1.0, -1.0, 32767.5 / 32768, math.inf, -math.inf, math.nan], np.float32),
        ]
    )
    expected = pcm_classes(torch.from_numpy(values)).numpy()
    assert np.array_equal(pcm_class_array(values), expected)


def test_auto_skips_the_lpcnet_loop_for_weights_it_does_not_offer(tiny_lpcnet):
    with pytest.raises(RuntimeError, match="no bfloat16 weights"):
        make_engine("auto", tiny_lpcnet, dtype="bfloat16")


def test_the_sampling_floor_is_the_references_and_changes_the_draws(inputs):
    """LPCNet's sampling floor: the compiled loop draws what the reference draws, and not what it
    draws without the floor."""
    _, cond, noise = inputs
    floored = small()
    floored.sampling_floor = 0.003
    reference = make_engine("reference", floored).generate(cond, noise, 1.0)
    assert torch.equal(make_engine("cpu", floored).generate(cond, noise, 1.0), reference)
    assert not torch.equal(reference, make_engine("reference", small()).generate(cond, noise, 1.0))
    with pytest.raises(ValueError, match="sampling_floor"):
        LPCNet(hidden_size=8, sampling_floor=0.01)


def test_the_voiced_temperature_is_the_references_and_sharpens_voiced_frames_only():
    """The temperature factor of voiced frames: the compiled loop draws what the reference draws; it
    changes draws in voiced frames and none in unvoiced ones."""
    model = small(pitch_phase=8)
    generator = torch.Generator().manual_seed(0)
    mel = torch.randn(2, model.n_mels, 4 * FRAMES + 2 * model.mel_context, generator=generator) * 2 - 5
    mix_voicing(model, mel)
    with torch.no_grad():
        cond = model.conditioning(mel)
    u = model.upsample_context
    frame_voiced = cond[:, u : cond.shape[1] - u, model.period_channel + 1] > 0.5
    noise = draw_noise(2, model.num_samples(cond), 1, seed=3)
    plain = make_engine("reference", model).generate(cond, noise, 1.0)
    model.voiced_temperature = 0.5
    sharp = make_engine("reference", model).generate(cond, noise, 1.0)
    assert torch.equal(make_engine("cpu", model).generate(cond, noise, 1.0), sharp)
    voiced = frame_voiced.repeat_interleave(model.hop_length, 1)
    assert voiced.any() and (~voiced).any()
    first_change = (sharp != plain).float().argmax(dim=1)
    changed = (sharp != plain).any(dim=1)
    assert changed.all()
    # Until the first changed sample every stream ran on equal state: that sample lies in a voiced frame.
    assert voiced[torch.arange(2), first_change].all()
    with pytest.raises(ValueError, match="voiced_temperature needs the voicing class"):
        LPCNet(hidden_size=8, voiced_temperature=0.5)
    with pytest.raises(ValueError, match="voiced_temperature must be"):
        LPCNet(hidden_size=8, pitch_phase=8, voiced_temperature=0.0)
