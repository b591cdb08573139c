"""Pruning during training: the schedule, block masks, exact zeros through Adam, masks in checkpoints, resume."""

import pytest
import torch
from hydra import compose, initialize_config_module

from vocoders.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from vocoders.sparsity import Pruner, PruningSchedule, block_scores, parse_block, prune_blocks
from vocoders.training import Trainer


def test_schedule_is_the_papers_cubic():
    s = PruningSchedule(final=0.95, start=1000, duration=200_000, every=500)
    assert s.sparsity(0) == 0.0 and s.sparsity(999) == 0.0 and s.sparsity(1000) == 0.0
    assert s.sparsity(101_000) == pytest.approx(0.95 * (1 - 0.5**3))
    assert s.sparsity(201_000) == pytest.approx(0.95) and s.sparsity(500_000) == pytest.approx(0.95)
    values = [s.sparsity(t) for t in range(1000, 201_001, 500)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))  # non-decreasing
    assert s.prunes_at(1500) and not s.prunes_at(1501) and not s.prunes_at(500)
    with pytest.raises(ValueError):
        PruningSchedule(final=1.0)


def test_parse_block():
    assert parse_block("16x1") == (16, 1) and parse_block([4, 4]) == (4, 4) and parse_block((1, 1)) == (1, 1)
    for bad in ("16", "ax1", [0, 1], "4x4x4"):
        with pytest.raises(ValueError, match="block"):
            parse_block(bad)


@pytest.mark.parametrize("block", [(16, 1), (4, 4), (1, 1)])
def test_block_masks_prune_the_smallest_blocks(block):
    torch.manual_seed(0)
    weight = torch.randn(64, 40)
    mask = prune_blocks(weight, 0.75, block)
    rows, cols = block
    tiles = mask.reshape(64 // rows, rows, 40 // cols, cols)
    assert torch.equal(tiles.all(dim=(1, 3)), tiles.any(dim=(1, 3)))  # constant over every block
    kept = tiles.any(dim=(1, 3))
    n_blocks = kept.numel()
    assert int((~kept).sum()) == int(0.75 * n_blocks)
    scores = block_scores(weight, block)
    assert scores[~kept].max() <= scores[kept].min()  # every pruned block scores below every kept one
    # Masks only shrink: a block pruned before stays pruned even if its weights grew back.
    regrown = weight.clone()
    regrown[~mask] = 100.0
    later = prune_blocks(regrown, 0.8, block, keep=mask)
    assert not (later & ~mask).any() and int((~later).sum()) >= int((~mask).sum())


def test_edge_blocks_that_overhang():
    weight = torch.randn(20, 3)  # 20 rows: one full 16x1 block and one of 4 rows per column
    mask = prune_blocks(weight, 0.5, (16, 1))
    assert mask.shape == (20, 3)
    assert int((~block_scores(mask.float(), (16, 1)).bool()).sum()) == 3  # 3 of 6 blocks pruned


def test_each_gate_is_pruned_on_its_own(tiny_wavernn):
    model = tiny_wavernn
    with torch.no_grad():
        model.gru_weight_hh[:32] *= 100.0  # gate r dwarfs the others: global ranking would spare it
    pruner = Pruner(model, PruningSchedule(final=0.5, start=0, duration=1, every=1), block="16x1")
    pruner.prune(0.5)
    density = pruner.density()
    assert set(density) == {"gru_hh.r", "gru_hh.u", "gru_hh.e", "gru_ih.r", "gru_ih.u", "gru_ih.e"}
    assert all(v == pytest.approx(0.5, abs=0.02) for v in density.values())
    with pytest.raises(ValueError, match="unknown pruning targets"):
        Pruner(model, PruningSchedule(), targets=["gru_hh", "nope"])


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_pruned_weights_and_adam_moments_stay_exactly_zero(tiny_wavernn, optimizer):
    model = tiny_wavernn.train()
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    opt = make(model.parameters(), lr=1e-2, weight_decay=0.1)
    pruner = Pruner(
        model, PruningSchedule(final=0.8, start=2, duration=4, every=2), "4x4", targets=["gru_hh", "gru_ih", "O1"]
    )
    mel = torch.randn(2, 80, 2 + 2 * model.mel_context) - 5
    audio = torch.rand(2, 512) * 2 - 1
    before = {n: p.detach().clone() for n, p in pruner.params.items()}
    for step in range(1, 9):
        loss, _ = model.loss(mel, audio)
        opt.zero_grad()
        loss.backward()
        for name, p in pruner.params.items():  # gradients of pruned weights never reach Adam
            assert (p.grad[~pruner.masks[name]] == 0).all()
        opt.step()
        pruner.after_step(step, opt)
        for name, p in pruner.params.items():
            pruned = ~pruner.masks[name]
            assert (p[pruned] == 0).all()
            for value in opt.state[p].values():
                if value.shape == p.shape:
                    assert (value[pruned] == 0).all()
    assert pruner.current == pytest.approx(0.8)
    for name, p in pruner.params.items():
        kept = pruner.masks[name]
        assert not torch.equal(p[kept], before[name][kept])  # the surviving weights still train
    assert all(v == pytest.approx(0.2, abs=0.05) for v in pruner.density().values())


def test_masks_travel_in_the_checkpoint_and_zero_ema_weights(tmp_path, tiny_wavernn):
    model = tiny_wavernn
    pruner = Pruner(model, PruningSchedule(final=0.9, start=0, duration=1, every=1))
    pruner.prune(0.9)
    pruner.apply()
    ema = {k: v + 0.01 for k, v in model.state_dict().items()}  # an average that drifted off zero
    extras = {"mask": pruner.state_masks(), "ema": ema}
    path = save_checkpoint(tmp_path / "s.safetensors", model, 3, extras=extras, sparsity=pruner.describe())
    ckpt = read_checkpoint(path)
    assert set(ckpt.extras["mask"]) == {"gru_weight_hh", "gru_weight_ih"}
    loaded = model_from_checkpoint(ckpt)
    assert loaded.sparsity["block"] == [16, 1] and loaded.sparsity["current"] == pytest.approx(0.9)
    for name, mask in ckpt.extras["mask"].items():
        weight = loaded.state_dict()[name]
        assert (weight[~mask] == 0).all() and (weight[mask] != 0).all()
    dense = save_checkpoint(tmp_path / "d.safetensors", model, 1)
    assert model_from_checkpoint(read_checkpoint(dense)).sparsity is None


def sparse_cfg(tmp_path, *overrides):
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                "debug=tiny",
                "sparsity=block16x1",
                f"run_dir={tmp_path / 'run'}",
                f"data.cache_dir={tmp_path / 'cache'}",
                "sparsity.start_step=2",
                "sparsity.duration=6",
                "sparsity.prune_every=3",
                "sparsity.final_sparsity=0.75",
                "trainer.checkpoint_every=1",
                "trainer.keep_checkpoints=20",
                "trainer.val_every=1000",
                *overrides,
            ],
        )


