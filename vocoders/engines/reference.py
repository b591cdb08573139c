"""The reference engine: a plain PyTorch loop over the model's `step`, one sample at a time.

This is the oracle every fast engine is tested against, and the speed of the popular public
implementations (a Python loop of small PyTorch ops per sample).
"""

from __future__ import annotations

import torch

from .base import Engine


class ReferenceEngine(Engine):
    name = "reference"

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        model = self.model
        steps = self.check_inputs(model, cond, noise)
        per_sample = model.upsample(cond.to(self.device))  # [B, T, D]
        noise = noise.to(self.device)
        state = model.initial_state(cond.shape[0], self.device)
        out = torch.empty(cond.shape[0], steps, dtype=torch.long, device=self.device)
        for t in range(steps):
            state, sample, _ = model.step(state, per_sample[:, t], noise[:, t], temperature)
            out[:, t] = sample
        return out

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        model = self.model
        per_sample = model.upsample(cond.to(self.device))
        targets = targets.to(self.device)
        batch, steps = targets.shape
        noise = torch.zeros(batch, model.noise_per_step, device=self.device)
        state = model.initial_state(batch, self.device)
        logits = []
        for t in range(steps):
            state, _, step_logits = model.step(state, per_sample[:, t], noise, 1.0, forced=targets[:, t])
            logits.append(step_logits)
        return torch.stack(logits, dim=1)
