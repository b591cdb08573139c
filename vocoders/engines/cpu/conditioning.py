"""The mel conditioning network in the compiled kernels (vocoders._native.cond_net), for the CPU engines.

`models.layers.ConditioningNetwork` in PyTorch costs a stream a dozen small calls per chunk, each
slow right after the sampling loop has run the caches cold; here one native call runs every layer
of a chunk's frames (the windows gathered from the mel in place). Each frame is its own packed
matrix-vector products, so its numbers do not depend on how many frames are computed together:
streaming and whole-utterance generation, which both call it through `Engine.conditioning`, get the
same features. They round differently from PyTorch's (another summation order, about 1e-7
relative); the engine's samples are held to the reference engine's as for the other products.
"""

from __future__ import annotations

import torch

from ...models.layers import ConditioningNetwork
from .packing import PackedMatrix, pack_matrix

MAX_BLOCKS = 8  # MAX_COND_BLOCKS in vocoders/csrc/kernels.h


class NativeConditioning:
    """A `ConditioningNetwork`'s weights packed once for the native loop: mel [B, n_mels, F + k - 1] -> [B, F, C]."""

    def __init__(self, net: ConditioningNetwork, native, isa: str = "auto") -> None:
        self.native, self.isa = native, isa
        with torch.no_grad():
            conv_in = net.conv_in.weight.detach().float()
            self.n_mels, self.kernel = conv_in.shape[1], conv_in.shape[2]
            self.channels = conv_in.shape[0]
            self.matrices: list[PackedMatrix] = [pack_matrix(conv_in.reshape(self.channels, -1), net.conv_in.bias)]
            for block in net.blocks:
                for conv in (block.conv1, block.conv2):
                    weight = conv.weight.detach().float().reshape(self.channels, -1)
                    self.matrices.append(pack_matrix(weight, conv.bias))
        self.spec = (
            self.n_mels,
            self.kernel,
            self.channels,
            self.matrices[0].spec(),
            tuple(m.spec() for m in self.matrices[1:]),
        )

    @staticmethod
    def supports(net) -> bool:
        """Whether `net` is the network this kernel implements (the plain ConditioningNetwork, few enough blocks)."""
        return type(net) is ConditioningNetwork and len(net.blocks) <= MAX_BLOCKS

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, F + kernel - 1] (any float32 CPU view with unit frame stride) -> features [B, F, C]."""
        batch, bands, length = mel.shape
        frames = length - self.kernel + 1
        if bands != self.n_mels or frames < 1:
            shape = tuple(mel.shape)
            raise ValueError(f"conditioning: mel of shape {shape} for {self.n_mels} bands, kernel {self.kernel}")
        if mel.dtype != torch.float32 or mel.device.type != "cpu" or mel.stride(2) != 1:
            mel = mel.detach().to("cpu", torch.float32).contiguous()
        out = torch.empty(batch, frames, self.channels)
        self.native.cond_net(
            self.spec, mel.data_ptr(), mel.stride(0), mel.stride(1), batch, frames, out.data_ptr(), self.isa
        )
        return out
