"""Fold batching: segments cut and joined on the sample, cross-faded on decoded audio, for every model."""

import pytest
import torch

import vocoders
from vocoders.engines import FoldConfig, FoldEngine, make_engine
from vocoders.engines.fold import fade_in, fold_signal, segment_starts, unfold_signal
from vocoders.sampling import draw_noise


def test_fade_weights_sum_to_one():
    for n in (1, 2, 7, 256):
        w = fade_in(n)
        assert w.shape == (n,) and (w > 0).all() and (w < 1).all() and (w.diff() > 0).all()
        assert torch.allclose(w + w.flip(0), torch.ones(n), atol=1e-7)


@pytest.mark.parametrize(
    "frames,segment,overlap", [(10, 4, 1), (11, 4, 2), (9, 3, 0), (12, 8, 4), (3, 4, 1), (4, 4, 1)]
)
def test_segments_cover_the_utterance(frames, segment, overlap):
    starts = segment_starts(frames, segment, overlap)
    if frames <= segment:
        assert starts == [0]
        return
    assert starts[0] == 0 and starts[-1] + segment == frames
    steps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0 < s <= segment - overlap for s in steps) and all(s == segment - overlap for s in steps[:-1])


def regions(starts, segment, overlap, hop):
    """Sample ranges [a, b) that are cross-faded, from the rule in `unfold_signal`."""
    return [((a + segment - overlap) * hop, (a + segment) * hop) for a in starts[:-1]]


@pytest.mark.parametrize("frames,segment,overlap,hop", [(10, 4, 1, 8), (11, 4, 2, 5), (9, 3, 0, 4), (13, 6, 3, 1)])
def test_fold_then_unfold_reconstructs_a_known_signal(frames, segment, overlap, hop):
    total = frames * hop
    signal = torch.linspace(-1, 1, total).unsqueeze(0) + 0.01 * torch.randn(1, total)  # a ramp shows misalignment
    starts = segment_starts(frames, segment, overlap)
    samples = [a * hop for a in starts]
    pieces = fold_signal(signal, samples, segment * hop)
    assert pieces.shape == (1, len(starts), segment * hop)
    joined = unfold_signal(pieces, samples, overlap * hop, total)
    faded = torch.zeros(total, dtype=torch.bool)
    for a, b in regions(starts, segment, overlap, hop):
        faded[a:b] = True
    assert torch.equal(joined[0, ~faded], signal[0, ~faded])  # exact outside the overlaps
    assert torch.allclose(joined[0, faded], signal[0, faded], atol=1e-6, rtol=0)  # unit gain inside

    # Different content per segment: each overlap must be exactly (1 - w) * earlier + w * later.
    constant = torch.arange(1.0, len(starts) + 1).view(1, -1, 1).expand_as(pieces).contiguous()
    mixed = unfold_signal(constant, samples, overlap * hop, total)[0]
    w = fade_in(overlap * hop) if overlap else torch.zeros(0)
    for j, (a, b) in enumerate(regions(starts, segment, overlap, hop)):
        assert torch.allclose(mixed[a:b], (1 - w) * (j + 1) + w * (j + 2), atol=1e-6)
        if not faded[a - 1]:  # the fade starts and ends on the sample
            assert mixed[a - 1] == j + 1
        if b < total and not faded[b]:
            assert mixed[b] == j + 2


def make_model(name):
    torch.manual_seed(0)
    if name == "wavernn":
        from vocoders.models import WaveRNN

        return WaveRNN(hidden_size=32, cond_channels=8, cond_blocks=1, out_hidden=24).eval()
    if name == "subscale_wavernn":
        from vocoders.models import SubscaleWaveRNN

        return SubscaleWaveRNN(
            subscale=4, horizon=2, context_channels=4, hidden_size=32, cond_channels=8, cond_blocks=1, out_hidden=24
        ).eval()
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["wavernn", "subscale_wavernn"])
def test_fold_engine_is_the_segments_generated_alone_then_cross_faded(name):
    """Each segment gets the utterance's conditioning and noise at its own samples; the join is on audio."""
    model = make_model(name)
    frames, segment, overlap, hop = 5, 2, 1, model.hop_length
    with torch.no_grad():
        cond = model.conditioning(torch.randn(1, 80, frames + 2 * model.mel_context) - 5)
    noise = draw_noise(1, frames * hop, model.noise_per_step, seed=0)
    engine = make_engine("reference", model)
    audio = FoldEngine(engine, (segment, overlap)).synthesize(cond, noise)
    assert audio.shape == (1, frames * hop) and audio.dtype == torch.float32

    u = model.upsample_context
    starts = segment_starts(frames, segment, overlap)
    alone = torch.stack(
        [
            engine.synthesize(cond[:, a : a + segment + 2 * u], noise[:, a * hop : (a + segment) * hop])[0]
            for a in starts
        ]
    ).unsqueeze(0)
    expected = unfold_signal(alone, [a * hop for a in starts], overlap * hop, frames * hop)
    assert torch.allclose(audio, expected, atol=1e-6)
    assert torch.equal(audio[0, : (segment - overlap) * hop], alone[0, 0, : (segment - overlap) * hop])
    whole = FoldEngine(engine, (frames, 1)).synthesize(cond, noise)  # one segment: plain generation
    assert torch.equal(whole, engine.synthesize(cond, noise))


def test_vocoder_and_cli_fold_option(tiny_checkpoint, tmp_path):
    import numpy as np

    from vocoders.synthesize import main

    plain = vocoders.load(tiny_checkpoint)
    folded = vocoders.load(tiny_checkpoint, fold=(2, 1))
    assert folded.fold == FoldConfig(2, 1) and plain.fold is None
    mel = torch.zeros(80, 6) - 4
    a, b = plain(mel, seed=0), folded(mel, seed=0)
    assert a.shape == b.shape == (6 * 256,)
    assert torch.equal(a[:256], b[:256]) and not torch.equal(a, b)  # same start, cold-started segments later
    assert torch.equal(b, folded(mel, seed=0))
    batch = folded(torch.stack([mel, mel - 1]), seed=0)
    assert batch.shape == (2, 6 * 256)

    np.save(tmp_path / "m.npy", mel.numpy())
    assert main([str(tiny_checkpoint), str(tmp_path / "m.npy"), "-o", str(tmp_path / "out"), "--fold", "3", "1"]) == 0
    assert (tmp_path / "out" / "m.wav").is_file()
    assert main([str(tiny_checkpoint), str(tmp_path / "m.npy"), "-o", str(tmp_path / "bad"), "--fold", "3", "2"]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("bad", [(0, 0), (4, 3), (4, -1)])
def test_bad_fold_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="fold"):
        FoldConfig(*bad)
