"""The training loop: `Trainer` and `train(cfg)` from a composed Hydra config.

`Trainer` sets up the run (data, model, optimizer and schedule, pruning, EMA, precision) and runs
`fit`; its checkpoints and resume come from `CheckpointingMixin` (checkpointing.py), its validation
from `ValidationMixin` (validation.py). `metrics.jsonl` in the run directory gets one JSON object per
logged step and validation.

Distributed (torchrun or SLURM, see distributed.py): every rank trains a replica under
DistributedDataParallel on its own shard of the data; only rank 0 writes anything into the run
directory. Ranks resume from the checkpoint rank 0 picks, and their weights are compared (sha256)
at every checkpoint. `data.batch_size` is per rank: the global batch is batch_size * world size.

Weights: with `trainer.ema_decay` set (the default) the trainer keeps an exponential moving
average of the weights (ema.py); checkpoints carry it as the "ema." group, validation and the
validation audio use it, and so do `vocoders.load` and the CLIs unless told otherwise.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..data import (
    FeatureCache,
    SegmentDataset,
    find_utterances,
    load_features,
    summary_line,
)
from ..distributed import DistEnv
from ..ema import WeightAverage
from ..features import MelConfig
from ..models.base import VocoderModel
from ..sparsity import build_pruner
from ..tracking import make_sink
from .checkpointing import CheckpointingMixin
from .validation import ValidationMixin

log = logging.getLogger("vocoders.training")  # the package's logger, as before it was split into modules


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    validation_audio: Path | None
    metrics: dict[str, float]
    resumed_from: int | None = None
    weights_sha256: str | None = None  # this rank's final weights (+ EMA); set in distributed runs


def embedded_sample() -> Path:
    """The small speech sample shipped with the package (its manifest)."""
    return Path(str(resources.files("vocoders.assets") / "cs-male-22k-sample" / "metadata.csv"))


def resolve_device(name: str, dist_env: DistEnv | None = None) -> torch.device:
    """`auto` = CUDA when available, else CPU; in a distributed run each rank takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and dist_env is not None and dist_env.enabled:
        device = torch.device("cuda", dist_env.local_rank)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_model(cfg: DictConfig, mel_config: MelConfig) -> VocoderModel:
    from hydra.utils import instantiate

    return instantiate(cfg.model, mel=mel_config.to_dict(), _convert_="all")


