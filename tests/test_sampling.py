"""Inverse-CDF sampling with LPCNet's probability floor."""

import torch

from vocoders.sampling import sample_categorical


def test_the_floor_keeps_classes_below_it_out_of_every_draw():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.002, 0.198]]))
    uniform = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    draws = sample_categorical(logits.expand(4000, 4), uniform, 1.0, floor=0.003)
    assert (draws != 2).all() and set(draws.tolist()) == {0, 1, 3}
    unfloored = sample_categorical(logits.expand(4000, 4), uniform)
    assert (unfloored == 2).any()
    # renormalised after the subtraction: 0.497 : 0.297 : 0.195 of the rest
    assert abs(float((draws == 0).float().mean()) - 0.497 / 0.989) < 0.03
