"""Checkpoints of a training run: writing them, pruning old ones, resuming, starting from another run.

Each checkpoint is a pair in `<run_dir>/checkpoints/`:
    step-00001000.safetensors   inference checkpoint (weights + metadata; the EMA as the "ema." group)
    step-00001000.state.pt      optimizer, scheduler, RNG (for resuming)
    last.safetensors            the latest checkpoint (a hard link)

Resuming: with `trainer.resume=auto` (default) a run directory that already holds checkpoints
continues from the newest complete pair (weights + state); each file is written atomically and
the state before the weights, so a `kill -9` at any moment leaves a loadable pair behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .. import distributed
from ..checkpoint import (
    CheckpointError,
    load_training_state,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_training_state,
    total_steps,
)

log = logging.getLogger("vocoders.training")  # the package's logger, as before it was split into modules

CHECKPOINT_PATTERN = re.compile(r"step-(\d+)\.safetensors$")


class CheckpointingMixin:
    """Checkpoint I/O and resume for `Trainer` (loop.py).

    Uses these Trainer attributes: `cfg` (the run's config: `trainer.keep_checkpoints`, `trainer.resume`,
    `trainer.init_from`, `seed`, `name`), `dist` (DistEnv), `checkpoint_dir`, `model`, `mel_config`,
    `ema` (WeightAverage or None), `pruner` (or None), `optimizer`, `scheduler`, `data_summary`; reads
    and sets `step`, `train_seconds`, `init_source` and `resumed_from`.
    """

    def checkpoint_paths(self, step: int) -> tuple[Path, Path]:
        stem = self.checkpoint_dir / f"step-{step:08d}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".state.pt")

    def save(self) -> Path:
        weights, state = self.checkpoint_paths(self.step)
        save_training_state(state, self.training_state())
        extras = self.checkpoint_extras()
        if self.ema is not None:
            extras = {**extras, "ema": self.ema.state_dict()}
        save_checkpoint(weights, self.model, self.step, extras=extras, **self.checkpoint_meta())
        last = self.checkpoint_dir / "last.safetensors"
        tmp = self.checkpoint_dir / f".last.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(weights, tmp)
        except OSError:  # file systems without hard links
            import shutil

            shutil.copyfile(weights, tmp)
        os.replace(tmp, last)
        self._prune_old_checkpoints()
        log.info("saved checkpoint %s", weights)
        return weights

    def checkpoint_meta(self) -> dict[str, Any]:
        """Extra JSON metadata for the checkpoint (recipe name, data summary)."""
        meta = {"recipe": str(self.cfg.get("name", "")), "data": self.data_summary}
        if self.pruner is not None:
            meta["sparsity"] = self.pruner.describe()
        if self.init_source is not None:
            meta["init_from"] = self.init_source
        return meta

    def checkpoint_extras(self) -> dict[str, dict[str, torch.Tensor]]:
        """Extra tensor groups saved with the weights (e.g. EMA weights, pruning masks)."""
        extras = {}
        if self.pruner is not None:
            extras["mask"] = self.pruner.state_masks()
        return extras

    def training_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "init_from": self.init_source,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def _prune_old_checkpoints(self) -> None:
        keep = int(self.cfg.trainer.get("keep_checkpoints", 3))
        steps = sorted(self.saved_steps())
        for step in steps[:-keep] if keep > 0 else []:
            for p in self.checkpoint_paths(step):
                p.unlink(missing_ok=True)

    def saved_steps(self) -> list[int]:
        if not self.checkpoint_dir.is_dir():
            return []
        steps = []
        for p in self.checkpoint_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(p.name)
            if match and self.checkpoint_paths(int(match.group(1)))[1].is_file():
                steps.append(int(match.group(1)))
        return steps

    def maybe_resume(self) -> None:
        mode = str(self.cfg.trainer.get("resume", "auto"))
        if mode in ("never", "false", "False"):
            if self.cfg.trainer.get("init_from"):
                self.init_weights(str(self.cfg.trainer.init_from))
            return
        if mode not in ("auto", "true", "True"):
            weights = Path(mode)
            state = weights.with_name(weights.name.replace(".safetensors", ".state.pt"))
            self.load(weights, state)
            return
        chosen = None
        if self.dist.is_main:
            for step in sorted(self.saved_steps(), reverse=True):
                weights, state = self.checkpoint_paths(step)
                try:
                    self.load(weights, state)
                    chosen = step
                    break
                except Exception as exc:  # a damaged pair: fall back to the previous one
                    log.warning("cannot resume from %s (%s); trying an older checkpoint", weights, exc)
        chosen = distributed.broadcast_object(chosen)  # every rank continues from rank 0's choice
        if chosen is not None and not self.dist.is_main:
            self.load(*self.checkpoint_paths(chosen))
        if chosen is None and self.cfg.trainer.get("init_from"):
            self.init_weights(str(self.cfg.trainer.init_from))

    def init_weights(self, name_or_path: str) -> None:
        """Start a fresh run from another run's weights (a path or a shipped model's short name).

        The model and its EMA start from the checkpoint's EMA weights where it has them; the optimizer,
        schedule and step count start afresh, so the warm-up runs again. The model family and the mel
        contract must match; kwargs may differ only where every parameter keeps its name and shape (a
        fine-tune that changes a normalisation or a predictor's gain), and each such difference is logged.
        """
        from ..pretrained import resolve

        path = resolve(name_or_path)
        checkpoint = read_checkpoint(path)
        source = model_from_checkpoint(checkpoint)  # its kwargs (defaults filled) and EMA weights, as it loads
        ours = {"model": self.model.name, "kwargs": self.model.kwargs, "mel": self.mel_config.to_dict()}
        theirs = {"model": source.name, "kwargs": source.kwargs, "mel": source.mel_config.to_dict()}
        ours, theirs = json.loads(json.dumps(ours)), json.loads(json.dumps(theirs))  # tuples as lists
        weights, own = source.state_dict(), self.model.state_dict()
        fits = weights.keys() == own.keys() and all(weights[k].shape == own[k].shape for k in own)
        if ours["model"] != theirs["model"] or ours["mel"] != theirs["mel"] or not fits:
            differ = ", ".join(k for k in ours if ours[k] != theirs[k])
            raise CheckpointError(f"{path}: trainer.init_from holds a different model ({differ} differ from this run)")
        changed = sorted(k for k in ours["kwargs"] if ours["kwargs"][k] != theirs["kwargs"].get(k))
        for key in changed:
            log.warning(
                "init_from %s: model.%s %r -> %r (the parameters keep their shapes)",
                path,
                key,
                theirs["kwargs"].get(key),
                ours["kwargs"][key],
            )
        self.model.load_state_dict(weights)
        self.load_extras(checkpoint)
        if self.ema is not None:
            self.ema.reset(self.model)
        total = total_steps(checkpoint.meta)  # the source's own init_from chain included
        self.init_source = {"path": str(path), "step": checkpoint.step, "total_steps": total}
        if changed:
            self.init_source["changed"] = changed
        log.info("initialised from %s (its step %d)", path, checkpoint.step)

    def load(self, weights: Path, state_path: Path) -> None:
        checkpoint = read_checkpoint(weights)
        self.model.load_state_dict(checkpoint.tensors)
        self.load_extras(checkpoint)
        if self.ema is not None:
            if "ema" in checkpoint.extras:
                self.ema.load_state_dict(checkpoint.extras["ema"])
            else:
                log.warning("%s has no EMA weights; the average restarts from the loaded weights", weights)
                self.ema.reset(self.model)
        state = load_training_state(state_path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.init_source = state.get("init_from")
        self.resumed_from = self.step
        if self.dist.enabled:  # rank 0's saved RNG state, offset so ranks keep drawing different segments
            torch.manual_seed(int(self.cfg.seed) + 1_000_003 * self.dist.rank + self.step)
        log.info("resumed from %s at step %d", weights, self.step)

    def load_extras(self, checkpoint) -> None:
        """Restore what `checkpoint_extras` saved."""
        if self.pruner is not None and "mask" in checkpoint.extras:
            self.pruner.load(checkpoint.extras["mask"], checkpoint.meta.get("sparsity"), str(checkpoint.path))
