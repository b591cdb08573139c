"""The reference engine: a plain PyTorch loop over the model's `step`, one step at a time.

This is the oracle every fast engine is tested against, and the speed of the popular public
implementations (a Python loop of small PyTorch ops per sample). Models that produce several samples
per step (see `VocoderModel.generation_order`) run through the same loop with a slot axis.
"""

from __future__ import annotations

import torch

from .base import Engine, EngineStream, StreamingError


class ReferenceEngine(Engine):
    name = "reference"

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        model = self.model
        steps = self.check_inputs(model, cond, noise)
        if model.samples_per_step == 1:  # one chunk of a stream: the plain loop
            return ReferenceStream(self, cond.shape[0], temperature).run(cond, noise)
        per_sample = model.upsample(cond.to(self.device))  # [B, T, D]
        out = torch.empty(cond.shape[0], steps, dtype=torch.long, device=self.device)
        return self._generate_slots(per_sample, noise.to(self.device), temperature, out)

    def _generate_slots(self, per_sample, noise, temperature, out):
        """Several samples per step: gather each step's positions, scatter its samples back."""
        model = self.model
        batch, steps = out.shape
        order = model.generation_order(steps).to(self.device)  # [S, P]
        state = model.start_state(batch, steps, self.device)
        for positions in order:
            active = positions >= 0
            index = positions.clamp(min=0)
            state, samples, _ = model.step(state, per_sample[:, index], noise[:, index], temperature)
            out[:, positions[active]] = samples[:, active]
        return out

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        model = self.model
        per_sample = model.upsample(cond.to(self.device))
        targets = targets.to(self.device)
        batch, steps = targets.shape
        if model.samples_per_step > 1:
            return self._forced_slots(per_sample, targets)
        noise = torch.zeros(batch, model.noise_per_step, device=self.device)
        state = model.initial_state(batch, self.device)
        logits = []
        for t in range(steps):
            state, _, step_logits = model.step(state, per_sample[:, t], noise, 1.0, forced=targets[:, t])
            logits.append(step_logits)
        return torch.stack(logits, dim=1)

    def _forced_slots(self, per_sample, targets):
        model = self.model
        batch, steps = targets.shape
        order = model.generation_order(steps).to(self.device)
        noise = torch.zeros(batch, order.shape[1], model.noise_per_step, device=self.device)
        state = model.start_state(batch, steps, self.device)
        logits = None
        for positions in order:
            active = positions >= 0
            index = positions.clamp(min=0)
            state, _, step_logits = model.step(state, per_sample[:, index], noise, 1.0, forced=targets[:, index])
            if logits is None:
                logits = step_logits.new_empty(batch, steps, *step_logits.shape[2:])
            logits[:, positions[active]] = step_logits[:, active]
        return logits

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        if self.model.samples_per_step > 1:
            raise StreamingError(f"streaming {self.model.name} is not implemented (several samples per step)")
        return ReferenceStream(self, batch, temperature)


class ReferenceStream(EngineStream):
    """The reference loop, its state kept between chunks."""

    def __init__(self, engine: ReferenceEngine, batch: int, temperature: float) -> None:
        self.model, self.device, self.temperature = engine.model, engine.device, temperature
        self.state = self.model.initial_state(batch, self.device)

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        per_sample = self.model.upsample(cond.to(self.device))
        noise = noise.to(self.device)
        out = torch.empty(cond.shape[0], per_sample.shape[1], dtype=torch.long, device=self.device)
        for t in range(per_sample.shape[1]):
            self.state, out[:, t], _ = self.model.step(self.state, per_sample[:, t], noise[:, t], self.temperature)
        return out
