"""Subscale (Batch) WaveRNN (Kalchbrenner et al. 2018, section 5): B samples per step.

The signal is folded into B interleaved sub-tensors (sample B*i + s is position i of sub-tensor s,
see `subscale_context.fold`). Every sub-tensor runs the same dual-softmax WaveRNN core (`WaveRNN`,
reused as is) over its own N = T / B positions; what the core sees of the other sub-tensors comes
through a masked dilated CNN (`SubscaleContext`) over the folded signal: sub-tensors z < s, up to F
positions into the future. The context is added to the mel conditioning of each sample:

    cond(s, i) = upsample(mel)[B*i + s] + context(s, i)

Generation is staggered (`subscale_order`): sub-tensor s produces position t - s*(F + 1) at step t,
so after (B - 1)(F + 1) steps all B sub-tensors advance together, one sample each per step, and the
core runs as one batch of B sequences.

Training is teacher forcing over the folded targets: the context network runs in parallel over all
positions, the core's fused GRU over the B sequences of each segment.

Streaming (docs/streaming.md#subscale-wavernn) runs the same order as the conditioning arrives:
`stream_steps` says how far it can go, `stream_made` which samples are then complete, and
`extend_state` grows the state of `start_state` with the signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..features import MelConfig
from .base import StepCost, VocoderModel
from .subscale_context import SubscaleContext, fold, subscale_order, unfold
from .wavernn import WaveRNN, _stack_logits


def default_dilations(horizon: int) -> list[int]:
    """Doubling dilations up to the first power of two >= horizon (receptive field about 2F + 2)."""
    dilations = [1]
    while dilations[-1] < max(1, horizon):
        dilations.append(dilations[-1] * 2)
    return dilations


@dataclass
class SubscaleState:
    """Generation state: the step counter, the core's state over batch * B sequences, context buffers."""

    step: int
    core: tuple[torch.Tensor, torch.Tensor]
    context: dict
    batch: int
    num_samples: int