class Trainer(CheckpointingMixin, ValidationMixin):
    """One training run. Hooks for later features are the small methods called from `fit`."""

    def __init__(self, cfg: DictConfig, dist_env: DistEnv | None = None) -> None:
        self.cfg = cfg
        self.dist = dist_env or DistEnv()
        self.device = resolve_device(cfg.device, self.dist)
        if self.dist.enabled and not torch.distributed.is_initialized():
            distributed.init_process_group(self.dist, self.device, float(cfg.trainer.get("dist_timeout_minutes", 60)))
        # Ranks may have resolved ${now:...} a second apart: rank 0's run directory is the run directory.
        self.run_dir = Path(distributed.broadcast_object(str(cfg.run_dir)))
        self.checkpoint_dir = self.run_dir / "checkpoints"
        if cfg.trainer.get("threads"):
            torch.set_num_threads(int(cfg.trainer.threads))
        seed_everything(int(cfg.seed))
        self.mel_config = MelConfig.from_dict(OmegaConf.to_container(cfg.audio, resolve=True))
        self.model = build_model(cfg, self.mel_config).to(self.device)
        if self.dist.enabled:  # same initial weights everywhere, different random segment offsets per rank
            torch.manual_seed(int(cfg.seed) + 1_000_003 * self.dist.rank)
        self.step = 0
        self.train_seconds = 0.0  # wall time spent in training steps over every session of this run
        self.resumed_from: int | None = None
        self.init_source: dict[str, Any] | None = None  # trainer.init_from, when a fresh run started from it
        self._validation_segments: tuple[list[torch.Tensor], ...] | None = None
        self._build_data()
        self._build_optimizer()
        self.pruner = build_pruner(self.model, cfg.get("sparsity"))
        decay = cfg.trainer.get("ema_decay")
        self.ema = WeightAverage(self.model, float(decay), bool(cfg.trainer.get("ema_warmup", True))) if decay else None
        self.autocast_dtype = _autocast_dtype(str(cfg.trainer.get("precision", "auto")), self.device)
        self.loss_fn = self.model.loss  # replaced by the DistributedDataParallel wrapper in `fit`
        self.metrics_file = self.run_dir / "metrics.jsonl"
        # TensorBoard when installed; rank 0 only, like every other file in the run directory.
        self.sink = make_sink(cfg.trainer.get("tensorboard", "auto") if self.dist.is_main else False, self.run_dir)

    # ---- set-up ------------------------------------------------------------------------------
    def _build_data(self) -> None:
        if not self.dist.is_main:  # rank 0 fills the feature cache first; the others then read it
            distributed.barrier()
        self._read_data()
        if self.dist.is_main:
            distributed.barrier()

    def _read_data(self) -> None:
        d = self.cfg.data
        source = Path(d.path).expanduser() if d.get("path") else embedded_sample()
        utterances = find_utterances(source, d.get("kind", "auto"), int(d.get("valid_size", 10)))
        cache = FeatureCache(d.get("cache_dir"), self.mel_config, bool(d.get("allow_resample", True)))
        progress = bool(self.cfg.trainer.get("progress", True)) and self.dist.is_main
        train_utts = [u for u in utterances if u.split == "train"]
        valid_utts = [u for u in utterances if u.split in ("valid", "validation", "dev")]
        train, skipped = load_features(train_utts, cache, int(d.segment_frames), progress)
        valid, skipped_valid = load_features(valid_utts, cache, 1, progress)
        if self.model.reads_f0:  # the reference tracker's pitch, once per utterance (cached)
            started = time.perf_counter()
            train, valid = [cache.with_f0(f) for f in train], [cache.with_f0(f) for f in valid]
            log.info("reference F0 of %d utterances in %.1f s", len(train) + len(valid), time.perf_counter() - started)
        skipped.update(skipped_valid)
        line = summary_line(str(source), train, valid, skipped, self.mel_config.hop_length, self.mel_config.sample_rate)
        log.info(line)
        self.data_summary = line
        self.train_set = SegmentDataset(train, int(d.segment_frames), self.model.mel_context, self.model.hop_length)
        self.valid_features = valid or train[:1]
        if not valid:
            log.warning("no validation utterances; validating on a training utterance")
        self.sampler = None
        if self.dist.enabled:  # each rank draws its own shard; the shuffle follows (seed, epoch)
            if len(self.train_set) < self.dist.world_size:
                raise ValueError(f"{source}: {len(self.train_set)} training utterances, {self.dist.world_size} ranks")
            self.sampler = torch.utils.data.DistributedSampler(
                self.train_set, self.dist.world_size, self.dist.rank, seed=int(self.cfg.seed), drop_last=True
            )
        per_rank = len(self.train_set) // self.dist.world_size
        self.loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=min(int(d.batch_size), per_rank),
            shuffle=self.sampler is None,
            sampler=self.sampler,
            drop_last=True,
            num_workers=int(d.get("num_workers", 0)),
            persistent_workers=int(d.get("num_workers", 0)) > 0,
        )

    def _build_optimizer(self) -> None:
        from hydra.utils import instantiate

        optim_cfg = OmegaConf.to_container(self.cfg.optim, resolve=True)
        schedule = optim_cfg.pop("schedule", None) or {}
        self.optimizer = instantiate(optim_cfg, params=self.model.parameters(), _convert_="all")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(schedule))

    # ---- the loop --------------------------------------------------------------------------------
    def training_step(self, mel: torch.Tensor, audio: torch.Tensor, *extra: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a batch; extra: the reference F0 [B, frames] for a model that reads it."""
        self.model.train()
        mel, audio = mel.to(self.device, non_blocking=True), audio.to(self.device, non_blocking=True)
        extra = tuple(x.to(self.device, non_blocking=True) for x in extra)
        with torch.autocast(self.device.type, self.autocast_dtype or torch.bfloat16, self.autocast_dtype is not None):
            loss, parts = self.loss_fn(mel, audio, *extra)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = float(self.cfg.trainer.get("grad_clip", 0) or 0)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.after_optimizer_step()
        self.update_ema()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **parts}

    def after_optimizer_step(self) -> None:
        """Hook: runs after every optimizer step (pruning masks, weight averages)."""
        if self.pruner is not None:  # self.step counts completed steps before this one
            self.pruner.after_step(self.step + 1, self.optimizer)

    def update_ema(self) -> None:
        """Move the weight average toward the weights just stepped (after `after_optimizer_step`)."""
        if self.ema is not None:
            self.ema.update(self.model, self.step + 1, self.ema_masks())

    def ema_masks(self) -> dict[str, torch.Tensor]:
        """Hook: parameter name -> 0/1 mask multiplied into the average after each update (pruning)."""
        return self.pruner.float_masks() if self.pruner is not None else {}

    @property
    def inference_model(self) -> VocoderModel:
        """The weights a checkpoint's user gets: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else self.model

    def batches(self):
        epoch = self.step // max(1, len(self.loader))
        while True:
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
            yield from self.loader
            epoch += 1

    def _wrap_for_training(self) -> None:
        """DistributedDataParallel around the loss, so gradients are averaged over ranks in backward."""
        if not self.dist.enabled:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.loss_fn = DistributedDataParallel(_LossOf(self.model), device_ids=ids)

    def check_ranks_agree(self) -> str:
        """sha256 of this rank's weights (+ EMA); raises on every rank if any two ranks differ."""
        tensors = dict(self.model.state_dict())
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        mine = distributed.weights_fingerprint(tensors)
        everyone = distributed.gather_objects(mine)
        if len(set(everyone)) > 1:
            raise RuntimeError(f"ranks diverged at step {self.step}: weight fingerprints {everyone}")
        return mine

    def fit(self) -> TrainResult:
        from tqdm import tqdm

        t = self.cfg.trainer
        max_steps = int(t.max_steps)
        main = self.dist.is_main
        self.maybe_resume()
        self._wrap_for_training()
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.step == 0:
                OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)
            if self.dist.enabled:
                log.info(
                    "%d ranks, batch %d per rank (%d in all)",
                    self.dist.world_size,
                    self.loader.batch_size,
                    self.loader.batch_size * self.dist.world_size,
                )
        bar = tqdm(
            total=max_steps,
            initial=self.step,
            disable=not (t.get("progress", True) and main),
            unit="step",
            dynamic_ncols=True,
        )
        last_val: dict[str, float] = {}
        audio_path = None
        started, started_step = time.perf_counter(), self.step
        running: dict[str, float] = {}
        tick = time.perf_counter()
        for batch in self.batches():
            if self.step >= max_steps:
                break
            parts = self.training_step(*batch)
            self.step += 1
            now = time.perf_counter()
            self.train_seconds += now - tick  # the batch's loading and its step; not validation or saving
            tick = now
            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + v
            running["_n"] = running.get("_n", 0) + 1
            bar.update(1)
            # The gradient norm is computed after the all-reduce, so every rank stops at the same step.
            if not (math.isfinite(parts["loss"]) and math.isfinite(parts["grad_norm"])):
                raise FloatingPointError(f"loss {parts['loss']}, grad norm {parts['grad_norm']} at step {self.step}")
            if self.step % int(t.log_every) == 0 or self.step == max_steps:
                n = running.pop("_n")
                averaged = distributed.mean_over_ranks({k: v / n for k, v in running.items()}, self.device)
                rate = (self.step - started_step) / max(time.perf_counter() - started, 1e-9)
                averaged.update(steps_per_second=rate, lr=self.scheduler.get_last_lr()[0])
                if main:
                    self.write_metrics("train", averaged)
                bar.set_postfix(loss=f"{averaged['loss']:.3f}", steps_s=f"{rate:.2f}")
                running = {}
            if main and (self.step % int(t.val_every) == 0 or self.step == max_steps):
                last_val = self.validate()
                audio_path = self.validation_audio()
            if self.step % int(t.checkpoint_every) == 0 or self.step == max_steps:
                if self.dist.enabled:
                    self.check_ranks_agree()
                if main:
                    self.save()
            tick = time.perf_counter()
        bar.close()
        self.sink.close()
        checkpoint = None
        if main:
            checkpoint = self.checkpoint_paths(self.step)[0] if self.step in self.saved_steps() else None
            if checkpoint is None and self.step > 0:
                checkpoint = self.save()
        fingerprint = self.check_ranks_agree() if self.dist.enabled else None
        return TrainResult(self.run_dir, self.step, checkpoint, audio_path, last_val, self.resumed_from, fingerprint)

    # ---- metrics ---------------------------------------------------------------------------------
    def write_metrics(self, kind: str, values: dict[str, float]) -> None:
        record = {
            "kind": kind,
            "step": self.step,
            "train_seconds": round(self.train_seconds, 1),
            "threads": torch.get_num_threads(),
        }
        record.update({k: round(float(v), 6) for k, v in values.items()})
        log.info("%s", json.dumps(record))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.sink.scalars(kind, self.step, values)


