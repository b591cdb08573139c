"""WaveRNN weights laid out once for the fast engines, and the conditioning they consume.

The reference step computes `W_cond @ upsample(cond)[t]` for every sample. The upsampler is linear
and shared across channels, so projecting at frame rate first and interpolating the projection gives
the same per-sample input (up to float32 rounding): `upsample(cond @ W_cond^T) + b_ih`. The bias is added
after interpolation because a learned upsampler's rows need not sum to one.

Layout (H hidden units, half = H / 2, gate rows in PyTorch order r, z, n):
    recurrent [3H, H]            R, in the chosen weight dtype
    bias_hh [3H]                 float32
    w_prev [2, 3H]               the input columns of c_{t-1} and f_{t-1}, as rows (float32)
    w_now [3H]                   column for c_t, zero on the coarse rows (float32)
    out1 [O, half], out2 [Kc, O], out3 [O, half], out4 [Kf, O] in the weight dtype; biases float32
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...models.layers import linear_rows
from ...models.wavernn import COLUMN_C_NOW, COLUMN_C_PREV, COLUMN_F_PREV, FIRST_COND_COLUMN, WaveRNN

WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def weight_dtype(name: str | torch.dtype) -> torch.dtype:
    """'float32' | 'bfloat16' | 'float16' (or the torch dtype) -> torch dtype; anything else is refused."""
    if isinstance(name, torch.dtype):
        if name not in WEIGHT_DTYPES.values():
            raise ValueError(f"weight dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {name}")
        return name
    aliases = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
    key = aliases.get(str(name), str(name))
    if key not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {name!r}")
    return WEIGHT_DTYPES[key]


@dataclass
class WaveRNNPack:
    """A WaveRNN's step weights on one device. Build with `WaveRNNPack.from_model`."""

    hidden: int
    half: int
    out_hidden: int
    coarse_classes: int
    fine_classes: int
    fine_bits: int
    silence: int
    hop: int
    recurrent: torch.Tensor
    bias_hh: torch.Tensor
    w_prev: torch.Tensor
    w_now: torch.Tensor
    w_cond: torch.Tensor
    bias_ih: torch.Tensor
    upsample_weight: torch.Tensor
    out1: torch.Tensor
    bias1: torch.Tensor
    out2: torch.Tensor
    bias2: torch.Tensor
    out3: torch.Tensor
    bias3: torch.Tensor
    out4: torch.Tensor
    bias4: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_model(
        cls, model: WaveRNN, device: torch.device | str, dtype: str | torch.dtype = "float32"
    ) -> WaveRNNPack:
        wdtype = weight_dtype(dtype)
        dev = torch.device(device)

        def weights(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, wdtype).contiguous()

        def exact(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, torch.float32).contiguous()

        w_ih = model.masked_weight_ih()
        return cls(
            hidden=model.hidden_size,
            half=model.half,
            out_hidden=model.out_hidden,
            coarse_classes=model.coarse_classes,
            fine_classes=model.fine_classes,
            fine_bits=model.fine_bits,
            silence=model.silence,
            hop=model.hop_length,
            recurrent=weights(model.gru_weight_hh),
            bias_hh=exact(model.gru_bias_hh),
            w_prev=exact(w_ih[:, [COLUMN_C_PREV, COLUMN_F_PREV]].t()),
            w_now=exact(w_ih[:, COLUMN_C_NOW]),
            w_cond=exact(w_ih[:, FIRST_COND_COLUMN:]),
            bias_ih=exact(model.gru_bias_ih),
            upsample_weight=exact(model.upsampler.weight),
            out1=weights(model.O1.weight),
            bias1=exact(model.O1.bias),
            out2=weights(model.O2.weight),
            bias2=exact(model.O2.bias),
            out3=weights(model.O3.weight),
            bias3=exact(model.O3.bias),
            out4=weights(model.O4.weight),
            bias4=exact(model.O4.bias),
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.recurrent.dtype

    @property
    def taps(self) -> int:
        return self.upsample_weight.shape[1]

    @property
    def classes(self) -> int:
        return max(self.coarse_classes, self.fine_classes)

    def frame_projection(self, cond: torch.Tensor) -> torch.Tensor:
        """Frame-rate conditioning [B, F + taps - 1, D] -> its input-gate projection [B, F + taps - 1, 3H] (float32)."""
        return linear_rows(cond.to(self.w_cond.device, torch.float32), self.w_cond)  # any frame count: same rows

    def sample_inputs(self, projection: torch.Tensor, first_frame: int, frames: int) -> torch.Tensor:
        """Per-sample input-gate terms of `frames` frames starting at `first_frame`.

        projection: [B, F + taps - 1, 3H] from `frame_projection`; frames past its end count as zeros
        (padding for a last, partial chunk). Returns [B, frames * hop, 3H] float32 including b_ih.
        """
        batch, length, width = projection.shape
        need = frames + self.taps - 1
        window = projection[:, first_frame : first_frame + need]
        if window.shape[1] < need:
            pad = window.new_zeros(batch, need - window.shape[1], width)
            window = torch.cat([window, pad], dim=1)
        windows = window.unfold(1, self.taps, 1)  # [B, frames, 3H, taps]
        per_sample = torch.einsum("bfck,pk->bfpc", windows, self.upsample_weight)
        return per_sample.reshape(batch, frames * self.hop, width) + self.bias_ih
