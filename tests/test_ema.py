"""The weight average: its formula, its warm-up, and that it copies buffers and refuses bad decays."""

import pytest
import torch
from torch import nn

from vocoders.ema import WeightAverage


class WithBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("count", torch.zeros(()))


def test_update_follows_the_formula_with_warmup():
    torch.manual_seed(0)
    model = WithBuffer()
    ema = WeightAverage(model, decay=0.9, warmup=True)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in (1, 2, 3, 200):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.count += 1
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))
        for name, p in model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach()
        expected["count"] = model.count.clone()
    assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(200) == 0.9
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-6)
    assert ema.state_dict().keys() == model.state_dict().keys()
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_without_warmup_the_decay_is_constant_and_reset_copies():
    model = nn.Linear(2, 2)
    ema = WeightAverage(model, decay=0.5, warmup=False)
    assert ema.decay_at(1) == ema.decay_at(10_000) == 0.5
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(model, 1)
    torch.testing.assert_close(ema.model.weight, before + 1.0)
    ema.reset(model)
    torch.testing.assert_close(ema.model.weight, model.weight.detach())


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.1])
def test_bad_decay_is_refused(decay):
    with pytest.raises(ValueError, match="EMA decay"):
        WeightAverage(nn.Linear(1, 1), decay)


def test_masks_keep_pruned_weights_exactly_zero_in_the_average():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    ema = WeightAverage(model, decay=0.9)
    mask = (torch.rand(4, 4) > 0.5).float()
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.add_(torch.randn(4, 4)).mul_(mask)
        ema.update(model, step, {"weight": mask})
    assert torch.all(ema.model.weight[mask == 0] == 0) and torch.all(ema.model.weight[mask == 1] != 0)
    assert torch.all(ema.model.bias != 0)
