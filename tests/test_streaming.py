"""Streaming synthesis: chunked audio equals whole-utterance audio, look-ahead, bad chunks, refusals."""

import random

import pytest
import torch

from vocoders.engines import StreamingError
from vocoders.errors import MelError
from vocoders.features import MelConfig
from vocoders.inference import Vocoder
from vocoders.models import LPCNet, SubscaleWaveRNN, WaveNet, WaveRNN
from vocoders.models.subscale_context import subscale_order
from vocoders.native import load_native
from vocoders.sampling import NOISE_BLOCK, NoiseSource, draw_noise

from .engines.cpu.test_sparse import sparse_model

needs_native = pytest.mark.skipif(load_native() is None, reason="the compiled extension vocoders._native is not built")


def wavernn(**kwargs):
    torch.manual_seed(0)
    return WaveRNN(hidden_size=32, cond_channels=8, cond_blocks=1, out_hidden=24, **kwargs).eval()


def wavenet():
    torch.manual_seed(0)
    return WaveNet(
        layers=6, cycles=2, residual_channels=8, gate_channels=12, skip_channels=8, head_channels=16,
        cond_channels=8, cond_blocks=1,
    ).eval()  # fmt: skip


def lpcnet():
    torch.manual_seed(0)
    return LPCNet(hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16).eval()


def lpcnet_pitch():
    """With the head that reads the mel too, and a long-term predictor: per-frame pitch from the mel."""
    torch.manual_seed(0)
    model = LPCNet(hidden_size=24, cond_channels=8, cond_blocks=1, embedding=4, out_hidden=16, pitch_phase=4,
                   ltp_gain=0.5, period_input="features+mel")  # fmt: skip
    with torch.no_grad():  # voiced and unvoiced frames both, and lags that change with the mel
        model.period_input_scale.fill_(0.5)
        model.period_head[2].bias[-1] += 8.0
    return model.eval()


def subscale(subscale=16, horizon=2, mel=None):
    torch.manual_seed(0)
    sizes = dict(context_channels=4, hidden_size=16, cond_channels=8, cond_blocks=1, out_hidden=24)
    return SubscaleWaveRNN(mel=mel, subscale=subscale, horizon=horizon, **sizes).eval()


CASES = {
    "wavernn-reference": (lambda: wavernn(), "reference"),
    "wavernn-cpu": (lambda: wavernn(), "cpu"),
    "wavernn-mulaw-preemphasis-cpu": (lambda: wavernn(bits=10, encoding="mulaw", preemphasis=0.86), "cpu"),
    "sparse-wavernn-sparse-cpu": (lambda: sparse_model(hidden=64, out_hidden=48, sparsity=0.9), "sparse-cpu"),
    "wavenet-reference": (wavenet, "reference"),
    "wavenet-cpu": (wavenet, "cpu"),
    "lpcnet-reference": (lpcnet, "reference"),
    "lpcnet-cpu": (lpcnet, "cpu"),
    "lpcnet-pitch-mel-reference": (lpcnet_pitch, "reference"),
    "lpcnet-pitch-mel-cpu": (lpcnet_pitch, "cpu"),
    "subscale-reference": (subscale, "reference"),
    "subscale-cpu": (subscale, "cpu"),
}
# Frames per utterance: the reference loop is slow (Subscale WaveRNN's most: 16 samples a step, in Python).
FRAMES = {"reference": 9, "subscale-reference": 4}
HOP_100 = MelConfig.preset("hifigan", hop_length=100, win_length=400, n_fft=512).to_dict()


def random_chunks(frames: int, seed: int, largest: int = 6) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < frames:
        sizes.append(min(rng.choice([1, 1, 2, 3, largest]), frames - sum(sizes)))
    return sizes