def test_training_run_prunes_on_schedule_and_resumes_its_masks(tmp_path):
    """Prunings at steps 3, 6, 9; a run stopped at 4 resumes with its masks and place on the schedule."""
    first = Trainer(sparse_cfg(tmp_path, "trainer.max_steps=4"))
    first.fit()
    schedule = first.pruner.schedule
    ckpt4 = read_checkpoint(first.checkpoint_paths(4)[0])
    assert ckpt4.meta["sparsity"]["current"] == pytest.approx(schedule.sparsity(3))
    assert 0 < schedule.sparsity(3) < schedule.sparsity(6) < 0.75 == schedule.sparsity(9)

    resumed = Trainer(sparse_cfg(tmp_path, "trainer.max_steps=9"))
    resumed.maybe_resume()  # before any step: masks and the place on the schedule come from the checkpoint
    assert resumed.step == 4 and resumed.pruner.current == pytest.approx(schedule.sparsity(3))
    for name, mask in ckpt4.extras["mask"].items():
        assert torch.equal(resumed.pruner.masks[name].cpu(), mask)
    resumed.fit()

    densities = []
    for step in range(1, 10):
        ckpt = read_checkpoint(resumed.checkpoint_paths(step)[0])
        masks = ckpt.extras["mask"]
        for name, mask in masks.items():
            assert (ckpt.tensors[name][~mask] == 0).all(), f"step {step}: pruned {name} weights moved"
            assert (ckpt.extras["ema"][name][~mask] == 0).all(), f"step {step}: pruned {name} averaged weights"
        densities.append(ckpt.meta["sparsity"]["density"]["gru_hh.u"])
        if step == 5:  # after the resume, before the next pruning: the saved masks, unchanged
            assert all(torch.equal(masks[n], ckpt4.extras["mask"][n]) for n in masks)
    expected = [1 - schedule.sparsity(s - s % 3) for s in range(1, 10)]
    assert densities == pytest.approx(expected, abs=1 / 32 + 1e-6)  # 32 column blocks per 32-row gate
    assert densities[-1] == pytest.approx(0.25, abs=1 / 32 + 1e-6)


def test_a_checkpoint_with_bad_masks_is_refused(tmp_path, tiny_wavernn):
    from vocoders.checkpoint import CheckpointError

    bad = save_checkpoint(
        tmp_path / "bad.safetensors",
        tiny_wavernn,
        1,
        extras={"mask": {"gru_weight_hh": torch.ones(3, 3, dtype=torch.bool)}},
    )
    with pytest.raises(CheckpointError, match="bad.safetensors: mask for gru_weight_hh has shape"):
        model_from_checkpoint(read_checkpoint(bad))
    odd = save_checkpoint(tmp_path / "odd.safetensors", tiny_wavernn, 1, extras={"mask": {"nope": torch.ones(3)}})
    with pytest.raises(CheckpointError, match="odd.safetensors: pruning mask for unknown parameter"):
        model_from_checkpoint(read_checkpoint(odd))
