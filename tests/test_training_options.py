"""Trainer options: the weight average (in checkpoints, on resume, at load), precision, clipping, schedule."""

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_module

import vocoders
from vocoders.checkpoint import read_checkpoint
from vocoders.training import Trainer, _autocast_dtype, _lr_lambda, train


def tiny_cfg(tmp_path, *overrides):
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        return compose(
            config_name="train",
            overrides=["debug=tiny", f"run_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", *overrides],
        )


def one_batch(trainer):
    return next(iter(trainer.loader))


def test_ema_follows_each_optimizer_step(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.ema_decay=0.5"))
    expected = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batches = trainer.batches()
    for step in range(1, 4):
        trainer.training_step(*next(batches))
        trainer.step += 1
        d = min(0.5, (1 + step) / (10 + step))
        for name, p in trainer.model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach()
    for name, value in trainer.ema.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
    assert trainer.inference_model is trainer.ema.model


def test_checkpoint_carries_ema_and_load_prefers_it(tmp_path):
    result = train(tiny_cfg(tmp_path))
    checkpoint = read_checkpoint(result.checkpoint)
    ema = checkpoint.extras["ema"]
    assert ema.keys() == checkpoint.tensors.keys()
    assert not torch.equal(ema["gru_weight_hh"], checkpoint.tensors["gru_weight_hh"])
    averaged = vocoders.load(result.checkpoint).model.state_dict()
    raw = vocoders.load(result.checkpoint, use_ema=False).model.state_dict()
    assert all(torch.equal(averaged[k], ema[k]) for k in ema)
    assert all(torch.equal(raw[k], checkpoint.tensors[k]) for k in checkpoint.tensors)
    valid = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["kind"] == "valid"]
    assert valid and all(r["loss"] > 0 and r["raw_loss"] > 0 and r["loss"] != r["raw_loss"] for r in valid)


def test_ema_off_writes_no_average(tmp_path):
    result = train(tiny_cfg(tmp_path, "trainer.ema_decay=null"))
    assert "ema" not in read_checkpoint(result.checkpoint).extras


def test_resume_restores_the_average(tmp_path):
    first = train(tiny_cfg(tmp_path, "trainer.max_steps=2"))
    saved = read_checkpoint(first.checkpoint).extras["ema"]
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.max_steps=4"))
    trainer.maybe_resume()
    assert trainer.step == 2 and trainer.resumed_from == 2
    assert all(torch.equal(trainer.ema.state_dict()[k], saved[k]) for k in saved)
    assert not torch.equal(trainer.ema.model.gru_weight_hh, trainer.model.gru_weight_hh)


def test_resume_from_a_checkpoint_without_ema_restarts_the_average(tmp_path):
    first = train(tiny_cfg(tmp_path, "trainer.max_steps=2", "trainer.ema_decay=null"))
    assert "ema" not in read_checkpoint(first.checkpoint).extras
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.max_steps=4"))
    trainer.maybe_resume()
    assert all(torch.equal(trainer.ema.state_dict()[k], v) for k, v in trainer.model.state_dict().items())


def test_precision_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _autocast_dtype("auto", cpu) is None and _autocast_dtype("auto", cuda) is torch.bfloat16
    assert _autocast_dtype("bf16", cpu) is torch.bfloat16 and _autocast_dtype("fp32", cuda) is None
    with pytest.raises(ValueError, match="trainer.precision"):
        _autocast_dtype("fp16", cuda)


def test_bf16_autocast_keeps_the_recurrence_and_loss_in_float32(tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.precision=bf16"))
    assert trainer.autocast_dtype is torch.bfloat16
    mel, audio = one_batch(trainer)
    seen = []
    real_gru = torch._VF.gru

    def spy(x, h0, weights, *args):
        seen.append((x.dtype, h0.dtype, torch.is_autocast_enabled("cpu")))
        return real_gru(x, h0, weights, *args)

    monkeypatch.setattr(torch._VF, "gru", spy)
    with torch.no_grad():
        reference, _ = trainer.model.loss(mel, audio)
        with torch.autocast("cpu", torch.bfloat16):
            mixed, _ = trainer.model.loss(mel, audio)
            logits = trainer.model.forward_logits(mel, trainer.model.encode(audio))
    assert seen[1:] == [(torch.float32, torch.float32, False)] * 2  # GRU in float32, outside autocast
    assert logits.dtype == torch.bfloat16  # ... while the output layers did run in bf16
    assert mixed.dtype == torch.float32 and mixed.item() != reference.item()
    assert mixed.item() == pytest.approx(reference.item(), rel=2e-2)
    parts = trainer.training_step(mel, audio)
    assert math.isfinite(parts["loss"]) and math.isfinite(parts["grad_norm"])


def test_gradient_clipping_bounds_the_update(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.grad_clip=0.001"))
    parts = trainer.training_step(*one_batch(trainer))
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()]))
    assert parts["grad_norm"] > 0.01  # the logged norm is the one before clipping
    assert clipped.item() == pytest.approx(0.001, rel=1e-3)
    unclipped = Trainer(tiny_cfg(tmp_path, "trainer.grad_clip=0"))
    parts = unclipped.training_step(*one_batch(unclipped))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in unclipped.model.parameters()]))
    assert norm.item() == pytest.approx(parts["grad_norm"], rel=1e-5)


