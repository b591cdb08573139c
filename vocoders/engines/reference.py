"""The reference engine: a plain PyTorch loop over the model's `step`, one step at a time.

This is the oracle every fast engine is tested against, and the speed of the popular public
implementations (a Python loop of small PyTorch ops per sample). Models that produce several samples
per step (see `VocoderModel.generation_order`) run through the same loop with a slot axis.
"""

from __future__ import annotations

import torch

from ..models.subscale import SubscaleWaveRNN
from .base import Engine, EngineStream, SampleWindow, StreamingError


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
        if isinstance(self.model, SubscaleWaveRNN):
            return SubscaleReferenceStream(self, batch, temperature)
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


class SubscaleReferenceStream(EngineStream):
    """The loop of `_generate_slots` over a stream of Subscale WaveRNN (see docs/streaming.md).

    Each chunk runs the steps its conditioning allows (`model.stream_steps`) and returns the samples
    made up to the first one still missing (`model.stream_made`); `finish` runs the rest of the
    order with the end where it fell. The state grows with the signal (`model.extend_state`); the
    per-sample conditioning, noise and samples are kept from the first sample not yet returned on.
    Idle slots read sample 0's conditioning and noise, as `_generate_slots`'s clamped index does.
    """

    def __init__(self, engine: ReferenceEngine, batch: int, temperature: float) -> None:
        model: SubscaleWaveRNN = engine.model
        self.model, self.device, self.temperature = model, engine.device, temperature
        self.state = model.start_state(batch, 0, self.device)
        self.step = 0
        self.slots = torch.arange(model.subscale, device=self.device)
        self.window: SampleWindow | None = None  # made at the first chunk, when D is known
        self.first: tuple[torch.Tensor, torch.Tensor] | None = None  # sample 0's conditioning and noise

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        Engine.check_inputs(self.model, cond, noise)
        per_sample = self.model.upsample(cond.to(self.device))
        noise = noise.to(self.device)
        if self.window is None:
            batch, _, width = per_sample.shape
            self.window = SampleWindow(
                batch, self.device, cond=((width,), per_sample.dtype), noise=(noise.shape[2:], noise.dtype),
                samples=((), torch.long),
            )  # fmt: skip
            self.first = per_sample[:, :1].clone(), noise[:, :1].clone()
        self.window.append(cond=per_sample, noise=noise)
        return self._advance(ended=False)

    @torch.inference_mode()
    def finish(self) -> torch.Tensor | None:
        return None if self.window is None else self._advance(ended=True)

    def _advance(self, ended: bool) -> torch.Tensor:
        model, window, state = self.model, self.window, self.state
        known, origin = window.end, window.origin
        model.extend_state(state, known)
        # Row t of `generation_order(known)` (the same for every length from `known` on, as long as
        # the steps stay within `stream_steps`); at the end, its last row is the last step.
        last = model.generation_order(known).shape[0] if ended else model.stream_steps(known, ended=False)
        B, F = model.subscale, model.horizon
        positions = -(-known // B)
        cond, noise, out = window.rows("cond"), window.rows("noise"), window.rows("samples")
        first_cond, first_noise = self.first
        for t in range(self.step, last):
            i = t - self.slots * (F + 1)
            index = B * i + self.slots
            active = (i >= 0) & (i < positions) & (index < known)
            rows = torch.where(active, index - origin, 0)
            cond_t = torch.where(active[:, None], cond[:, rows], first_cond)
            noise_t = torch.where(active[:, None], noise[:, rows], first_noise)
            state, samples, _ = model.step(state, cond_t, noise_t, self.temperature)
            out[:, rows[active]] = samples[:, active]
        self.state, self.step = state, max(self.step, last)
        made = model.stream_made(self.step, known) - origin
        result = out[:, :made].clone()
        window.drop(made)
        return result
