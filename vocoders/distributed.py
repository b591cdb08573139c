"""Data-parallel training across processes: who this process is, and the few collectives the trainer uses.

Two ways to start N processes running the same `python -m vocoders.train ...` command:
    torchrun --nproc_per_node=N -m vocoders.train recipe=...       one machine (or several, with rdzv flags)
    python -m vocoders.train -m hydra/launcher=slurm recipe=...    SLURM via hydra-submitit-launcher
torchrun exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; under submitit the SLURM
task variables say the same, and `export_submitit_rendezvous` turns them into torchrun's names.
The process group uses NCCL when training on CUDA and Gloo on CPU; every rank then runs one model
replica under DistributedDataParallel on its own shard of the data, and only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read the launcher's variables (torchrun's names, or SLURM's inside a submitit job)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if env.get("SUBMITIT_EXECUTOR") == "slurm" and int(env.get("SLURM_NTASKS", 1)) > 1:
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistEnv()


def export_submitit_rendezvous() -> None:
    """Inside a multi-task submitit SLURM job, set MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK.

    The first host of the job is the rendezvous; the port derives from the job id, as submitit does.
    """
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def launched_rank() -> int:
    """This process's rank as the launcher set it, before any process group exists (0 if none)."""
    return detect().rank


def init_process_group(env: DistEnv, device: torch.device, timeout_minutes: float = 60.0) -> None:
    """Join the other ranks (env:// rendezvous). NCCL for CUDA devices, Gloo otherwise."""
    if "MASTER_ADDR" not in os.environ:
        export_submitit_rendezvous()
    backend = "nccl" if device.type == "cuda" else "gloo"
    log.info(
        "rank %d of %d: meeting the others at %s:%s",
        env.rank,
        env.world_size,
        os.environ.get("MASTER_ADDR"),
        os.environ.get("MASTER_PORT"),
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(minutes=timeout_minutes),
    )
    log.info("rank %d of %d joined the process group (%s)", env.rank, env.world_size, backend)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable values only; used for paths and step numbers)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _active():
        dist.barrier()


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average each named float over the ranks (every rank passes the same keys)."""
    if not _active() or not values:
        return values
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.tolist(), strict=True))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def weights_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `tensors` in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
