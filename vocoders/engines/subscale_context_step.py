"""The subscale context CNN advanced by one step for all B sub-tensors in a handful of batched products.

Same arithmetic as `SubscaleContext.advance` (the reference), arranged for speed: each layer's weights
are laid out once as one [K * inputs, C] matrix per sub-tensor, so a layer is one gather of its K taps
and one batched product over the B sub-tensors (torch.baddbmm), instead of an einsum per tap.
"""

from __future__ import annotations

import torch

from ..models.subscale_context import SubscaleContext


class ContextStepper:
    """Incremental evaluation of `context` over the buffers of `SubscaleContext.begin`."""

    def __init__(self, context: SubscaleContext) -> None:
        B, C, K, D = context.factor, context.channels, context.kernel, context.out_channels
        self.context = context
        with torch.no_grad():
            w_in = context.masked_input_weight().float().reshape(B, C, B, 2, K)
            self.w_in = w_in.permute(0, 4, 2, 3, 1).reshape(B, K * B * 2, C).contiguous()  # [reader, (k, src, v), c]
            self.b_in = context.conv_in.bias.float().reshape(B, 1, C).clone()
            self.w_layers = [
                layer.weight.float().reshape(B, C, C, K).permute(0, 3, 2, 1).reshape(B, K * C, C).contiguous()
                for layer in context.layers
            ]  # [sub-tensor, (k, c_in), c_out]
            self.b_layers = [layer.bias.float().reshape(B, 1, C).clone() for layer in context.layers]
            self.w_out = context.conv_out.weight.float().reshape(B, D, C).transpose(1, 2).contiguous()  # [B, C, D]
            self.b_out = context.conv_out.bias.float().reshape(B, 1, D).clone()
        back = torch.arange(K - 1, -1, -1).unsqueeze(1)  # tap k reads coordinate - (K - 1 - k) * dilation
        self.offsets = [back * d for d in [1, *context.dilations]]  # the input conv reads with dilation 1
        self.sub = torch.arange(B)

    def advance(self, buffers: dict, coordinate: torch.Tensor) -> torch.Tensor:
        """Every layer at `coordinate` [B] (one per sub-tensor) -> context [batch, B, D]; stores live ones."""
        ctx = self.context
        B, pad = ctx.factor, ctx.lookback
        end = buffers["positions"] + ctx.horizon
        live = (coordinate >= 0) & (coordinate < end)
        at = coordinate.clamp(0, end - 1) + pad
        store_at, store_sub = at[live], self.sub[live]
        batch = buffers["inputs"].shape[0]
        x = buffers["inputs"][:, at - self.offsets[0]]  # [b, K, B(reader), B(source), 2]
        x = x.permute(2, 0, 1, 3, 4).reshape(B, batch, -1)
        h = torch.relu(torch.baddbmm(self.b_in, x, self.w_in))  # [B, b, C]
        hidden = buffers["hidden"]
        hidden[0][:, store_at, store_sub] = h.transpose(0, 1)[:, live]
        for n, (w, bias) in enumerate(zip(self.w_layers, self.b_layers, strict=True)):
            x = hidden[n][:, at - self.offsets[n + 1], self.sub]  # [b, K, B, C]
            x = x.permute(2, 0, 1, 3).reshape(B, batch, -1)
            h = h + torch.relu(torch.baddbmm(bias, x, w))
            hidden[n + 1][:, store_at, store_sub] = h.transpose(0, 1)[:, live]
        return torch.baddbmm(self.b_out, h, self.w_out).transpose(0, 1)  # [b, B, D]