class SubscaleWaveRNN(VocoderModel):
    """Subscale WaveRNN.

    Args:
        mel: the mel contract.
        subscale: B, the number of sub-tensors and of samples per step (paper: 16).
        horizon: F, how many positions of the earlier sub-tensors' future each sample sees (paper: 64-128).
        context_channels: channels per sub-tensor in the context network.
        context_kernel: width of its causal convolutions.
        context_dilations: dilations of its residual layers (default: 1, 2, 4, ... up to >= horizon).
        hidden_size, cond_channels, cond_kernel, cond_blocks, upsample_taps, out_hidden, bits, fine_bits,
            encoding, preemphasis: the WaveRNN core's (see `WaveRNN`).
    """

    name = "subscale_wavernn"
    noise_per_step = 2  # per sample, as the core draws coarse then fine

    def __init__(
        self,
        mel: MelConfig | dict[str, Any] | None = None,
        subscale: int = 16,
        horizon: int = 64,
        context_channels: int = 16,
        context_kernel: int = 2,
        context_dilations: list[int] | None = None,
        hidden_size: int = 896,
        cond_channels: int = 128,
        cond_kernel: int = 5,
        cond_blocks: int = 3,
        upsample_taps: int = 3,
        out_hidden: int | None = None,
        bits: int = 16,
        fine_bits: int | None = None,
        encoding: str = "linear",
        preemphasis: float = 0.0,
    ) -> None:
        super().__init__(mel)
        if subscale < 1:
            raise ValueError(f"subscale must be >= 1, got {subscale}")
        if horizon < 0:
            raise ValueError(f"horizon must be >= 0, got {horizon}")
        self.subscale = subscale
        self.horizon = horizon
        self.core = WaveRNN(
            self.mel_config,
            hidden_size,
            cond_channels,
            cond_kernel,
            cond_blocks,
            upsample_taps,
            out_hidden,
            bits,
            fine_bits,
            encoding,
            preemphasis,
        )
        dilations = list(context_dilations) if context_dilations is not None else default_dilations(horizon)
        self.context = SubscaleContext(subscale, horizon, context_channels, cond_channels, context_kernel, dilations)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {
            "subscale": self.subscale,
            "horizon": self.horizon,
            "context_channels": self.context.channels,
            "context_kernel": self.context.kernel,
            "context_dilations": list(self.context.dilations),
            **self.core.kwargs,
        }

    @property
    def samples_per_step(self) -> int:  # type: ignore[override]
        return self.subscale

    @property
    def lookahead_frames(self) -> int:
        """Mel context plus the stagger, as a stream runs the order (`stream_steps`): sample B p + s is
        made at step p + s (F + 1), which needs the conditioning of sub-tensor 0's sample there,
        B (p + s (F + 1)); the last sub-tensor's samples wait longest, (B - 1)(B (F + 1) - 1) samples
        (`stream_lag`), rounded up to frames (exact when hop is a multiple of B)."""
        return self.mel_context + -(-self.stream_lag // self.hop_length)

    @property
    def stream_lag(self) -> int:
        """Samples of conditioning a stream needs past a sample before it has made every sample up to it."""
        B, F = self.subscale, self.horizon
        return (B - 1) * (B * (F + 1) - 1)

    @property
    def decode_context(self) -> int:
        return self.core.decode_context

    @property
    def mel_context(self) -> int:
        return self.core.mel_context

    @property
    def upsample_context(self) -> int:
        return self.core.upsample_context

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.core.encode(audio)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return self.core.decode(samples)

    def conditioning(self, mel: torch.Tensor) -> torch.Tensor:
        return self.core.conditioning(mel)

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        return self.core.upsample(cond)

    def context_values(self, samples: torch.Tensor) -> torch.Tensor:
        """Sample classes [...] -> what the context network reads of them: [..., 2] (scaled coarse, fine)."""
        coarse, fine = self.core.split(samples)
        return torch.stack([self.core.scale_coarse(coarse), self.core.scale_fine(fine)], dim=-1)

    # ---- teacher forcing ---------------------------------------------------------------------
    def forward_logits(self, mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, 2, classes] (coarse, fine), in sample order."""
        coarse, fine = self._teacher_forced(mel, targets)
        return _stack_logits(coarse, fine)

    def _teacher_forced(self, mel: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.upsample(self.conditioning(mel))  # [b, T, D]
        batch, length = targets.shape
        if cond.shape[1] != length:
            raise ValueError(f"mel gives {cond.shape[1]} samples of conditioning but the targets have {length}")
        B = self.subscale
        folded = fold(targets, B, fill=self.core.silence)  # [b, B, N]
        valid = fold(torch.ones_like(targets, dtype=torch.bool), B, fill=False)
        values = self.context_values(folded) * valid.unsqueeze(-1)  # zeros past the end, as in generation
        context = self.context(values.to(cond.dtype))  # [b, B, N, D]
        core_cond = fold(cond, B, dim=1) + context  # [b, B, N, D]
        coarse, fine = self.core.teacher_forced_core(core_cond.flatten(0, 1), folded.flatten(0, 1))
        positions = folded.shape[-1]
        coarse = unfold(coarse.reshape(batch, B, positions, -1), length, dim=1)
        fine = unfold(fine.reshape(batch, B, positions, -1), length, dim=1)
        return coarse, fine

    def loss(self, mel: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        targets = self.encode(audio)
        coarse_logits, fine_logits = self._teacher_forced(mel, targets)
        coarse, fine = self.core.split(targets)
        coarse_loss = F.cross_entropy(coarse_logits.float().flatten(0, 1), coarse.flatten())
        fine_loss = F.cross_entropy(fine_logits.float().flatten(0, 1), fine.flatten())
        loss = coarse_loss + fine_loss
        return loss, {"coarse": float(coarse_loss.detach()), "fine": float(fine_loss.detach())}

    def step_cost(self) -> StepCost:
        """One staggered step: B samples, one per sub-tensor, sharing one read of every weight.

        Per step the core's matrices (R, the sample columns of I, O1-O4) and W_cond (the conditioning
        now changes per sample with the context, so it is projected per sample, not per frame) are
        read once and multiplied by B vectors; the context CNN's matrices are read once for all B.
        """
        core, ctx, B = self.core.step_cost(), self.context, self.subscale
        H, D, C, K = self.core.hidden_size, self.core.cond_channels, ctx.channels, ctx.kernel
        shared = {**core.matrices, "gru_weight_ih_cond": (3 * H, D)}
        context = {
            "context_in": (B * C, 2 * B * K),
            **{f"context_layer{n}": (B * C, C * K) for n in range(len(ctx.layers))},
            "context_out": (B * D, C),
        }
        shared_flops = sum(2 * rows * cols for rows, cols in shared.values())
        per_sample = 12 * H + 2 * D * self.core.upsample_taps  # gates and state update, mel interpolation
        return StepCost(
            matrices={**shared, **context},
            other_flops=(B - 1) * shared_flops + B * per_sample,
            samples_per_step=B,
            notes=(
                f"one step = {B} samples; weights read once per step: the core's R, sample columns of I, "
                "O1-O4, W_cond and the context CNN (dense, its mask not exploited); the float64 "
                "inverse-CDF sampling is not counted"
            ),
        )

    # ---- generation --------------------------------------------------------------------------
    def generation_order(self, num_samples: int) -> torch.Tensor:
        return subscale_order(num_samples, self.subscale, self.horizon)

    # ---- streaming: the order run as the conditioning arrives -----------------------------------
    def stream_steps(self, num_samples: int, ended: bool) -> int:
        """How far a stream can run the order once the conditioning of `num_samples` samples has arrived.

        Before the end: the steps whose sub-tensor-0 sample has arrived (a step's samples are all
        earlier), ceil(n / B); every sample they make is in the signal, so the steps run as they do
        for a whole utterance of any length from n on. At the end of the utterance: all of its steps.
        """
        B, F = self.subscale, self.horizon
        positions = -(-num_samples // B)
        return positions + (B - 1) * (F + 1) if ended else positions

    def stream_made(self, steps: int, num_samples: int) -> int:
        """E such that samples [0, E) of a signal of `num_samples` are all made by steps [0, steps) of the order."""
        B, F = self.subscale, self.horizon
        positions = -(-num_samples // B)
        return min([num_samples] + [B * min(max(steps - s * (F + 1), 0), positions) + s for s in range(B)])

    def extend_state(self, state: SubscaleState, num_samples: int) -> None:
        """A stream's state: the signal is now known to reach `num_samples` (grow the context buffers to it)."""
        state.num_samples = num_samples
        self.context.extend(state.context, -(-num_samples // self.subscale))

    def initial_state(self, batch: int, device: torch.device | str) -> SubscaleState:
        raise NotImplementedError("Subscale WaveRNN needs the utterance length: use start_state(batch, num_samples)")

    def start_state(self, batch: int, num_samples: int, device: torch.device | str) -> SubscaleState:
        B, Fh = self.subscale, self.horizon
        positions = -(-num_samples // B)
        state = SubscaleState(
            step=0,
            core=self.core.initial_state(batch * B, device),
            context=self.context.begin(batch, positions, device),
            batch=batch,
            num_samples=num_samples,
        )
        # Sub-tensor 0 sees no other sub-tensor, but its context layers still need their values at the
        # coordinates before its first output (0 .. F - 1), which other sub-tensors compute ahead of time.
        sub = torch.arange(B, device=device)
        for t in range(-Fh, 0):
            self.context.advance(state.context, t - sub * (Fh + 1) + Fh)
        return state

    def step(self, state: SubscaleState, cond_t, noise_t, temperature, forced=None):
        """One staggered step: every sub-tensor s produces its position t - s*(F + 1).

        cond_t: [b, B, D] the mel conditioning of those positions; noise_t: [b, B, 2]; forced: [b, B].
        Slots outside the order (see `generation_order`) get arbitrary inputs and leave no trace.
        Returns (state, samples [b, B], logits [b, B, 2, classes]).
        """
        B, Fh = self.subscale, self.horizon
        batch = state.batch
        sub = torch.arange(B, device=cond_t.device)
        position = state.step - sub * (Fh + 1)  # per sub-tensor, in [0, N) while it is running
        running = (position >= 0) & (position < state.context["positions"])
        context = self.context.advance(state.context, position + Fh)  # [b, B, D]
        core_cond = (cond_t + context).flatten(0, 1)
        flat_forced = None if forced is None else forced.flatten(0, 1)
        core_state, samples, logits = self.core.step(
            state.core, core_cond, noise_t.flatten(0, 1), temperature, flat_forced
        )
        keep = running.repeat(batch)  # idle sequences keep their state (zeros before they start)
        hidden = torch.where(keep.unsqueeze(1), core_state[0], state.core[0])
        previous = torch.where(keep, core_state[1], state.core[1])
        samples = samples.reshape(batch, B)
        in_signal = running & (B * position + sub < state.num_samples)
        self.context.write(state.context, position, self.context_values(samples), in_signal)
        state.step += 1
        state.core = (hidden, previous)
        return state, samples, logits.reshape(batch, B, *logits.shape[1:])
