"""Folding a signal into interleaved sub-tensors, the staggered generation order, and the masked
dilated CNN that gives each sub-tensor the context of the sub-tensors before it (Subscale WaveRNN).

Notation: B sub-tensors (the subscale factor), each of N = ceil(T / B) positions; sample u[B*i + s]
is position i of sub-tensor s. Sample (s, i) may depend on its own sub-tensor's past (the recurrent
core carries that) and on sub-tensors z < s at positions k <= i + F (F: the future horizon). Sub-tensor
s starts F + 1 steps after sub-tensor s - 1, so at step t it produces position i_s = t - s * (F + 1),
and everything it depends on came out at earlier steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold(x: torch.Tensor, factor: int, dim: int = -1, fill: float | int = 0) -> torch.Tensor:
    """Interleaved folding along `dim`: [..., T, ...] -> [..., factor, ceil(T / factor), ...].

    out[..., s, i, ...] = x[..., factor * i + s, ...]; the tail is padded with `fill`.
    """
    dim = dim % x.dim()
    x = x.movedim(dim, -1)
    length = x.shape[-1]
    positions = -(-length // factor)
    x = F.pad(x, (0, positions * factor - length), value=fill)
    x = x.reshape(*x.shape[:-1], positions, factor).transpose(-1, -2)
    return x.movedim((-2, -1), (dim, dim + 1))


def unfold(folded: torch.Tensor, length: int, dim: int = -2) -> torch.Tensor:
    """Inverse of `fold`: [..., factor, N, ...] (sub-tensor axis at `dim`) -> [..., length, ...]."""
    dim = dim % folded.dim()
    x = folded.movedim((dim, dim + 1), (-2, -1))
    x = x.transpose(-1, -2).reshape(*x.shape[:-2], -1)[..., :length]
    return x.movedim(-1, dim)


def subscale_order(num_samples: int, factor: int, horizon: int) -> torch.Tensor:
    """Staggered generation order: [N + (factor - 1) * (horizon + 1), factor] sample positions, -1 idle.

    Row t holds, for each sub-tensor s, the sample it produces at step t: factor * i + s with
    i = t - s * (horizon + 1), or -1 when i is outside [0, N) or the position is past the end.
    """
    positions = -(-num_samples // factor)
    steps = positions + (factor - 1) * (horizon + 1)
    sub = torch.arange(factor)
    i = torch.arange(steps).unsqueeze(1) - sub * (horizon + 1)  # [S, B]
    order = factor * i + sub
    order = torch.where((i >= 0) & (i < positions) & (order < num_samples), order, -1)
    busy = (order >= 0).any(dim=1).nonzero()
    return order[: int(busy[-1]) + 1] if len(busy) else order[:0]


class SubscaleContext(nn.Module):
    """Masked dilated CNN over the folded signal, one group of channels per sub-tensor.

    The first convolution (width `kernel`) lets group s read the input channels of sub-tensors
    z < s only (a block-strictly-lower-triangular mask); the dilated residual layers that follow
    are grouped, so each group stays with its own sub-tensor's view; a grouped 1x1 convolution gives
    each sub-tensor `out_channels` features (its bias doubles as a sub-tensor embedding). All
    convolutions are causal in time; the output for position i is read at coordinate i + horizon,
    so it sees inputs k <= i + horizon and, over the receptive field, back to
    i + horizon + 1 - receptive_field.

    values: [batch, B, N, 2] (scaled coarse and fine per sample; zeros past the end) ->
    context [batch, B, N, out_channels].
    """

    def __init__(
        self,
        factor: int,
        horizon: int,
        channels: int,
        out_channels: int,
        kernel: int = 2,
        dilations: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
    ) -> None:
        super().__init__()
        if factor < 1 or horizon < 0 or channels < 1 or kernel < 1:
            raise ValueError(f"bad subscale context sizes: B={factor}, F={horizon}, C={channels}, K={kernel}")
        self.factor, self.horizon, self.channels, self.kernel = factor, horizon, channels, kernel
        self.out_channels = out_channels
        self.dilations = [int(d) for d in dilations]
        width = factor * channels
        self.conv_in = nn.Conv1d(2 * factor, width, kernel)
        mask = torch.zeros(factor, channels, factor, 2, kernel)
        for s in range(factor):
            mask[s, :, :s] = 1.0  # group s reads sub-tensors z < s
        self.register_buffer("input_mask", mask.reshape(width, 2 * factor, kernel), persistent=False)
        self.layers = nn.ModuleList(nn.Conv1d(width, width, kernel, dilation=d, groups=factor) for d in self.dilations)
        self.conv_out = nn.Conv1d(width, factor * out_channels, 1, groups=factor)

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel - 1) * (1 + sum(self.dilations))

    @property
    def lookback(self) -> int:
        """How far back (in positions) one layer reads at most."""
        return (self.kernel - 1) * max([1, *self.dilations])

    def masked_input_weight(self) -> torch.Tensor:
        return self.conv_in.weight * self.input_mask

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        batch, factor, positions, _ = values.shape
        x = values.permute(0, 1, 3, 2).reshape(batch, 2 * factor, positions)
        x = F.pad(x, (self.kernel - 1, self.horizon))  # causal start, zeros past the end
        h = torch.relu(F.conv1d(x, self.masked_input_weight(), self.conv_in.bias))
        for layer, d in zip(self.layers, self.dilations, strict=True):
            h = h + torch.relu(layer(F.pad(h, ((self.kernel - 1) * d, 0))))
        out = self.conv_out(h)[..., self.horizon :]  # coordinate i + horizon holds position i
        return out.reshape(batch, factor, self.out_channels, positions).transpose(2, 3)

    # ---- incremental evaluation (generation) ---------------------------------------------------
    def begin(self, batch: int, positions: int, device: torch.device | str) -> dict[str, object]:
        """History buffers for generating `positions` positions per sub-tensor.

        inputs [batch, pad + N + F, B, 2] and one hidden [batch, pad + N + F, B, C] per layer, indexed
        by coordinate + pad; zeros stand for the causal padding and for samples past the end.
        """
        pad = self.lookback
        length = pad + positions + self.horizon
        return {
            "positions": positions,
            "inputs": torch.zeros(batch, length, self.factor, 2, device=device),
            "hidden": [
                torch.zeros(batch, length, self.factor, self.channels, device=device)
                for _ in range(1 + len(self.layers))
            ],
        }

    def extend(self, buffers: dict, positions: int) -> None:
        """Let the buffers of `begin` hold `positions` positions per sub-tensor (a stream's grow with
        the signal; they keep what they hold, and the new coordinates read zeros)."""
        if positions < buffers["positions"]:
            raise ValueError(f"the buffers hold {buffers['positions']} positions; they cannot shrink to {positions}")
        buffers["positions"] = positions
        length = self.lookback + positions + self.horizon
        have = buffers["inputs"].shape[1]
        if length > have:
            grow = max(length, 2 * have) - have

            def extended(buffer: torch.Tensor) -> torch.Tensor:
                return torch.cat([buffer, buffer.new_zeros(buffer.shape[0], grow, *buffer.shape[2:])], dim=1)

            buffers["inputs"] = extended(buffers["inputs"])
            buffers["hidden"] = [extended(hidden) for hidden in buffers["hidden"]]

    def write(self, buffers: dict, position: torch.Tensor, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Record generated samples: position [B] per sub-tensor, values [batch, B, 2], valid [B] bool."""
        sub = torch.arange(self.factor, device=position.device)[valid]
        buffers["inputs"][:, self.lookback + position[valid], sub] = values[:, valid]

    def advance(self, buffers: dict, coordinate: torch.Tensor) -> torch.Tensor:
        """Compute every layer at `coordinate` [B] (one per sub-tensor) and return the output [batch, B, out].

        A sub-tensor whose coordinate lies outside [0, N + F) is computed on clamped indices and
        nothing is stored for it.
        """
        pad, kernel, factor = self.lookback, self.kernel, self.factor
        live = (coordinate >= 0) & (coordinate < buffers["positions"] + self.horizon)
        at = coordinate.clamp(0, buffers["positions"] + self.horizon - 1) + pad
        sub = torch.arange(factor, device=coordinate.device)
        w_in = self.masked_input_weight().reshape(factor, self.channels, factor, 2, kernel)
        inputs = buffers["inputs"]
        acc = self.conv_in.bias.reshape(factor, self.channels)
        for tap in range(kernel):
            x = inputs[:, at - (kernel - 1 - tap)]  # [batch, B(reader), B(source), 2]
            acc = acc + torch.einsum("bszk,sczk->bsc", x, w_in[..., tap])
        h = torch.relu(acc)
        hidden = buffers["hidden"]
        hidden[0][:, at[live], sub[live]] = h[:, live]
        for n, (layer, d) in enumerate(zip(self.layers, self.dilations, strict=True)):
            w = layer.weight.reshape(factor, self.channels, self.channels, kernel)
            acc = layer.bias.reshape(factor, self.channels)
            for tap in range(kernel):
                x = hidden[n][:, at - d * (kernel - 1 - tap), sub]  # [batch, B, C]
                acc = acc + torch.einsum("bsk,sck->bsc", x, w[..., tap])
            h = h + torch.relu(acc)
            hidden[n + 1][:, at[live], sub[live]] = h[:, live]
        w_out = self.conv_out.weight.reshape(factor, self.out_channels, self.channels)
        return torch.einsum("bsc,soc->bso", h, w_out) + self.conv_out.bias.reshape(factor, self.out_channels)
