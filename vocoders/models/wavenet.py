"""WaveNet (van den Oord et al. 2016) as a mel vocoder, with Fast WaveNet incremental generation.

The network, for L layers in `cycles` dilation cycles (d_l = 2 ** (l mod L / cycles)), kernel k:

    x_0[t]   = embedding(class[t - 1])                               [R]  (the class before t = 0: silence)
    a_l[t]   = sum_j W_l[:, :, j] x_l[t - (k - 1 - j) d_l] + c_l[t]     [G]  (x_l[s] = 0 for s < 0)
    z_l[t]   = tanh(a_l[t][:G/2]) * sigmoid(a_l[t][G/2:])            [G/2]
    x_l+1[t] = (x_l[t] + Res_l z_l[t]) * sqrt(1/2)                   [R]
    skip[t]  = sum_l Skip_l z_l[t] * sqrt(1/L)                       [S]
    logits   = H2 relu(H1 relu(skip))                                 [classes]  (256-way mu-law softmax)

c_l[t], the conditioning of layer l, is one projection of the per-sample conditioning shared by all
layers: c[t] = P_local u[t] + P_speaker e + b, where u[t] is the mel conditioning network's output
upsampled to sample rate and e the optional speaker embedding (global conditioning). Because the
upsampler is linear and shared across channels, P_local can be applied at frame rate before the
upsampler; `layer_conditioning` does exactly that, for all layers in one matrix product.

Parameter layout (what the engines read; R residual, G gate, S skip, H head channels, D conditioning
channels, E speaker channels):
    embedding.weight     [classes, R]
    dilated_weight       [L, G, R, k]   tap j multiplies x_l[t - (k - 1 - j) d_l]
    dilated_bias         [L, G]
    cond_weight          [L * G, D]     rows l*G .. l*G+G-1 belong to layer l
    speaker_weight       [L * G, E]     (only with speakers > 0; speaker_embedding.weight [speakers, E])
    out_weight           [L, R + S, G/2]  rows 0..R-1: Res_l, rows R..R+S-1: Skip_l
    out_bias             [L, R + S]
    head1 (S -> H), head2 (H -> classes): nn.Linear

Incremental state (`WaveNetState`, Paine et al. 2016): layer l keeps its last (k - 1) d_l inputs in a
ring buffer indexed by step mod (k - 1) d_l, so one step costs O(L) whatever the receptive field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import mulaw_decode, mulaw_encode
from ..features import MelConfig
from ..sampling import sample_categorical
from .base import StepCost, VocoderModel
from .layers import ConditioningNetwork, FrameUpsampler, linear_rows


@dataclass
class WaveNetState:
    """Incremental state between steps.

    history[l]: [B, R, (k - 1) * d_l], the inputs x_l of steps t - (k-1) d_l .. t - 1 of layer l;
        the input of step s sits at column s mod (k - 1) d_l (zeros before the first step).
    step: t, the index of the next sample.
    previous: [B] int64, the class of sample t - 1 (silence before the first).
    """

    history: list[torch.Tensor]
    step: int
    previous: torch.Tensor


class WaveNet(VocoderModel):
    """Mu-law WaveNet conditioned on mels.

    Args:
        mel: the mel contract (MelConfig or its dict).
        layers: dilated layers L.
        cycles: dilation cycles; layers per cycle = layers / cycles, dilations 1, 2, 4, ... per cycle.
        kernel_size: taps of each dilated causal convolution (2 or 3).
        residual_channels, gate_channels, skip_channels: R, G (split into tanh and sigmoid halves), S.
        head_channels: width of the first head layer H (default S).
        classes: mu-law classes (256: mu = 255).
        cond_channels: width D of the conditioning network's features.
        cond_kernel, cond_blocks: the conditioning network (see layers.ConditioningNetwork).
        upsample_taps: frames each sample's conditioning interpolates between.
        speakers: number of speakers for global conditioning (0: none).
        speaker_channels: speaker embedding width E.
    """

    name = "wavenet"
    noise_per_step = 1

    def __init__(
        self,
        mel: MelConfig | dict[str, Any] | None = None,
        layers: int = 24,
        cycles: int = 4,
        kernel_size: int = 3,
        residual_channels: int = 64,
        gate_channels: int = 128,
        skip_channels: int = 64,
        head_channels: int | None = None,
        classes: int = 256,
        cond_channels: int = 128,
        cond_kernel: int = 5,
        cond_blocks: int = 3,
        upsample_taps: int = 3,
        speakers: int = 0,
        speaker_channels: int = 16,
    ) -> None:
        super().__init__(mel)
        if layers < 1 or cycles < 1 or layers % cycles:
            raise ValueError(f"layers ({layers}) must be a positive multiple of cycles ({cycles})")
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {kernel_size}")
        if gate_channels < 2 or gate_channels % 2:
            raise ValueError(f"gate_channels must be even (tanh and sigmoid halves), got {gate_channels}")
        if classes < 2:
            raise ValueError(f"classes must be >= 2, got {classes}")
        if speakers < 0:
            raise ValueError(f"speakers must be >= 0, got {speakers}")
        self.layers = layers
        self.cycles = cycles
        self.kernel_size = kernel_size
        self.residual_channels = residual_channels
        self.gate_channels = gate_channels
        self.skip_channels = skip_channels
        self.head_channels = head_channels or skip_channels
        self.classes = classes
        self.cond_channels = cond_channels
        self.cond_kernel = cond_kernel
        self.cond_blocks = cond_blocks
        self.upsample_taps = upsample_taps
        self.speakers = speakers
        self.speaker_channels = speaker_channels
        per_cycle = layers // cycles
        self.dilations = [2 ** (i % per_cycle) for i in range(layers)]

        L, R, G, S = layers, residual_channels, gate_channels, skip_channels
        self.cond_net = ConditioningNetwork(self.n_mels, cond_channels, cond_kernel, cond_blocks)
        self.upsampler = FrameUpsampler(self.hop_length, upsample_taps)
        self.embedding = nn.Embedding(classes, R)
        bound = 1.0 / math.sqrt(R * kernel_size)
        self.dilated_weight = nn.Parameter(torch.empty(L, G, R, kernel_size).uniform_(-bound, bound))
        self.dilated_bias = nn.Parameter(torch.zeros(L, G))
        bound = 1.0 / math.sqrt(cond_channels)
        self.cond_weight = nn.Parameter(torch.empty(L * G, cond_channels).uniform_(-bound, bound))
        if speakers:
            self.speaker_embedding = nn.Embedding(speakers, speaker_channels)
            bound = 1.0 / math.sqrt(speaker_channels)
            self.speaker_weight = nn.Parameter(torch.empty(L * G, speaker_channels).uniform_(-bound, bound))
        bound = 1.0 / math.sqrt(G // 2)
        self.out_weight = nn.Parameter(torch.empty(L, R + S, G // 2).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.zeros(L, R + S))
        self.head1 = nn.Linear(S, self.head_channels)
        self.head2 = nn.Linear(self.head_channels, classes)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "cycles": self.cycles,
            "kernel_size": self.kernel_size,
            "residual_channels": self.residual_channels,
            "gate_channels": self.gate_channels,
            "skip_channels": self.skip_channels,
            "head_channels": self.head_channels,
            "classes": self.classes,
            "cond_channels": self.cond_channels,
            "cond_kernel": self.cond_kernel,
            "cond_blocks": self.cond_blocks,
            "upsample_taps": self.upsample_taps,
            "speakers": self.speakers,
            "speaker_channels": self.speaker_channels,
        }

    @property
    def mel_context(self) -> int:
        return self.cond_net.context + self.upsampler.context

    @property
    def upsample_context(self) -> int:
        return self.upsampler.context

    @property
    def receptive_field(self) -> int:
        """Samples of input (previous classes) each prediction sees: (k - 1) * sum(dilations) + 1."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1

    @property
    def silence(self) -> int:
        """Class of the zero sample, fed as the sample before the first."""
        return int(mulaw_encode(torch.zeros(()), self.classes))

    # ---- sample representation ---------------------------------------------------------------
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return mulaw_encode(audio, self.classes)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return mulaw_decode(samples, self.classes)

    # ---- conditioning ------------------------------------------------------------------------
    def conditioning(self, mel: torch.Tensor, speaker: torch.Tensor | int | None = None) -> torch.Tensor:
        """mel [B, n_mels, F + 2 * mel_context] -> [B, F + 2u, D (+ E)].

        With speakers > 0 the speaker embedding [E] is appended to every frame (speaker: [B] or an int).
        """
        cond = self.cond_net(mel)
        if not self.speakers:
            if speaker is not None:
                raise ValueError("this WaveNet has no speaker embedding (speakers=0); do not pass a speaker")
            return cond
        if speaker is None:
            raise ValueError(f"this WaveNet is multi-speaker: pass a speaker id in 0..{self.speakers - 1}")
        speaker = torch.as_tensor(speaker, device=cond.device).long().reshape(-1).expand(cond.shape[0])
        if speaker.min() < 0 or speaker.max() >= self.speakers:
            raise ValueError(f"speaker id out of range 0..{self.speakers - 1}: {speaker.tolist()}")
        embedded = self.speaker_embedding(speaker).to(cond.dtype)  # [B, E]
        return torch.cat([cond, embedded.unsqueeze(1).expand(-1, cond.shape[1], -1)], dim=-1)

    def layer_projections(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split the conditioning of all layers into what varies and what does not.

        cond [B, F + 2u, D (+ E)] -> (frame-rate local projections [B, F + 2u, L * G],
        per-utterance constant [B, L * G]: dilated conv bias plus the speaker's projection).
        The layer conditioning of sample t is upsample(local)[t] + constant.
        """
        D = self.cond_channels
        local = linear_rows(cond[..., :D], self.cond_weight)  # the same numbers for any frame count (streaming)
        constant = self.dilated_bias.reshape(1, -1).expand(cond.shape[0], -1)
        if self.speakers:
            constant = constant + linear_rows(cond[:, 0, D:], self.speaker_weight)
        return local, constant

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        """Frame-rate conditioning [B, F + 2u, D (+E)] -> per-layer, per-sample [B, F * hop, L * G].

        The per-sample conditioning of WaveNet is already projected for every layer (bias included),
        so `step` only slices it. Memory: L * G floats per sample.
        """
        local, constant = self.layer_projections(cond)
        return self.upsampler(local) + constant.unsqueeze(1)

    # ---- teacher forcing ---------------------------------------------------------------------
    def forward_logits(
        self, mel: torch.Tensor, targets: torch.Tensor, speaker: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits [B, T, classes]; targets [B, T] int64 mu-law classes."""
        layer_cond = self.upsample(self.conditioning(mel, speaker))  # [B, T, L * G]
        if layer_cond.shape[1] != targets.shape[1]:
            raise ValueError(
                f"mel gives {layer_cond.shape[1]} samples of conditioning but the targets have {targets.shape[1]}"
            )
        return self.logits_from_conditioning(layer_cond, targets)

    def logits_from_conditioning(self, layer_cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The parallel pass over time. layer_cond [B, T, L * G]; targets [B, T] -> logits [B, T, classes].

        Channels-last throughout, so every convolution is one matrix product: a dilated layer
        multiplies the k taps laid side by side [B, T, k R] by [k R, G]. Per-layer pieces are taken
        with split/unbind, whose gradients are assembled once rather than zero-filled per slice.
        """
        steps = targets.shape[1]
        R, S, G, k = self.residual_channels, self.skip_channels, self.gate_channels, self.kernel_size
        previous = F.pad(targets[:, :-1], (1, 0), value=self.silence)
        x = self.embedding(previous)  # [B, T, R]
        conds = layer_cond.split(G, dim=-1)  # L x [B, T, G]
        dilated = self.dilated_weight.permute(0, 3, 2, 1).reshape(self.layers, k * R, G).unbind(0)  # tap-major rows
        out_weight, out_bias = self.out_weight.unbind(0), self.out_bias.unbind(0)
        skip = None
        for layer, dilation in enumerate(self.dilations):
            taps = [F.pad(x, (0, 0, (k - 1 - j) * dilation, 0))[:, :steps] for j in range(k - 1)]  # x[t - (k-1-j) d]
            a = torch.cat([*taps, x], dim=-1) @ dilated[layer] + conds[layer]  # [B, T, G]
            filter_, gate = a.chunk(2, dim=-1)
            z = torch.tanh(filter_) * torch.sigmoid(gate)
            residual, skip_part = F.linear(z, out_weight[layer], out_bias[layer]).split([R, S], dim=-1)
            x = (x + residual) * math.sqrt(0.5)
            skip = skip_part if skip is None else skip + skip_part
        return self.head(skip * math.sqrt(1.0 / self.layers))

    def head(self, skip: torch.Tensor) -> torch.Tensor:
        """skip [..., S] (already scaled) -> logits [..., classes]."""
        return self.head2(torch.relu(self.head1(torch.relu(skip))))

    def loss(
        self, mel: torch.Tensor, audio: torch.Tensor, speaker: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        targets = self.encode(audio)
        logits = self.forward_logits(mel, targets, speaker)
        loss = F.cross_entropy(logits.float().reshape(-1, self.classes), targets.reshape(-1))
        return loss, {}

    # ---- cost ----------------------------------------------------------------------------------
    def step_cost(self) -> StepCost:
        """One sample: every layer's dilated [G, k R] and output [R + S, G/2] matrices, then the head.

        The conditioning projections are applied at frame rate (the upsampler is linear), so per
        sample only their interpolation remains; the embedding is a row lookup.
        """
        L, R, G, S, H = self.layers, self.residual_channels, self.gate_channels, self.skip_channels, self.head_channels
        matrices = {
            "dilated": (L * G, self.kernel_size * R),
            "out": (L * (R + S), G // 2),
            "head1": (H, S),
            "head2": (self.classes, H),
        }
        interpolation = 2 * L * G * self.upsample_taps
        projection = 2 * L * G * self.cond_channels / self.hop_length  # once per frame, shared by hop samples
        gates = 12 * L * G + 4 * L * (R + S)  # tanh, sigmoid, product, residual and skip sums, roughly
        return StepCost(
            matrices=matrices,
            other_flops=interpolation + projection + gates,
            notes=(
                "weights read per sample: the dilated and output 1x1 matrices of every layer and the two head "
                "layers (biases negligible); the layer conditioning is projected at frame rate and interpolated "
                f"per sample; the float64 inverse-CDF sampling ({self.classes} exp per sample) is not counted"
            ),
        )

    # ---- one step (reference) ----------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str) -> WaveNetState:
        dtype = self.embedding.weight.dtype
        history = [
            torch.zeros(batch, self.residual_channels, (self.kernel_size - 1) * d, device=device, dtype=dtype)
            for d in self.dilations
        ]
        previous = torch.full((batch,), self.silence, dtype=torch.long, device=device)
        return WaveNetState(history, 0, previous)

    def step(self, state, cond_t, noise_t, temperature, forced=None):
        """One sample.

        state: WaveNetState; cond_t: [B, L * G] this sample's layer conditioning (from `upsample`);
        noise_t: [B, 1]. Returns (new state, sample class [B], logits [B, classes]).
        The history tensors are updated in place (one column per layer).
        """
        R, G, k, t = self.residual_channels, self.gate_channels, self.kernel_size, state.step
        x = self.embedding(state.previous)  # [B, R]
        cond = cond_t.reshape(cond_t.shape[0], self.layers, G)
        skip = None
        for layer, dilation in enumerate(self.dilations):
            ring = state.history[layer]
            span = ring.shape[-1]
            columns = [(t - (k - 1 - j) * dilation) % span for j in range(k - 1)]
            taps = torch.cat([ring[:, :, columns], x.unsqueeze(-1)], dim=-1)  # [B, R, k] oldest first
            a = torch.einsum("grk,brk->bg", self.dilated_weight[layer], taps) + cond[:, layer]
            z = torch.tanh(a[:, : G // 2]) * torch.sigmoid(a[:, G // 2 :])
            out = F.linear(z, self.out_weight[layer], self.out_bias[layer])  # [B, R + S]
            ring[:, :, t % span] = x  # x_l[t] replaces x_l[t - (k - 1) d], no longer needed
            x = (x + out[:, :R]) * math.sqrt(0.5)
            skip = out[:, R:] if skip is None else skip + out[:, R:]
        logits = self.head(skip * math.sqrt(1.0 / self.layers))
        if forced is not None:
            sample = forced
        else:
            sample = sample_categorical(logits, noise_t[:, 0], temperature)
        return WaveNetState(state.history, t + 1, sample), sample, logits