class _LossOf(torch.nn.Module):
    """`model.loss` as a module's forward, the call DistributedDataParallel wraps."""

    def __init__(self, model: VocoderModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, mel: torch.Tensor, audio: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.loss(mel, audio, *extra)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """`auto`: bf16 autocast on CUDA, none elsewhere; `bf16`: autocast on any device; `fp32`: none.

    Losses stay in float32 (the models take the cross-entropy of float32 logits) and bf16 needs no
    loss scaling, so there is no fp16 mode.
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"trainer.precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _lr_lambda(schedule: dict[str, Any]):
    """Learning-rate multiplier per step: linear warm-up, then constant, exponential or cosine decay."""
    warmup = int(schedule.get("warmup_steps", 0))
    kind = schedule.get("decay", "none")
    gamma = float(schedule.get("gamma", 0.5))
    every = int(schedule.get("decay_every", 100_000))
    total = int(schedule.get("total_steps", 1_000_000))
    floor = float(schedule.get("min_factor", 0.0))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "exponential":
            return max(floor, gamma ** (step / every))
        if kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def train(cfg: DictConfig) -> TrainResult:
    """Train from a composed config; returns where things were written.

    Under torchrun (or a multi-task submitit SLURM job) this process is one rank of a data-parallel run.
    """
    dist_env = distributed.detect()
    trainer = None
    try:
        trainer = Trainer(cfg, dist_env)
        return trainer.fit()
    finally:
        if dist_env.enabled:
            # The DistributedDataParallel wrapper holds the Gloo group: free it (and its reference cycles)
            # first, so that destroying the group joins Gloo's worker threads now. Left to interpreter
            # shutdown, a worker releasing its last all-gather's tensors needs the GIL and aborts the process.
            trainer = None
            gc.collect()
            distributed.destroy_process_group()