def streamed(voc, mel, sizes, seed, batch=1, **options):
    stream = voc.stream(batch=batch, seed=seed, **options)
    out, at = [], 0
    for size in sizes:
        stream.push(mel[..., at : at + size])
        at += size
        out.append(stream.pull())
    out.append(stream.close())
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_audio_equals_whole_utterance_for_any_chunking(case):
    build, engine = CASES[case]
    if engine != "reference" and not case.startswith("lpcnet") and load_native() is None:
        pytest.skip("the compiled extension vocoders._native is not built")
    voc = Vocoder(build(), engine=engine)
    frames = FRAMES.get(case, FRAMES.get(engine, 23))
    mel = torch.randn(80, frames) - 5
    whole = voc(mel, seed=11)
    for sizes in ([1] * frames, [frames], random_chunks(frames, 0), random_chunks(frames, 1)):
        audio = streamed(voc, mel, sizes, seed=11)
        assert audio.shape == whole.shape == (frames * voc.hop_length,)
        assert torch.equal(audio, whole), sizes


@pytest.mark.parametrize(
    "case, frames",
    [
        ("wavernn-cpu", 12),
        ("sparse-wavernn-sparse-cpu", 12),
        ("wavenet-cpu", 12),
        ("subscale-cpu", 12),
        ("subscale-reference", 3),
    ],
)
def test_a_batch_of_streams_equals_the_batch_generated_whole(case, frames):
    build, engine = CASES[case]
    if engine != "reference" and load_native() is None:
        pytest.skip("the compiled extension vocoders._native is not built")
    voc = Vocoder(build(), engine=engine)
    mel = torch.randn(2, 80, frames) - 5
    whole = voc(mel, seed=5)
    audio = streamed(voc, mel, random_chunks(frames, 2, largest=max(2, frames // 2)), seed=5, batch=2)
    assert audio.shape == (2, frames * voc.hop_length)
    assert torch.equal(audio, whole)


@pytest.mark.parametrize("case", ["wavernn-cpu", "lpcnet-cpu", "subscale-cpu", "wavenet-reference"])
def test_a_projecting_stream_equals_the_projected_whole_utterance(case):
    """A vocoder with a mel projection streams projected audio (vocoders.mel_projection.MelProjector),
    equal to its whole-utterance output, for any chunking; a Subscale stream feeds it part frames."""
    build, engine = CASES[case]
    if engine != "reference" and not case.startswith("lpcnet") and load_native() is None:
        pytest.skip("the compiled extension vocoders._native is not built")
    voc = Vocoder(build(), engine=engine, mel_projection=3)
    frames = 30 if engine != "reference" else 16
    mel = torch.randn(2, 80, frames) - 5
    whole = voc(mel, seed=4)
    assert not torch.equal(whole, voc(mel, seed=4, mel_projection=0))
    for sizes in ([1] * frames, random_chunks(frames, 3)):
        assert torch.equal(streamed(voc, mel, sizes, seed=4, batch=2), whole), sizes
    raw = streamed(voc, mel, random_chunks(frames, 4), seed=4, batch=2, mel_projection=0)
    assert torch.equal(raw, voc(mel, seed=4, mel_projection=0))


def test_a_projecting_stream_holds_back_the_projection_s_lag_too():
    from vocoders.mel_projection import projection_lag_samples

    voc = Vocoder(wavernn(), engine="reference", mel_projection=2)
    lag = projection_lag_samples(voc.mel_config, 2)  # 2 * 768 samples of STFT overlap, rounded to frames
    assert lag == 1664
    assert voc.lookahead_frames == voc.model.mel_context + 7 == 10  # ceil(1664 / 256) = 7 frames more
    assert voc.stream().lookahead_frames == 10 and voc.stream(mel_projection=0).lookahead_frames == 3
    # block_frames=1: the projection computes each frame as soon as it can
    stream, batched = voc.stream(seed=0, block_frames=1), voc.stream(seed=0)
    for pushed in range(1, 16):
        mel = torch.randn(80, 1) - 5
        stream.push(mel)
        batched.push(mel)
        assert stream.frames_out == max(0, pushed - 3)  # the network runs its own look-ahead behind
        assert stream.available == max(0, stream.frames_out * voc.hop_length - lag)  # the projection its lag
        assert stream.available >= max(0, pushed - stream.lookahead_frames) * voc.hop_length
        # the default block_frames=4: the first iteration waits for 4 new frames, up to 3 frames later
        assert stream.available - 3 * voc.hop_length <= batched.available <= stream.available
    assert stream.close().shape == batched.close().shape == (15 * voc.hop_length,)


def test_a_stream_holds_back_exactly_its_lookahead():
    voc = Vocoder(wavernn(), engine="reference")
    lookahead = voc.lookahead_frames
    assert lookahead == voc.model.mel_context == 3  # conditioning kernel 5 (2) + upsampler taps 3 (1)
    stream = voc.stream(seed=0)
    for pushed in range(1, 7):
        stream.push(torch.randn(80, 1) - 5)
        assert stream.frames_out == max(0, pushed - lookahead)
        assert stream.available == stream.frames_out * voc.hop_length  # nothing pulled yet
    assert stream.close().shape == (6 * voc.hop_length,)


def test_bad_chunks_are_refused_and_the_stream_stays_usable():
    voc = Vocoder(wavernn(), engine="reference")
    mel = torch.randn(80, 6) - 5
    whole = voc(mel, seed=2)
    stream = voc.stream(seed=2)
    stream.push(mel[:, :3])
    bad = [
        (torch.randn(81, 2) - 5, "bands"),
        (torch.randn(2, 80) - 5, "transposed"),
        (torch.full((80, 2), float("nan")), "NaN"),
        (torch.randn(2, 80, 2) - 5, "batch of 2"),
    ]
    for chunk, message in bad:
        with pytest.raises(MelError, match=message):
            stream.push(chunk)
    stream.push(mel[:, 3:])
    assert torch.equal(torch.cat([stream.pull(), stream.close()]), whole)
    with pytest.raises(RuntimeError, match="closed"):
        stream.push(mel)


def test_context_manager_flushes_and_empty_stream_gives_nothing():
    voc = Vocoder(wavernn(), engine="reference")
    mel = torch.randn(80, 4) - 5
    with voc.stream(seed=1) as stream:
        stream.push(mel)
    assert stream.closed and stream.pull().shape == (4 * voc.hop_length,)
    assert voc.stream().close().shape == (0,)


@pytest.mark.parametrize("engine", ["reference", "cpu"])
def test_a_subscale_stream_holds_back_exactly_its_lag(engine):
    """Each push runs the staggered order as far as the conditioning that has arrived allows and emits
    every sample up to the first one not yet made. hop 100 is not a multiple of B = 8: the look-ahead
    rounds the lag (B - 1)(B (F + 1) - 1) = 497 samples up to 5 frames, not B (B - 1)(F + 1) = 504 to 6."""
    if engine == "cpu" and load_native() is None:
        pytest.skip("the compiled extension vocoders._native is not built")
    B, F, frames = 8, 8, 10
    voc = Vocoder(subscale(B, F, mel=HOP_100), engine=engine)
    hop, context = voc.hop_length, voc.model.mel_context
    assert voc.model.stream_lag == 497 and voc.lookahead_frames == context + 5
    mel = torch.randn(80, frames) - 5
    order = subscale_order(frames * hop, B, F)  # the whole utterance's steps; a stream runs the same ones
    stream = voc.stream(seed=4)
    for pushed in range(1, frames + 1):
        stream.push(mel[:, pushed - 1 : pushed])
        known = max(0, pushed - context) * hop  # samples whose conditioning has arrived
        # The stream runs every step that makes no sample past them, and no other; then each sample
        # before the first one no step has made yet is out.
        runnable = next((t for t, row in enumerate(order) if row.max() >= known), len(order))
        made = torch.zeros(frames * hop, dtype=torch.bool)
        made[order[:runnable][order[:runnable] >= 0]] = True
        expected = int(made.logical_not().nonzero()[0]) if not made.all() else frames * hop
        assert stream.samples_out == stream.available == expected, pushed
        assert stream.frames_out == max(0, pushed - voc.lookahead_frames), pushed
    audio = torch.cat([stream.pull(), stream.close()])
    assert torch.equal(audio, voc(mel, seed=4))


@needs_native
def test_a_subscale_stream_that_has_returned_every_sample_before_the_end():
    """B = 2, F = 0 and an odd length (hop 101): after the last chunk every sample is out, and the one
    step left at the end runs sub-tensor 1 past the end, on the last sample's conditioning."""
    mel_config = MelConfig.preset("hifigan", hop_length=101, win_length=400, n_fft=512).to_dict()
    voc = Vocoder(subscale(2, 0, mel=mel_config), engine="cpu")
    mel = torch.randn(2, 80, 3) - 5
    assert torch.equal(streamed(voc, mel, [1, 1, 1], seed=3, batch=2), voc(mel, seed=3))


def test_engines_that_cannot_stream_say_so():
    from vocoders.engines import Engine, EngineStream
    from vocoders.engines.cuda import CudaEngine

    model = subscale(subscale=4, horizon=2)
    assert model.lookahead_frames == model.mel_context + 1  # stagger 3 x (4 x 3 - 1) = 33 samples < 1 hop
    paper = SubscaleWaveRNN(subscale=16, horizon=64, hidden_size=16, cond_channels=8, cond_blocks=1)
    assert paper.lookahead_frames == paper.mel_context + 61  # 15 x (16 x 65 - 1) = 15,585 samples, 60.9 hops
    # The CUDA engine (here on CPU tensors) streams Subscale WaveRNN too (tests/engines/cuda/test_subscale.py).
    assert isinstance(CudaEngine(model, "cpu").open_stream(1), EngineStream)

    class NoStream(Engine):  # an engine that does not override `open_stream`
        name = "no-stream"

        def generate(self, cond, noise, temperature=1.0):
            raise NotImplementedError

        def forced_logits(self, cond, targets):
            raise NotImplementedError

    with pytest.raises(StreamingError, match="'no-stream' does not stream subscale_wavernn"):
        NoStream(model).open_stream(1)


def test_noise_is_the_same_whatever_the_chunking():
    whole = draw_noise(2, 3 * NOISE_BLOCK + 17, 2, seed=9)
    assert torch.equal(
        draw_noise(2, 100, 2, seed=9, start=NOISE_BLOCK - 50), whole[:, NOISE_BLOCK - 50 : NOISE_BLOCK + 50]
    )
    source = NoiseSource(2, 2, seed=9)
    parts = [source.take(n) for n in (1, 300, NOISE_BLOCK, 5, 2 * NOISE_BLOCK - 289)]
    assert torch.equal(torch.cat(parts, dim=1), whole)
    assert not torch.equal(draw_noise(2, 64, 2, seed=10), whole[:, :64])


@pytest.mark.parametrize("case", ["wavernn-cpu", "lpcnet-cpu", "subscale-cpu"])
def test_iterating_a_buffered_chunk_yields_it_block_by_block_and_equals_whole(case):
    """push(generate=False) then iteration: blocks of at most block_frames frames, each yielded as it is
    made, the first before the rest of the chunk is generated; the audio equals whole-utterance audio."""
    build, engine = CASES[case]
    if case != "lpcnet-cpu" and load_native() is None:
        pytest.skip("the compiled extension vocoders._native is not built")
    voc = Vocoder(build(), engine=engine)
    frames, hop = 20, voc.hop_length
    mel = torch.randn(80, frames) - 5
    whole = voc(mel, seed=4)
    stream = voc.stream(seed=4, block_frames=3)
    out = []
    for at, size in ((0, 2), (2, 13), (15, 5)):
        stream.push(mel[:, at : at + size], generate=False)
        assert stream.available == 0
        ready = stream.pending_frames
        if case != "subscale-cpu":  # (Subscale's look-ahead adds its horizon to the mel context)
            assert ready == max(0, at + size - voc.lookahead_frames) - stream.frames_out
        for block in stream:
            assert block.shape[0] <= 3 * hop + (hop if case == "subscale-cpu" else 0)
            out.append(block)
            if len(out) == 1 and ready > 3:  # the first block came before the chunk's other frames
                assert stream.pending_frames == ready - 3
        assert stream.pending_frames == 0
    out.append(stream.close())
    assert torch.equal(torch.cat(out), whole)
    assert sum(b.shape[0] > 0 for b in out[:-1]) >= 5
    with pytest.raises(ValueError, match="block_frames"):
        voc.stream(block_frames=0)
