"""An LPCNet-style WaveRNN (Valin & Skoglund 2019): linear prediction carries the envelope, the GRU the excitation.

The signal is pre-emphasised, s_t = x_t - alpha x_{t-1}. Each frame's all-pole predictor c comes
from the mel (`vocoders.lpc`), so the prediction p_t = sum_k c_k s_{t-k} costs 16 multiply-adds
and the network only has to model the excitation e_t = s_t - p_t, a far whiter signal than speech,
as 256 mu-law classes. At step t the GRU reads embeddings of mu(s_{t-1}), mu(p_t) and the previous
excitation class beside the conditioning features:

    x_t = [E_s mu(s_{t-1}), E_p mu(p_t), E_e e_{t-1}, cond_t]
    h_t = GRU(x_t, h_{t-1})                       (PyTorch's formulation, the fused kernel in training)
    P(e_t) = softmax(O2 relu(O1 h_t))
    s_t = p_t + mu^-1(e_t),  x_t = deemphasis(s)

Samples are the 16-bit PCM classes of the pre-emphasised signal s (so teacher forcing feeds the
true s and the step recomputes the excitation class from it); `decode` undoes the pre-emphasis.
The conditioning carries the predictor as its last `lpc_order` channels, one filter per frame
(the upsampler repeats it over the frame's samples; interpolating direct-form filters could make
them unstable).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import (
    deemphasis_taps,
    deemphasize,
    join_coarse_fine,
    mulaw_decode,
    mulaw_encode,
    preemphasize,
    split_coarse_fine,
)
from ..features import MelConfig
from ..lpc import lpc_from_mel, predict, predict_step
from ..sampling import sample_categorical
from .base import StepCost, VocoderModel
from .layers import ConditioningNetwork, FrameUpsampler

PCM_BITS = 16
EXCITATION_CLASSES = 256


def pcm_classes(signal: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> 16-bit PCM classes [0, 65536) (rounded, clipped), same shape."""
    coarse, fine = split_coarse_fine(signal, PCM_BITS)
    return (coarse << (PCM_BITS // 2)) | fine


def pcm_values(classes: torch.Tensor) -> torch.Tensor:
    """16-bit PCM classes -> float32 in [-1, 1), same shape."""
    low = PCM_BITS // 2
    return join_coarse_fine(classes >> low, classes & ((1 << low) - 1), PCM_BITS)


class LPCNet(VocoderModel):
    """GRU over the LPC excitation.

    Args:
        mel: the mel contract (MelConfig or its dict).
        hidden_size: GRU units (LPCNet: 384).
        cond_channels, cond_kernel, cond_blocks, upsample_taps: the conditioning network and upsampler,
            as in WaveRNN.
        embedding: width of each of the three mu-law embeddings (s_{t-1}, p_t, e_{t-1}).
        out_hidden: width of O1 (default hidden_size).
        lpc_order: predictor order (16 at 16-24 kHz).
        preemphasis: alpha of the pre-emphasis (LPCNet: 0.85).
        lag_window_hz: Gaussian lag window of the autocorrelation (see `vocoders.lpc.lpc_from_mel`).
        sampling_floor: LPCNet's sampling floor, a probability subtracted from every excitation class
            at generation (`sampling.sample_categorical`); 0 = off. A setting of generation, not of
            the weights: change it on a loaded model.
        injected_noise: LPCNet's noise injection in training, the largest standard deviation (in mu-law
            classes) of the noise added to the excitation that re-synthesises the network's inputs;
            each training sequence draws its own level in [0, injected_noise]. 0 = off.
    """

    name = "lpcnet"
    noise_per_step = 1

    def __init__(
        self,
        mel: MelConfig | dict[str, Any] | None = None,
        hidden_size: int = 384,
        cond_channels: int = 128,
        cond_kernel: int = 5,
        cond_blocks: int = 3,
        upsample_taps: int = 3,
        embedding: int = 64,
        out_hidden: int | None = None,
        lpc_order: int = 16,
        preemphasis: float = 0.85,
        lag_window_hz: float = 50.0,
        injected_noise: float = 0.0,
        sampling_floor: float = 0.0,
    ) -> None:
        super().__init__(mel)
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {hidden_size}")
        if not 1 <= lpc_order <= 64:
            raise ValueError(f"lpc_order must be in 1..64, got {lpc_order}")
        if not 0.0 <= preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {preemphasis}")
        self.hidden_size = hidden_size
        self.cond_channels = cond_channels
        self.cond_kernel = cond_kernel
        self.cond_blocks = cond_blocks
        self.upsample_taps = upsample_taps
        self.embedding = embedding
        self.out_hidden = out_hidden or hidden_size
        self.lpc_order = lpc_order
        self.preemphasis = float(preemphasis)
        self.lag_window_hz = float(lag_window_hz)
        if injected_noise < 0:
            raise ValueError(f"injected_noise must be >= 0, got {injected_noise}")
        self.injected_noise = float(injected_noise)
        if not 0.0 <= sampling_floor < 1.0 / EXCITATION_CLASSES:
            raise ValueError(f"sampling_floor must be in [0, 1/{EXCITATION_CLASSES}), got {sampling_floor}")
        self.sampling_floor = float(sampling_floor)

        self.cond_net = ConditioningNetwork(self.n_mels, cond_channels, cond_kernel, cond_blocks)
        self.upsampler = FrameUpsampler(self.hop_length, upsample_taps)
        self.embed_signal = nn.Embedding(EXCITATION_CLASSES, embedding)
        self.embed_prediction = nn.Embedding(EXCITATION_CLASSES, embedding)
        self.embed_excitation = nn.Embedding(EXCITATION_CLASSES, embedding)
        H, inputs = hidden_size, 3 * embedding + cond_channels
        bound = 1.0 / math.sqrt(H)
        self.gru_weight_ih = nn.Parameter(torch.empty(3 * H, inputs).uniform_(-bound, bound))
        self.gru_weight_hh = nn.Parameter(torch.empty(3 * H, H).uniform_(-bound, bound))
        self.gru_bias_ih = nn.Parameter(torch.empty(3 * H).uniform_(-bound, bound))
        self.gru_bias_hh = nn.Parameter(torch.empty(3 * H).uniform_(-bound, bound))
        self.O1 = nn.Linear(H, self.out_hidden)
        self.O2 = nn.Linear(self.out_hidden, EXCITATION_CLASSES)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "cond_channels": self.cond_channels,
            "cond_kernel": self.cond_kernel,
            "cond_blocks": self.cond_blocks,
            "upsample_taps": self.upsample_taps,
            "embedding": self.embedding,
            "out_hidden": self.out_hidden,
            "lpc_order": self.lpc_order,
            "preemphasis": self.preemphasis,
            "lag_window_hz": self.lag_window_hz,
            "injected_noise": self.injected_noise,
            "sampling_floor": self.sampling_floor,
        }

    @property
    def mel_context(self) -> int:
        return self.cond_net.context + self.upsampler.context

    @property
    def upsample_context(self) -> int:
        return self.upsampler.context

    # ---- sample representation ---------------------------------------------------------------
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio [B, T] -> PCM classes of the pre-emphasised signal [B, T]."""
        return pcm_classes(preemphasize(audio, self.preemphasis) if self.preemphasis else audio)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        signal = pcm_values(samples)
        if self.preemphasis:
            signal = deemphasize(signal, self.preemphasis).clamp_(-1.0, 1.0)
        return signal

    @property
    def decode_context(self) -> int:
        return max(0, deemphasis_taps(self.preemphasis) - 1)

    @property
    def silence(self) -> int:
        """PCM class of the zero sample."""
        return 1 << (PCM_BITS - 1)

    # ---- conditioning ------------------------------------------------------------------------
    def conditioning(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, n_mels, F + 2 * mel_context] -> [B, F + 2u, D + lpc_order]: features, then each frame's predictor."""
        features = self.cond_net(mel)
        c = self.cond_net.context
        framed = mel[..., c : mel.shape[-1] - c] if c else mel
        with torch.no_grad():
            lpc = lpc_from_mel(framed, self.mel_config, self.lpc_order, self.preemphasis, self.lag_window_hz)
        return torch.cat([features, lpc.to(features.dtype)], dim=-1)

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        """[B, F + 2u, D + order] -> [B, F * hop, D + order]: features interpolated, predictors repeated."""
        D, u = self.cond_channels, self.upsampler.context
        features = self.upsampler(cond[..., :D])
        frames = cond.shape[1] - 2 * u
        lpc = cond[:, u : u + frames, D:].repeat_interleave(self.hop_length, dim=1)
        return torch.cat([features, lpc.to(features.dtype)], dim=-1)

    # ---- teacher forcing ---------------------------------------------------------------------
    def _inputs(self, cond: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU inputs [B, T, 3E + D] and excitation targets [B, T] from per-sample cond and PCM targets."""
        D = self.cond_channels
        signal = pcm_values(targets)  # s_t
        prediction = predict(signal, cond[..., D:].float())  # p_t from s_{<t}
        excitation = mulaw_encode(signal - prediction, EXCITATION_CLASSES)  # the class the net must predict
        previous_signal = F.pad(signal[:, :-1], (1, 0))
        previous_excitation = F.pad(excitation[:, :-1], (1, 0), value=EXCITATION_CLASSES // 2)
        return self._embed(previous_signal, prediction, previous_excitation, cond[..., :D]), excitation

    @torch.no_grad()
    def _noisy_history(self, cond: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """LPCNet's noise injection: the network's inputs re-synthesised with noise, and its targets.

        Step by step, p_t is predicted from the noisy past, the clean excitation class mu(x_t - p_t) is
        the target, and the signal continues with that class plus noise, so training shows the network
        the kind of drift its own sampling causes at generation and teaches it to steer back. Each
        sequence draws its noise level in [0, injected_noise] classes (standard deviation).
        Returns (s_{t-1}, p_t, e_{t-1} as fed, target e_t), each [B, T].
        """
        clean = pcm_values(targets)
        lpc = cond[..., self.cond_channels :].float()
        batch, steps = clean.shape
        level = torch.rand(batch, device=clean.device) * self.injected_noise
        offsets = torch.round(torch.randn(batch, steps, device=clean.device) * level.unsqueeze(1)).long()
        if clean.device.type == "cpu":  # the same arithmetic compiled: a Python step per sample costs ~1 s a batch
            from .lpcnet_numba import mulaw_tables, noisy_history

            arrays = noisy_history(clean.numpy(), lpc.contiguous().numpy(), offsets.numpy(), *mulaw_tables())
            return tuple(torch.from_numpy(a) for a in arrays)
        return noisy_history_reference(clean, lpc, offsets)

    def _embed(self, signal_in, prediction, excitation_in, features) -> torch.Tensor:
        """GRU input [.., 3E + D] from s_{t-1}, p_t (floats), e_{t-1} (classes) and the features."""
        return torch.cat(
            [
                self.embed_signal(mulaw_encode(signal_in, EXCITATION_CLASSES)),
                self.embed_prediction(mulaw_encode(prediction, EXCITATION_CLASSES)),
                self.embed_excitation(excitation_in),
                features,
            ],
            dim=-1,
        )

    def _teacher_forced(
        self, mel: torch.Tensor, targets: torch.Tensor, noisy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.upsample(self.conditioning(mel))
        if cond.shape[1] != targets.shape[1]:
            raise ValueError(
                f"mel gives {cond.shape[1]} samples of conditioning but the targets have {targets.shape[1]}"
            )
        if noisy:
            signal_in, prediction, excitation_in, excitation = self._noisy_history(cond, targets)
            x = self._embed(signal_in, prediction, excitation_in, cond[..., : self.cond_channels])
        else:
            x, excitation = self._inputs(cond, targets)
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size, dtype=torch.float32)
        weights = [self.gru_weight_ih, self.gru_weight_hh, self.gru_bias_ih, self.gru_bias_hh]
        with torch.autocast(x.device.type, enabled=False):  # the recurrence in float32 (see WaveRNN)
            hidden, _ = torch._VF.gru(x.float(), h0, weights, True, 1, 0.0, self.training, False, True)
        return self.O2(torch.relu(self.O1(hidden))), excitation

    def forward_logits(self, mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced excitation logits [B, T, 256]."""
        return self._teacher_forced(mel, targets)[0]

    def loss(self, mel: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        noisy = self.training and self.injected_noise > 0
        logits, excitation = self._teacher_forced(mel, self.encode(audio), noisy=noisy)
        loss = F.cross_entropy(logits.float().flatten(0, 1), excitation.flatten())
        return loss, {}

    # ---- cost ----------------------------------------------------------------------------------
    def step_cost(self) -> StepCost:
        """One sample: R h, three embedding rows of the input matrix (looked up, precomputable), O1, O2,
        the 16-tap prediction; the conditioning projection is amortised over the hop."""
        H, D = self.hidden_size, self.cond_channels
        matrices = {
            "gru_weight_hh": (3 * H, H),
            "gru_weight_ih_embeddings": (3 * H, 3),  # one precomputed row per embedded input
            "O1": (self.out_hidden, H),
            "O2": (EXCITATION_CLASSES, self.out_hidden),
        }
        other = 2 * 3 * H * self.upsample_taps + 2 * 3 * H * D / self.hop_length + 12 * H + 2 * self.lpc_order
        return StepCost(
            matrices=matrices,
            other_flops=other,
            notes="embeddings times the input matrix are tables of 256 rows; the float64 sampling is not counted",
        )

    # ---- one step (reference) ----------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h [B, H], signal history s_{t-1}, s_{t-2}, ... [B, order], previous excitation class [B])."""
        hidden = torch.zeros(batch, self.hidden_size, device=device)
        history = torch.zeros(batch, self.lpc_order, device=device)
        excitation = torch.full((batch,), EXCITATION_CLASSES // 2, dtype=torch.long, device=device)
        return hidden, history, excitation

    def step(self, state, cond_t, noise_t, temperature, forced=None):
        """One sample. cond_t [B, D + order]; noise_t [B, 1]; forced [B] PCM classes.

        Returns (state, PCM class of s_t [B], excitation logits [B, 256]).
        """
        hidden, history, previous_excitation = state
        D = self.cond_channels
        prediction = predict_step(history, cond_t[:, D:].float())
        x = torch.cat(
            [
                self.embed_signal(mulaw_encode(history[:, 0], EXCITATION_CLASSES)),
                self.embed_prediction(mulaw_encode(prediction, EXCITATION_CLASSES)),
                self.embed_excitation(previous_excitation),
                cond_t[:, :D],
            ],
            dim=-1,
        )
        gi = F.linear(x, self.gru_weight_ih, self.gru_bias_ih)
        gh = F.linear(hidden, self.gru_weight_hh, self.gru_bias_hh)
        H = self.hidden_size
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        hidden = z * hidden + (1.0 - z) * n
        logits = self.O2(torch.relu(self.O1(hidden)))
        if forced is not None:
            sample = forced
            signal = pcm_values(forced)
            excitation = mulaw_encode(signal - prediction, EXCITATION_CLASSES)
        else:
            excitation = sample_categorical(logits, noise_t[:, 0], temperature, self.sampling_floor)
            sample = pcm_classes(prediction + mulaw_decode(excitation, EXCITATION_CLASSES))
            signal = pcm_values(sample)
        history = torch.cat([signal.unsqueeze(1), history[:, :-1]], dim=1)
        return (hidden, history, excitation), sample, logits


def noisy_history_reference(clean: torch.Tensor, lpc: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The re-synthesis of `LPCNet._noisy_history` in plain PyTorch, one step per sample (any device).

    clean [B, T] (pre-emphasised signal), lpc [B, T, order], offsets [B, T] int64 (mu-law classes).
    """
    batch, steps = clean.shape
    history = clean.new_zeros(batch, lpc.shape[-1])
    previous_excitation = torch.full((batch,), EXCITATION_CLASSES // 2, dtype=torch.long, device=clean.device)
    signal_in, prediction = clean.new_empty(batch, steps), clean.new_empty(batch, steps)
    excitation_in, excitation = offsets.new_empty(batch, steps), offsets.new_empty(batch, steps)
    for t in range(steps):
        p = predict_step(history, lpc[:, t])
        target = mulaw_encode(clean[:, t] - p, EXCITATION_CLASSES)
        signal_in[:, t], prediction[:, t], excitation_in[:, t], excitation[:, t] = (
            history[:, 0],
            p,
            previous_excitation,
            target,
        )
        previous_excitation = (target + offsets[:, t]).clamp_(0, EXCITATION_CLASSES - 1)
        noisy = pcm_values(pcm_classes(p + mulaw_decode(previous_excitation, EXCITATION_CLASSES)))
        history = torch.cat([noisy.unsqueeze(1), history[:, :-1]], dim=1)
    return signal_in, prediction, excitation_in, excitation
