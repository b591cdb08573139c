"""Building blocks shared by the models: the mel conditioning network and the learned upsampler."""

from __future__ import annotations

import torch
from torch import nn

# Below this many rows BLAS takes another kernel (a matrix-vector one) whose sums round differently.
MIN_ROWS = 4


def linear_rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ weight [N, K]^T + bias [N] -> [..., N], each row the same whatever the row count.

    Streaming computes the conditioning a few frames at a time and must get the very numbers a
    whole utterance gets; a product of fewer than MIN_ROWS rows would not, so short inputs are
    padded with zero rows first.
    """
    shape = x.shape
    out = linear_2d(x.reshape(-1, shape[-1]), weight, bias)
    return out.reshape(*shape[:-1], out.shape[-1])


def linear_2d(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`linear_rows` of rows [M, K] -> [M, N], without the reshapes (a stream calls it per chunk)."""
    count = rows.shape[0]
    if weight.dim() != 2:
        weight = weight.reshape(weight.shape[0], -1)
    if count >= MIN_ROWS:
        return torch.nn.functional.linear(rows, weight, bias)
    rows = torch.cat([rows, rows.new_zeros(MIN_ROWS - count, rows.shape[1])])
    return torch.nn.functional.linear(rows, weight, bias)[:count]


class ResidualBlock1x1(nn.Module):
    """x + conv1x1(relu(conv1x1(x))), frame-major. x: [B, F, C] -> [B, F, C]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 1)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The block on rows [M, C] -> [M, C] (the same numbers as `forward`, fewer calls)."""
        inner = linear_2d(x, self.conv1.weight, self.conv1.bias).relu_()
        return linear_2d(inner, self.conv2.weight, self.conv2.bias).add_(x)  # x + ..., added in place


class ConditioningNetwork(nn.Module):
    """Frame-rate features from a log-mel.

    A non-causal convolution of width `kernel` without padding (so segments cut from a long mel
    see real neighbours), then residual 1x1 blocks. The convolutions run as row products over
    frames (`linear_rows`), so a frame's features do not depend on how many frames are computed
    together: a stream that computes them chunk by chunk gets the whole utterance's numbers.
    mel: [B, n_mels, F + kernel - 1] -> features [B, F, channels].
    """

    def __init__(self, n_mels: int, channels: int, kernel: int = 5, blocks: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"conditioning kernel must be odd, got {kernel}")
        self.context = (kernel - 1) // 2
        self.conv_in = nn.Conv1d(n_mels, channels, kernel)
        self.blocks = nn.Sequential(*[ResidualBlock1x1(channels) for _ in range(blocks)])

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        kernel = self.conv_in.kernel_size[0]
        windows = mel.unfold(2, kernel, 1).transpose(1, 2)  # [B, F, n_mels, kernel], as the conv weight
        batch, frames = windows.shape[:2]
        # Every layer works on the [B * F, C] rows: one product each, no reshapes or module calls between.
        x = linear_2d(windows.reshape(batch * frames, -1), self.conv_in.weight, self.conv_in.bias).relu_()
        for block in self.blocks:
            x = block.rows(x)
        return x.reshape(batch, frames, -1)


class FrameUpsampler(nn.Module):
    """Learned upsampling from frame rate to sample rate, shared across channels.

    A transposed convolution with stride `hop` and a kernel of `taps * hop`, the same kernel for
    every channel: sample p of frame i is sum_k weight[p, k] * frames[i + k] for k < taps. Sharing
    the kernel across channels keeps it linear and channel-independent, so any linear projection of
    the features commutes with it; the fast engines project at frame rate and interpolate per sample.
    Initialised to linear interpolation between frame centres.

    frames: [B, F + taps - 1, D] -> [B, F * hop, D].
    """

    def __init__(self, hop: int, taps: int = 3) -> None:
        super().__init__()
        if taps % 2 != 1:
            raise ValueError(f"upsampler taps must be odd, got {taps}")
        self.hop = hop
        self.taps = taps
        self.context = (taps - 1) // 2
        self.weight = nn.Parameter(self._linear_interpolation(hop, taps))

    @staticmethod
    def _linear_interpolation(hop: int, taps: int) -> torch.Tensor:
        if taps == 1:
            return torch.ones(hop, 1)  # nearest-frame repetition
        weight = torch.zeros(hop, taps)
        centre = (taps - 1) // 2
        for p in range(hop):
            offset = (p + 0.5) / hop - 0.5  # position relative to this frame's centre, in frames
            if offset < 0:
                weight[p, centre - 1] = -offset
                weight[p, centre] = 1.0 + offset
            else:
                weight[p, centre] = 1.0 - offset
                weight[p, centre + 1] = offset
        return weight

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, length, channels = frames.shape
        num_frames = length - self.taps + 1
        windows = frames.unfold(1, self.taps, 1)  # [B, F, D, taps]
        out = torch.einsum("bfdk,pk->bfpd", windows, self.weight.to(frames.dtype))
        return out.reshape(batch, num_frames * self.hop, channels)
