"""Magnitude pruning during training (Sparse WaveRNN, Kalchbrenner et al. 2018).

Every `prune_every` steps from `start` on, each prunable matrix keeps only its largest blocks so that
a fraction z(t) of its blocks is zero, with the paper's cubic schedule

    z(t) = Z * (1 - (1 - (t - t0) / S) ** 3)    for t0 <= t <= t0 + S  (0 before, Z after).

Blocks are `rows x cols` tiles of a weight [out, in]: 16x1 is 16 consecutive output rows of one input
column (one activation per block at sampling time), 4x4 a square tile, 1x1 unstructured. Blocks are
ranked by their L2 norm (or mean magnitude); once pruned a block stays pruned. Each matrix the model
lists in `prunable_matrices()` (for WaveRNN every gate of R and of the input matrix, optionally the
output layers) is pruned on its own.

Pruned weights stay exactly zero: their gradients are masked before the optimizer sees them, and
after every optimizer step the weights and every optimizer state tensor of the same shape (Adam's
moments) are multiplied by the mask. The masks travel in checkpoints as the "mask." tensor group;
a resumed run restores them and takes its place on the schedule from the restored step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SCORES = ("l2", "mean_abs")


def parse_block(block: Any) -> tuple[int, int]:
    """'16x1', [16, 1] or (16, 1) -> (rows, cols); refuses anything else."""
    if isinstance(block, str):
        parts = block.lower().split("x")
    else:
        parts = list(block)
    try:
        rows, cols = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"block must look like '16x1' or [16, 1], got {block!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"block dimensions must be positive, got {block!r}")
    return rows, cols


@dataclass(frozen=True)
class PruningSchedule:
    """z(t) = final * (1 - (1 - (t - start) / duration)^3), pruning every `every` steps from `start`."""

    final: float = 0.95
    start: int = 1000
    duration: int = 200_000
    every: int = 500

    def __post_init__(self) -> None:
        if not 0.0 <= self.final < 1.0:
            raise ValueError(f"final sparsity must be in [0, 1), got {self.final}")
        if self.start < 0 or self.duration < 1 or self.every < 1:
            raise ValueError(f"need start >= 0, duration >= 1, every >= 1; got {self}")

    def sparsity(self, step: int) -> float:
        if step < self.start:
            return 0.0
        progress = min(1.0, (step - self.start) / self.duration)
        return self.final * (1.0 - (1.0 - progress) ** 3)

    def prunes_at(self, step: int) -> bool:
        return step >= self.start and step % self.every == 0


def block_scores(weight: torch.Tensor, block: tuple[int, int], score: str = "l2") -> torch.Tensor:
    """Score of every block of `weight` [R, C] -> [ceil(R / rows), ceil(C / cols)].

    Edge blocks that overhang the matrix are scored over their existing entries.
    """
    rows, cols = block
    w = weight.detach().float()
    pad_r, pad_c = -w.shape[0] % rows, -w.shape[1] % cols
    w = torch.nn.functional.pad(w, (0, pad_c, 0, pad_r))
    tiles = w.reshape(w.shape[0] // rows, rows, w.shape[1] // cols, cols)
    if score == "l2":
        return tiles.pow(2).sum(dim=(1, 3)).sqrt()
    if score == "mean_abs":
        return tiles.abs().sum(dim=(1, 3)) / (rows * cols)
    raise ValueError(f"unknown block score {score!r}; known: {', '.join(SCORES)}")


def expand_blocks(block_mask: torch.Tensor, block: tuple[int, int], shape: torch.Size) -> torch.Tensor:
    """Block mask [R/rows, C/cols] -> element mask of `shape` (edge blocks cropped)."""
    rows, cols = block
    full = block_mask.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)
    return full[: shape[0], : shape[1]]


def prune_blocks(
    weight: torch.Tensor,
    sparsity: float,
    block: tuple[int, int],
    keep: torch.Tensor | None = None,
    score: str = "l2",
) -> torch.Tensor:
    """Mask (bool, shape of `weight` [R, C]) that zeroes floor(sparsity * n_blocks) lowest-scoring blocks.

    keep: the current element mask; blocks it already prunes are pruned first, so masks only shrink.
    """
    scores = block_scores(weight, block, score)
    if keep is not None:
        kept_blocks = block_scores(keep.float(), block, "l2") > 0
        scores = torch.where(kept_blocks, scores, torch.full_like(scores, -1.0))
    n_prune = int(math.floor(sparsity * scores.numel() + 1e-9))
    block_mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        order = torch.argsort(scores.flatten(), stable=True)
        block_mask[order[:n_prune]] = False
    if keep is not None:  # never revive a pruned block, whatever the requested fraction
        block_mask &= kept_blocks.flatten()
    return expand_blocks(block_mask.reshape(scores.shape), block, weight.shape)


class Pruner:
    """Prunes a model's matrices on a schedule and keeps pruned weights at exactly zero.

    model: exposes `prunable_matrices()` -> {name: (parameter name, first row, end row)} and optionally
        `structural_masks()` -> {parameter name: mask its forward pass already applies}.
    targets: prefixes of the matrix names to prune (WaveRNN: "gru_hh", "gru_ih", "O1", "O3", ...).
    Masks are bool tensors per parameter, full shape, on the parameter's device.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: PruningSchedule,
        block: Any = (16, 1),
        targets: list[str] | tuple[str, ...] = ("gru_hh", "gru_ih"),
        score: str = "l2",
    ) -> None:
        if score not in SCORES:
            raise ValueError(f"unknown block score {score!r}; known: {', '.join(SCORES)}")
        self.model = model
        self.schedule = schedule
        self.block = parse_block(block)
        self.score = score
        self.targets = list(targets)
        matrices = model.prunable_matrices()
        unknown = [t for t in self.targets if not any(_matches(name, t) for name in matrices)]
        if unknown:
            raise ValueError(f"unknown pruning targets {unknown}; this model has {sorted(matrices)}")
        self.matrices = {n: spec for n, spec in matrices.items() if any(_matches(n, t) for t in self.targets)}
        params = dict(model.named_parameters())
        self.params = {spec[0]: params[spec[0]] for spec in self.matrices.values()}
        self.structural = getattr(model, "structural_masks", dict)()
        self.masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.params.items()}
        self.current = 0.0  # the target fraction of the last pruning
        self._masked_floats: dict[str, torch.Tensor] = {n: m.float() for n, m in self.masks.items()}
        for name, p in self.params.items():
            p.register_hook(lambda grad, name=name: grad * self._masked_floats[name])

    # ---- pruning ------------------------------------------------------------------------------
    def after_step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Call after optimizer step number `step` (1-based): prune when due, then re-apply the masks."""
        if self.schedule.prunes_at(step) and self.schedule.sparsity(step) > self.current:
            self.prune(self.schedule.sparsity(step))
        if self.current > 0.0:
            self.apply(optimizer)

    @torch.no_grad()
    def prune(self, sparsity: float) -> None:
        """Bring every target matrix to `sparsity` (a fraction of its blocks)."""
        for name, (param_name, start, stop) in self.matrices.items():
            weight = self.params[param_name][start:stop]
            if param_name in self.structural:
                weight = weight * self.structural[param_name][start:stop].to(weight)
            keep = self.masks[param_name][start:stop]
            keep.copy_(prune_blocks(weight, sparsity, self.block, keep, self.score))
            log.debug("pruned %s to %.4f of its blocks", name, sparsity)
        self.current = sparsity
        self._sync_float_masks()
        log.info("pruning: target sparsity %.4f, %s", sparsity, self.density_summary())

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the pruned weights and the optimizer state that belongs to them."""
        for name, p in self.params.items():
            mask = self._masked_floats[name]
            p.mul_(mask)
            if optimizer is None:
                continue
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(mask)

    def _sync_float_masks(self) -> None:
        for name, mask in self.masks.items():
            self._masked_floats[name].copy_(mask)

    # ---- reporting and persistence ----------------------------------------------------------------
    def density(self) -> dict[str, float]:
        """Kept fraction of every pruned matrix."""
        out = {}
        for name, (param_name, start, stop) in self.matrices.items():
            out[name] = float(self.masks[param_name][start:stop].float().mean())
        return out

    def density_summary(self) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in self.density().items())

    def describe(self) -> dict[str, Any]:
        """JSON metadata for checkpoints: the block shape, targets, schedule and the density reached."""
        return {
            "block": list(self.block),
            "score": self.score,
            "targets": self.targets,
            "matrices": {n: list(spec) for n, spec in self.matrices.items()},
            "schedule": {
                "final": self.schedule.final,
                "start": self.schedule.start,
                "duration": self.schedule.duration,
                "every": self.schedule.every,
            },
            "current": self.current,
            "density": self.density(),
        }

    def float_masks(self) -> dict[str, torch.Tensor]:
        """Parameter name -> 0/1 float mask on the parameter's device (for the weight average)."""
        return self._masked_floats

    def state_masks(self) -> dict[str, torch.Tensor]:
        """Masks for the checkpoint's "mask." group (bool, CPU)."""
        return {name: m.detach().cpu().clone() for name, m in self.masks.items()}

    @torch.no_grad()
    def load(self, masks: dict[str, torch.Tensor], meta: dict[str, Any] | None, where: str = "checkpoint") -> None:
        """Restore masks saved by `state_masks` (and the fraction reached, from `describe`'s metadata)."""
        missing = sorted(set(self.masks) - set(masks))
        if missing:
            raise ValueError(f"{where}: no pruning masks for {missing}")
        for name, mask in self.masks.items():
            saved = masks[name]
            if saved.shape != mask.shape:
                shapes = f"{tuple(saved.shape)}, expected {tuple(mask.shape)}"
                raise ValueError(f"{where}: mask for {name} has shape {shapes}")
            mask.copy_(saved.to(mask.device).bool())
        self._sync_float_masks()
        self.current = float((meta or {}).get("current", 0.0))
        if self.current == 0.0 and any(not bool(m.all()) for m in self.masks.values()):
            self.current = max(1.0 - d for d in self.density().values())