def test_schedule_shapes():
    warm = _lr_lambda({"warmup_steps": 4})
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    exp = _lr_lambda({"decay": "exponential", "gamma": 0.5, "decay_every": 10, "min_factor": 0.3})
    assert exp(0) == 1.0 and exp(10) == pytest.approx(0.5) and exp(100) == 0.3
    cos = _lr_lambda({"warmup_steps": 2, "decay": "cosine", "total_steps": 12, "min_factor": 0.1})
    assert cos(2) == pytest.approx(1.0) and cos(7) == pytest.approx(0.55) and cos(12) == cos(50) == pytest.approx(0.1)


def test_schedule_from_config_drives_the_optimizer(tmp_path):
    result = train(tiny_cfg(tmp_path, "optim.lr=0.01", "optim.schedule.warmup_steps=4", "trainer.log_every=1"))
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    assert lrs == pytest.approx([0.005, 0.0075, 0.01, 0.01])  # the rate for the next step, after each step


def test_ema_masks_hook_reaches_the_average(tmp_path):
    class Pruning(Trainer):
        def ema_masks(self):
            mask = torch.ones_like(self.model.gru_weight_hh)
            mask[:, ::2] = 0
            return {"gru_weight_hh": mask}

    trainer = Pruning(tiny_cfg(tmp_path))
    batches = trainer.batches()
    for _ in range(2):
        trainer.training_step(*next(batches))
        trainer.step += 1
    averaged = trainer.ema.model.gru_weight_hh
    assert torch.all(averaged[:, ::2] == 0) and torch.all(averaged[:, 1::2] != 0)


def test_init_from_starts_a_fresh_run_from_another_runs_average(tmp_path):
    source = train(tiny_cfg(tmp_path / "a", "trainer.max_steps=2"))
    average = read_checkpoint(source.checkpoint).extras["ema"]
    trainer = Trainer(tiny_cfg(tmp_path / "b", f"trainer.init_from={source.checkpoint}"))
    trainer.maybe_resume()
    assert trainer.step == 0 and trainer.resumed_from is None
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in average.items())
    assert all(torch.equal(trainer.ema.state_dict()[k], v) for k, v in average.items())
    # The run remembers where it started, in its checkpoints and across its own resume.
    result = train(tiny_cfg(tmp_path / "b", f"trainer.init_from={source.checkpoint}", "trainer.max_steps=2"))
    expected = {"path": str(source.checkpoint), "step": 2, "total_steps": 2}
    assert read_checkpoint(result.checkpoint).meta["init_from"] == expected
    # A third run from the second counts the steps behind both.
    third = Trainer(tiny_cfg(tmp_path / "c", f"trainer.init_from={result.checkpoint}"))
    third.maybe_resume()
    assert third.init_source["step"] == 2 and third.init_source["total_steps"] == 4
    again = Trainer(tiny_cfg(tmp_path / "b", f"trainer.init_from={source.checkpoint}", "trainer.max_steps=4"))
    again.maybe_resume()
    assert again.step == 2 and again.init_source["step"] == 2


def test_init_from_refuses_a_different_model(tmp_path):
    source = train(tiny_cfg(tmp_path / "a", "trainer.max_steps=1"))
    trainer = Trainer(tiny_cfg(tmp_path / "b", f"trainer.init_from={source.checkpoint}", "model.hidden_size=24"))
    with pytest.raises(vocoders.checkpoint.CheckpointError, match="init_from holds a different model"):
        trainer.maybe_resume()


def test_init_from_accepts_changed_kwargs_that_keep_every_parameter(tmp_path):
    source = train(tiny_cfg(tmp_path / "a", "trainer.max_steps=1"))
    trainer = Trainer(tiny_cfg(tmp_path / "b", f"trainer.init_from={source.checkpoint}", "model.preemphasis=0.5"))
    trainer.maybe_resume()
    average = read_checkpoint(source.checkpoint).extras["ema"]
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in average.items())
    assert trainer.model.kwargs["preemphasis"] == 0.5
    assert trainer.init_source["changed"] == ["preemphasis"]


def test_init_from_a_shipped_model_counts_its_recorded_total_once(tmp_path):
    from vocoders.checkpoint import model_from_checkpoint, save_checkpoint

    source = train(tiny_cfg(tmp_path / "a", "trainer.max_steps=1"))
    model = model_from_checkpoint(read_checkpoint(source.checkpoint))
    # As tools/ship_pretrained.py writes it: the step is the total; a stale chain must not add to it.
    shipped = save_checkpoint(tmp_path / "shipped.safetensors", model, 9, total_steps=9, init_from={"step": 5})
    trainer = Trainer(tiny_cfg(tmp_path / "b", f"trainer.init_from={shipped}"))
    trainer.maybe_resume()
    assert trainer.init_source["step"] == 9 and trainer.init_source["total_steps"] == 9
