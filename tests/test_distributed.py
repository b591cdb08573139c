"""Data-parallel training: launcher variables, DDP gradient averaging through the masked GRU, and
real `torchrun` runs of `python -m vocoders.train` with two CPU processes over Gloo."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vocoders.checkpoint import read_checkpoint
from vocoders.distributed import DistEnv, detect, weights_fingerprint
from vocoders.features import MelConfig

TINY = dict(hidden_size=32, cond_channels=8, cond_blocks=1, out_hidden=24)


def test_detect_reads_torchrun_then_slurm_variables():
    assert detect({}) == DistEnv(0, 1, 0) and not detect({}).enabled
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert detect(torchrun) == DistEnv(3, 8, 1)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert detect(slurm) == DistEnv(5, 8, 1) and not detect(slurm).is_main
    assert detect({**slurm, "SUBMITIT_EXECUTOR": ""}) == DistEnv()  # an salloc shell is not a rank
    assert detect({**slurm, "SLURM_NTASKS": "1"}) == DistEnv()


def test_submitit_rendezvous_exports_torchrun_variables(monkeypatch):
    pytest.importorskip("submitit", reason="the SLURM launcher extra (hydra-submitit-launcher) is not installed")
    from vocoders.distributed import export_submitit_rendezvous

    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(key, "")  # recorded, so that what the export sets is removed after the test
        monkeypatch.delenv(key)
    slurm = {
        "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
    }  # fmt: skip
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    export_submitit_rendezvous()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("5", "8", "1")
    assert os.environ["MASTER_ADDR"] == "gpu07" and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert detect() == DistEnv(5, 8, 1)


def test_fingerprint_sees_every_byte_and_name():
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2), "s": torch.tensor(1.0)}
    base = weights_fingerprint(a)
    assert base == weights_fingerprint(dict(reversed(list(a.items()))))
    nudged = {**a, "w": a["w"].clone()}
    nudged["w"][1, 2] = torch.nextafter(nudged["w"][1, 2], torch.tensor(10.0))
    assert weights_fingerprint(nudged) != base
    assert weights_fingerprint({"v": a["w"], "b": a["b"], "s": a["s"]}) != base


def full_batch():
    from vocoders.models import WaveRNN

    torch.manual_seed(0)
    model = WaveRNN(mel=MelConfig().to_dict(), **TINY)
    generator = torch.Generator().manual_seed(1)
    mel = torch.randn(4, 80, 2 + 2 * model.mel_context, generator=generator) - 4.0
    audio = torch.rand(4, 2 * model.hop_length, generator=generator) * 1.6 - 0.8
    return model, mel, audio


def _ddp_rank(rank: int, world: int, store: str, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from vocoders.training import _LossOf

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model, mel, audio = full_batch()
    shard = slice(rank * 2, rank * 2 + 2)
    wrapped = DistributedDataParallel(_LossOf(model))  # kept alive: its reducer does the all-reduce in backward
    loss, _ = wrapped(mel[shard], audio[shard])
    loss.backward()
    torch.save({n: p.grad for n, p in model.named_parameters()}, Path(out) / f"grads{rank}.pt")
    dist.destroy_process_group()


def test_ddp_averages_gradients_through_the_masked_gru(tmp_path):
    """Each rank's gradient after backward equals the full-batch gradient, masked entries included."""
    mp.spawn(_ddp_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    model, mel, audio = full_batch()
    model.loss(mel, audio)[0].backward()
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        assert grads.keys() == dict(model.named_parameters()).keys()
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
        assert grads["gru_weight_ih"][: TINY["hidden_size"] // 2, 2].abs().max() == 0  # c_t never feeds coarse rows
    single = torch.load(tmp_path / "grads0.pt")["gru_weight_hh"]
    model.zero_grad()
    model.loss(mel[:2], audio[:2])[0].backward()
    assert not torch.allclose(single, model.gru_weight_hh.grad)  # a shard alone gives another gradient


def torchrun(tmp_path, *overrides, timeout=300):
    launcher = Path(sys.executable).with_name("torchrun")
    command = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "torch.distributed.run"]
    command += ["--standalone", "--nproc_per_node=2", "-m", "vocoders.train", "debug=tiny", "run_dir=run"]
    command += [f"data.cache_dir={tmp_path / 'cache'}", "trainer.checkpoint_every=100", *overrides]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = dict(re.findall(r"rank (\d): trained to step \d+[^;]*; weights sha256 ([0-9a-f]{64})", result.stdout))
    return result, reports


def own_fingerprint(path: Path) -> str:
    """sha256 of a checkpoint's weights and EMA group, computed here independently of the package."""
    checkpoint = read_checkpoint(path)
    tensors = {**checkpoint.tensors, **{f"ema.{k}": v for k, v in checkpoint.extras["ema"].items()}}
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_torchrun_two_ranks_stay_identical_and_write_once(tmp_path):
    result, reports = torchrun(tmp_path, "trainer.max_steps=3")
    print(result.stdout)
    run = tmp_path / "run"
    assert set(reports) == {"0", "1"} and reports["0"] == reports["1"]
    assert reports["0"] == own_fingerprint(run / "checkpoints" / "step-00000003.safetensors")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.safetensors",
        "step-00000003.safetensors",
        "step-00000003.state.pt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]  # no second rank's folder
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("train", 3), ("valid", 3)]
    assert len(list((run / "samples").iterdir())) == 1
    log = (run / "train.log").read_text()
    assert "rank 0 of 2 joined" in log and "rank 1" not in log and "2 ranks, batch 2 per rank (4 in all)" in log


@pytest.mark.slow
def test_torchrun_resume_loads_the_same_state_on_every_rank(tmp_path):
    torchrun(tmp_path, "trainer.max_steps=2")
    result, reports = torchrun(tmp_path, "trainer.max_steps=4")
    print(result.stdout)
    assert result.stdout.count("(resumed from step 2)") == 2
    final = tmp_path / "run" / "checkpoints" / "step-00000004.safetensors"
    assert reports["0"] == reports["1"] == own_fingerprint(final)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-00000004.state.pt", weights_only=True)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {4.0}  # Adam continued
