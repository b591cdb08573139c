"""Drawing classes from logits with noise drawn before the loop.

Every engine samples by inverting the CDF with one pre-drawn uniform number per draw, so two
engines given the same logits and the same noise pick the same class. The CDF is accumulated in
float64 so that tiny float32 differences between engines rarely move a boundary.
"""

from __future__ import annotations

import torch


def sample_categorical(logits: torch.Tensor, uniform: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Inverse-CDF sampling.

    logits: [B, K]; uniform: [B] in [0, 1); temperature 0 means argmax.
    Returns class indices [B] int64: the first k with cdf[k] > u * cdf[K-1].
    """
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    z = logits.double() / temperature
    weights = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    cdf = torch.cumsum(weights, dim=-1)
    threshold = uniform.double().unsqueeze(-1) * cdf[..., -1:]
    index = (cdf <= threshold).sum(dim=-1)
    return index.clamp_(max=logits.shape[-1] - 1)


def draw_noise(batch: int, steps: int, per_step: int, seed: int | None = None) -> torch.Tensor:
    """Uniform noise [batch, steps, per_step] float32 from a CPU generator (same on every device)."""
    generator = torch.Generator()
    generator.manual_seed(torch.seed() if seed is None else seed)
    return torch.rand(batch, steps, per_step, generator=generator)