def _matches(name: str, target: str) -> bool:
    return name == target or name.startswith(target + ".")


@torch.no_grad()
def apply_checkpoint_masks(model: nn.Module, masks: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Multiply a loaded model's parameters by the checkpoint's masks (so EMA weights are exactly sparse too)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"{where}: pruning mask for unknown parameter {name!r}")
        if mask.shape != params[name].shape:
            shapes = f"{tuple(mask.shape)}, expected {tuple(params[name].shape)}"
            raise ValueError(f"{where}: mask for {name} has shape {shapes}")
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def build_pruner(model: nn.Module, cfg: Any) -> Pruner | None:
    """A Pruner from the `sparsity` config group (None when the group is absent or disabled)."""
    if cfg is None or not cfg.get("enabled", True):
        return None
    if not hasattr(model, "prunable_matrices"):
        raise ValueError(f"model {getattr(model, 'name', type(model).__name__)!r} does not support pruning")
    schedule = PruningSchedule(
        final=float(cfg.final_sparsity),
        start=int(cfg.start_step),
        duration=int(cfg.duration),
        every=int(cfg.prune_every),
    )
    return Pruner(model, schedule, block=cfg.block, targets=list(cfg.targets), score=str(cfg.get("score", "l2")))


def prune_to_final(model: nn.Module, cfg: Any) -> Pruner:
    """Prune `model` at once to the `sparsity` config's final sparsity (random-weight benchmarks, tests)."""
    pruner = build_pruner(model, cfg)
    pruner.prune(pruner.schedule.final)
    pruner.apply()
    model.sparsity = pruner.describe()
    return pruner


# A sparse engine takes a model whose recurrent matrix R has at least this fraction of zeros.
MIN_ENGINE_SPARSITY = 0.5


def sparsity_of(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in a weight."""
    return float((weight == 0).float().mean())


def not_sparse_reason(recurrent: torch.Tensor) -> str | None:
    """Why a sparse engine refuses a model with recurrent matrix `recurrent`, or None if it is sparse enough."""
    sparsity = sparsity_of(recurrent)
    if sparsity < MIN_ENGINE_SPARSITY:
        needs = f"{MIN_ENGINE_SPARSITY:.0%}"
        return f"the model is not sparse (R has {sparsity:.0%} zeros; the sparse engine needs {needs})"
    return None
