"""Checks shared by the CUDA engines' tests: logits against a reference, draws from two sets of logits."""

import torch

from vocoders.sampling import sample_categorical


def max_logit_error(logits: torch.Tensor, parallel: torch.Tensor) -> float:
    assert torch.equal(torch.isinf(logits), torch.isinf(parallel)), "padding classes differ"
    finite = torch.isfinite(parallel)
    return float((logits[finite] - parallel[finite]).abs().max())


def forced_draw_agreement(logits: torch.Tensor, parallel: torch.Tensor, noise: torch.Tensor) -> float:
    """Fraction of draws (both halves, every step) that pick the same class from the two logits."""
    same = []
    for half in range(2):
        a = sample_categorical(logits[:, :, half].flatten(0, 1).cpu(), noise[..., half].flatten())
        b = sample_categorical(parallel[:, :, half].flatten(0, 1), noise[..., half].flatten())
        same.append(a == b)
    return float(torch.cat(same).float().mean())
