"""Exponential moving average of a model's weights (the weights a trained vocoder ships with).

After every optimizer step t (1, 2, ...) each parameter p of the averaged copy moves toward the live one:

    p_ema <- d_t * p_ema + (1 - d_t) * p,    d_t = min(decay, (1 + t) / (10 + t)) with warm-up, else decay

The warm-up keeps early averages close to the weights instead of to their random start (at t = 100
the average spans ~10 steps; d_t reaches 0.9999 near t = 90k). Buffers are copied, not averaged.
Checkpoints store the averaged weights as the "ema." tensor group; `vocoders.load` prefers them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


class WeightAverage:
    """A frozen float copy of `model` whose parameters track the EMA of `model`'s.

    Attributes:
        model: the averaged copy (eval mode, no gradients); same class and state_dict keys as the source.
        decay: the long-run decay d; warmup: whether d_t ramps up as above.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """d_t for the update after optimizer step `step` (counting from 1)."""
        if self.warmup:
            return min(self.decay, (1.0 + step) / (10.0 + step))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        """Move the average toward `model` (same architecture) after optimizer step `step`.

        masks: parameter name -> 0/1 tensor of its shape, multiplied into the average afterwards, so
        that weights pruned in the model are exactly zero in the average too.
        """
        averaged = list(self.model.parameters())
        live = [p.detach() for p in model.parameters()]
        if len(averaged) != len(live):
            raise ValueError("EMA copy and model have different parameters")
        torch._foreach_lerp_(averaged, live, 1.0 - self.decay_at(step))
        if masks:
            params = dict(self.model.named_parameters())
            for name, mask in masks.items():
                params[name].mul_(mask.to(params[name]))
        for mine, theirs in zip(self.model.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average at `model`'s current weights."""
        self.model.load_state_dict(model.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(tensors)
