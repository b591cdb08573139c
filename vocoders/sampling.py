"""Drawing classes from logits with noise drawn before the loop.

Every engine samples by inverting the CDF with one pre-drawn uniform number per draw, so two
engines given the same logits and the same noise pick the same class. The CDF is accumulated in
float64 so that tiny float32 differences between engines rarely move a boundary.
"""

from __future__ import annotations

import torch


def sample_categorical(
    logits: torch.Tensor, uniform: torch.Tensor, temperature: float | torch.Tensor = 1.0, floor: float = 0.0
) -> torch.Tensor:
    """Inverse-CDF sampling.

    logits: [B, K]; uniform: [B] in [0, 1); temperature: a float (0 means argmax) or one positive
        float64 per row [B].
    floor: LPCNet's sampling floor, a probability subtracted from every class (those below it never
        drawn, the rest renormalised), which keeps rare far-off classes (clicks) out; 0 = off,
        else in (0, 1 / K).
    Returns class indices [B] int64: the first k with cdf[k] > u * cdf[K-1].
    """
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(torch.float64).unsqueeze(-1)
    elif temperature <= 0.0:
        return logits.argmax(dim=-1)
    z = logits.double() / temperature
    weights = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    cdf = torch.cumsum(weights, dim=-1)
    if floor > 0.0:  # normalised by the running sum's last value, as the compiled loops do
        cdf = torch.cumsum((weights / cdf[..., -1:] - floor).clamp_(min=0.0), dim=-1)
    threshold = uniform.double().unsqueeze(-1) * cdf[..., -1:]
    index = (cdf <= threshold).sum(dim=-1)
    return index.clamp_(max=logits.shape[-1] - 1)


# Noise is drawn in blocks of this many steps, each from its own generator, so the noise of a step
# depends on the seed and its position only: a stream that draws it chunk by chunk gets the same.
NOISE_BLOCK = 4096


def draw_noise(batch: int, steps: int, per_step: int, seed: int | None = None, start: int = 0) -> torch.Tensor:
    """Uniform noise [batch, steps, per_step] float32 for steps [start, start + steps) (same on every device).

    The values of a step depend on (seed, batch, per_step, its position), not on `steps` or `start`,
    so consecutive calls give the slices of one long draw.
    """
    source = NoiseSource(batch, per_step, seed)
    source.position = start
    return source.take(steps)


def _noise_block(batch: int, per_step: int, seed: int, block: int) -> torch.Tensor:
    generator = torch.Generator()
    generator.manual_seed((int(seed) * 1_000_003 + block * 0x9E3779B1) % (1 << 63))
    return torch.rand(batch, NOISE_BLOCK, per_step, generator=generator)


class NoiseSource:
    """The noise of one seed, step by step: `take(n)` returns the next n steps of `draw_noise(..., seed)`."""

    def __init__(self, batch: int, per_step: int, seed: int | None = None) -> None:
        self.batch, self.per_step = batch, per_step
        self.seed = torch.seed() if seed is None else int(seed)
        self.position = 0
        self._block: tuple[int, torch.Tensor] | None = None  # the last block drawn, reused by short chunks

    def take(self, steps: int) -> torch.Tensor:
        block, offset = divmod(self.position, NOISE_BLOCK)
        if offset + steps <= NOISE_BLOCK and self._block is not None and self._block[0] == block:
            self.position += steps  # a short chunk inside the last block: one copy (a stream, per chunk)
            return self._block[1][:, offset : offset + steps].clone(memory_format=torch.contiguous_format)
        out = torch.empty(self.batch, steps, self.per_step)
        done = 0
        while done < steps:
            block, offset = divmod(self.position, NOISE_BLOCK)
            if self._block is None or self._block[0] != block:
                self._block = (block, _noise_block(self.batch, self.per_step, self.seed, block))
            count = min(steps - done, NOISE_BLOCK - offset)
            out[:, done : done + count] = self._block[1][:, offset : offset + count]
            done += count
            self.position += count
        return out
