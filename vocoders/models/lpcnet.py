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
The conditioning carries the predictor as its next `lpc_order` channels, one filter per frame
(the upsampler repeats it over the frame's samples; interpolating direct-form filters could make
them unstable).

Long-term prediction (`pitch_taps` = K > 0, odd): voiced excitation is a pulse train, so the
excitation one pitch period T back predicts the next pulse far better than any memory the GRU has
to learn. The GRU then also reads embeddings of the K excitation classes around t - T,

    x_t += [E_k e_{t-T+k}  for k in -(K-1)/2 .. (K-1)/2]

with T the frame's period. Training takes T from the true audio (`vocoders.pitch.frame_periods`, or with
`pitch_target="reference"` the evaluation's tracker on the whole utterance, from the data pipeline)
and teaches a period head on the conditioning features to predict it (cross-entropy over the lags,
targets smoothed over +-25 cents, on voiced frames); generation uses the head's most likely lag,
carried as a conditioning channel after the predictor (repeated over the frame, like it).

Pulse phase (`pitch_phase` = P classes > 0): the GRU also reads an embedding of where t lies in
the pitch cycle: the samples since the last pulse, exact for the first P/2, the rest of the cycle
in P/2 equal parts (`vocoders.pitch.cycle_classes`), or an unvoiced class P. Training takes
the pulses from the true excitation (its energy peaks one period apart, `vocoders.pitch.pulse_phases`),
so the input tells the network when the excitation pulses; generation runs a pulse clock at the
period the head predicts (`vocoders.pitch.free_running_phases`), and the head also decides voicing
(one more class, carried as a 0/1 channel after the period), so pitch and voicing follow the mel.

Long-term predictor (`ltp_gain` = g > 0): in voiced frames the prediction also takes the low band
of the short-term residual r = s - p_short one period back, as the pitch predictor of CELP coders:

    p_t = sum_k c_k s_{t-k} + g * sum_j h_j r_{t-T+j-M}      (h: `lpc.lowpass_taps`, 2M + 1 taps)

and the network predicts what is left, e_t = s_t - p_t. At generation the same filter runs on the
generated residual, a comb at the head's period over the low band: the harmonics no longer depend
on the network learning pitch, and training and generation compute p_t the same way.

Frame gain (`excitation_rms` = rho > 0): the excitation is normalised by its frame's gain g_f, the
RMS of the prediction error that the mel's spectrum implies (`lpc.lpc_from_mel(with_gain=True)`,
within 0.8 dB of the true residual's on cs-male-22k), so the classes are of e_t / a_f with
a_f = g_f / rho (carried as the last conditioning channel, repeated over the frame):

    class_t = mu(e_t / a_f),   s_t = p_t + a_f mu^-1(class_t)

Loudness then follows the mel by construction, in pauses too; the network shapes the excitation
(its pulses, its noise) at a level of about rho. Without it the network must learn loudness itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
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
from ..lpc import long_term_predict, long_term_step, lowpass_taps, lpc_from_mel, predict, predict_step
from ..pitch import (
    PeriodRange,
    cycle_classes,
    frame_periods,
    free_running_phases,
    periods_from_f0,
    pulse_phases,
    voiced_frames,
)
from ..sampling import sample_categorical
from .base import StepCost, VocoderModel
from .layers import ConditioningNetwork, FrameUpsampler

PCM_BITS = 16
EXCITATION_CLASSES = 256
LTP_HALF_TAPS = 15  # the long-term predictor's low-pass: 31 taps
PERIOD_INPUTS = ("features", "features+mel")  # what the period head reads (see LPCNet)
PITCH_TARGETS = ("tracker", "reference")  # where training takes the true pitch (see LPCNet)


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
        pitch_taps: excitation taps around one pitch period back (odd; 0 = no long-term prediction).
        pitch_phase: classes of the pulse-phase input (0 = none; below twice the shortest period).
        pitch_fmin, pitch_fmax: the pitch range in Hz the period head chooses from.
        period_weight: weight of the period head's cross-entropy in the loss.
        period_input: what the period head reads per frame: "features" (the conditioning features) or
            "features+mel" (those and the mel frames they are computed from, the cond_kernel frames
            around the frame, standardised by a shift and scale kept with the weights: the mel keeps
            more of the harmonics' spacing than 128 features, see `vocoders.training.pitch_head`).
            Both read nothing the features do not, so streaming waits for no more frames.
        pitch_target: where training takes the true period and voicing (for the long-term predictor,
            the pulse clock and the head's targets): "tracker", `vocoders.pitch.frame_periods` of
            each training segment; or "reference", the F0 of `vocoders.metrics.frame_f0` (pyworld's
            DIO + StoneMask, the tracker the evaluation scores F0 and V/UV with) of the whole
            utterance, which the data pipeline caches and `loss` takes as its third argument. The
            two trackers agree on voicing in about 68% of cs-male-22k's frames (`tools/pitch_agreement.py`).
        ltp_gain: gain g of the long-term predictor in voiced frames (0 = none; below 1 for a stable comb).
        ltp_cutoff_hz: the low band the long-term predictor repeats.
        ltp_upper_hz, ltp_upper_ratio: a second band, ltp_cutoff_hz..ltp_upper_hz, repeated at
            ltp_upper_ratio times the gain (speech is less periodic higher up); 0 = none. The two
            bands make one filter, the low-pass at the cutoff plus the ratio times the band between.
        ltp_limit: bound on that band before the gain (0 = none). The low band of the cs-male-22k
            training residual stays below 0.1 (its largest value over 40 utterances: 0.098); the bound
            keeps the comb's feedback finite when generation drifts loud.
        excitation_rms: the RMS rho the excitation is normalised to by the frame gain from the mel
            (0 = no normalisation). The normalised short-term residual of cs-male-22k peaks at 9.5
            times its RMS (99.9th percentile of frames), so rho = 0.08 keeps it inside the mu-law's [-1, 1].
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
        pitch_taps: int = 0,
        pitch_phase: int = 0,
        pitch_fmin: float = 60.0,
        pitch_fmax: float = 500.0,
        period_weight: float = 0.5,
        period_input: str = "features",
        pitch_target: str = "tracker",
        ltp_gain: float = 0.0,
        ltp_cutoff_hz: float = 1000.0,
        ltp_upper_hz: float = 0.0,
        ltp_upper_ratio: float = 0.0,
        ltp_limit: float = 0.0,
        excitation_rms: float = 0.0,
        voiced_temperature: float = 1.0,
        voicing_threshold: float = 0.5,
        train_dither: float = 0.0,
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
        if pitch_taps < 0 or (pitch_taps and pitch_taps % 2 == 0):
            raise ValueError(f"pitch_taps must be 0 or odd, got {pitch_taps}")
        self.pitch_taps = int(pitch_taps)
        if pitch_phase < 0:
            raise ValueError(f"pitch_phase must be >= 0, got {pitch_phase}")
        self.pitch_phase = int(pitch_phase)
        self.pitch_fmin, self.pitch_fmax = float(pitch_fmin), float(pitch_fmax)
        self.period_weight = float(period_weight)
        if period_input not in PERIOD_INPUTS:
            raise ValueError(f"period_input must be one of {', '.join(PERIOD_INPUTS)}, got {period_input!r}")
        self.period_input = period_input
        if pitch_target not in PITCH_TARGETS:
            raise ValueError(f"pitch_target must be one of {', '.join(PITCH_TARGETS)}, got {pitch_target!r}")
        self.pitch_target = pitch_target
        self.periods = PeriodRange(self.sample_rate, self.pitch_fmin, self.pitch_fmax)
        if self.pitch_phase // 2 >= self.periods.min_lag:
            raise ValueError(f"pitch_phase must be below {2 * self.periods.min_lag} (twice the shortest period)")
        if not 0.0 <= ltp_gain < 1.0:
            raise ValueError(f"ltp_gain must be in [0, 1), got {ltp_gain}")
        self.ltp_gain, self.ltp_cutoff_hz = float(ltp_gain), float(ltp_cutoff_hz)
        if ltp_limit < 0:
            raise ValueError(f"ltp_limit must be >= 0, got {ltp_limit}")
        self.ltp_limit = float(ltp_limit)
        if not 0.0 <= excitation_rms < 1.0:
            raise ValueError(f"excitation_rms must be in [0, 1), got {excitation_rms}")
        self.excitation_rms = float(excitation_rms)
        if not 0.0 < voiced_temperature <= 4.0:
            raise ValueError(f"voiced_temperature must be in (0, 4], got {voiced_temperature}")
        self.voiced_temperature = float(voiced_temperature)
        if not 0.0 < voicing_threshold < 1.0:
            raise ValueError(f"voicing_threshold must be in (0, 1), got {voicing_threshold}")
        self.voicing_threshold = float(voicing_threshold)
        if train_dither < 0:
            raise ValueError(f"train_dither must be >= 0, got {train_dither}")
        self.train_dither = float(train_dither)
        if self.voiced_temperature != 1.0 and not self.voicing:
            raise ValueError("voiced_temperature needs the voicing class (pitch_phase or ltp_gain)")
        # Half the low-pass taps: the filter must stay in the past (M < shortest period).
        half = min(LTP_HALF_TAPS, self.periods.min_lag - 1)
        if ltp_upper_hz and not self.ltp_cutoff_hz < ltp_upper_hz < self.sample_rate / 2:
            raise ValueError(
                f"ltp_upper_hz must be 0 or in ({self.ltp_cutoff_hz}, {self.sample_rate / 2}), got {ltp_upper_hz}"
            )
        if not 0.0 <= ltp_upper_ratio <= 1.0:
            raise ValueError(f"ltp_upper_ratio must be in [0, 1], got {ltp_upper_ratio}")
        self.ltp_upper_hz, self.ltp_upper_ratio = float(ltp_upper_hz), float(ltp_upper_ratio)
        taps = lowpass_taps(self.ltp_cutoff_hz, self.sample_rate, half)
        if self.ltp_upper_hz and self.ltp_upper_ratio:
            taps = taps + self.ltp_upper_ratio * (lowpass_taps(self.ltp_upper_hz, self.sample_rate, half) - taps)
        self.register_buffer("ltp_taps", taps, persistent=False)

        self.cond_net = ConditioningNetwork(self.n_mels, cond_channels, cond_kernel, cond_blocks)
        self.upsampler = FrameUpsampler(self.hop_length, upsample_taps)
        self.embed_signal = nn.Embedding(EXCITATION_CLASSES, embedding)
        self.embed_prediction = nn.Embedding(EXCITATION_CLASSES, embedding)
        self.embed_excitation = nn.Embedding(EXCITATION_CLASSES, embedding)
        if self.pitch_taps:
            # One table for all taps: tap j's class c is row j * 256 + c.
            self.embed_taps = nn.Embedding(self.pitch_taps * EXCITATION_CLASSES, embedding)
        if self.pitch_phase:
            self.embed_phase = nn.Embedding(self.pitch_phase + 1, embedding)
        if self.uses_pitch:
            # Lags min_lag..max_lag, and where voicing matters one class more: unvoiced.
            head_classes = self.periods.classes + (1 if self.voicing else 0)
            width = self.period_head_inputs
            self.period_head = nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, head_classes))
            if self.period_input != "features":  # standardisation of the head's input (set by a refit)
                self.register_buffer("period_input_shift", torch.zeros(width))
                self.register_buffer("period_input_scale", torch.ones(width))
        H, inputs = hidden_size, self.embedded_inputs * embedding + cond_channels
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
            "pitch_taps": self.pitch_taps,
            "pitch_phase": self.pitch_phase,
            "pitch_fmin": self.pitch_fmin,
            "pitch_fmax": self.pitch_fmax,
            "period_weight": self.period_weight,
            "period_input": self.period_input,
            "pitch_target": self.pitch_target,
            "ltp_gain": self.ltp_gain,
            "ltp_cutoff_hz": self.ltp_cutoff_hz,
            "ltp_upper_hz": self.ltp_upper_hz,
            "ltp_upper_ratio": self.ltp_upper_ratio,
            "ltp_limit": self.ltp_limit,
            "excitation_rms": self.excitation_rms,
            "voiced_temperature": self.voiced_temperature,
            "voicing_threshold": self.voicing_threshold,
            "train_dither": self.train_dither,
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
    @property
    def uses_pitch(self) -> bool:
        """Whether the model has a period head (taps, phase or long-term predictor)."""
        return self.pitch_taps > 0 or self.pitch_phase > 0 or self.ltp_gain > 0

    @property
    def voicing(self) -> bool:
        """Whether the head also decides voicing (the phase input and the long-term predictor use it)."""
        return self.pitch_phase > 0 or self.ltp_gain > 0

    @property
    def residual_memory(self) -> int:
        """Past short-term residuals the long-term predictor reads: r_{t-1} .. r_{t-R} (0 without it)."""
        return self.periods.max_lag + self.ltp_taps.shape[0] // 2 if self.ltp_gain else 0

    @property
    def embedded_inputs(self) -> int:
        """Embedded inputs of the GRU: s_{t-1}, p_t, e_{t-1}, the taps, the phase."""
        return 3 + self.pitch_taps + (1 if self.pitch_phase else 0)

    @property
    def frame_channels(self) -> int:
        """Channels after the features that hold per-frame values: the predictor, then the period if
        the model has a head, then the voicing (0/1) if it uses voicing, then the excitation scale
        a_f with the frame gain."""
        pitch = (1 if self.uses_pitch else 0) + (1 if self.voicing else 0)
        return self.lpc_order + pitch + (1 if self.excitation_rms else 0)

    @property
    def scale_channel(self) -> int:
        """Index of the excitation scale's channel (the last) in the conditioning (with `excitation_rms`)."""
        return self.cond_channels + self.frame_channels - 1

    def excitation_scale(self, cond: torch.Tensor) -> torch.Tensor | None:
        """a [..] float32: what multiplies the mu-law value of an excitation class, read from
        conditioning [.., D + frame_channels]; None without the frame gain."""
        return cond[..., self.scale_channel].float() if self.excitation_rms else None

    @property
    def period_channel(self) -> int:
        """Index of the period channel in the conditioning."""
        return self.cond_channels + self.lpc_order

    @property
    def tap_offsets(self) -> range:
        """k of the taps e_{t-T+k}, in the order of `embed_taps`' blocks."""
        half = self.pitch_taps // 2
        return range(-half, half + 1) if self.pitch_taps else range(0)

    @property
    def excitation_memory(self) -> int:
        """Past excitation classes the taps may read: e_{t-1} .. e_{t-R} (0 without taps)."""
        return self.periods.max_lag + self.pitch_taps // 2 if self.pitch_taps else 0

    @property
    def period_head_inputs(self) -> int:
        """Width of the period head's input per frame."""
        if self.period_input == "features":
            return self.cond_channels
        return self.cond_channels + self.n_mels * (2 * self.cond_net.context + 1)

    def period_head_features(self, features: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """What the head reads [B, R, period_head_inputs] for R conditioning rows, before standardisation.

        features: [B, R, D], the conditioning network's output; mel: [B, n_mels, R + 2 * cond context],
        the mel it was computed from (needed with period_input "features+mel": row j reads mel frames
        j .. j + cond_kernel - 1, the frames its features read, band-fastest).
        """
        if self.period_input == "features":
            return features
        if mel is None:
            raise ValueError('period_input "features+mel" needs the mel the features came from')
        window = 2 * self.cond_net.context + 1
        if mel.shape[-1] != features.shape[1] + window - 1:
            raise ValueError(f"mel has {mel.shape[-1]} frames, {features.shape[1] + window - 1} expected")
        frames = mel.unfold(-1, window, 1).permute(0, 2, 3, 1).flatten(2)  # [B, R, window * n_mels]
        return torch.cat([features, frames.to(features.dtype)], dim=-1)

    def standardise_period_input(self, raw: torch.Tensor) -> torch.Tensor:
        """`period_head_features` [.., W] -> the head's input, by the shift and scale a refit sets."""
        if self.period_input == "features":
            return raw
        return (raw - self.period_input_shift) / self.period_input_scale

    def period_head_input(self, features: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input [B, R, period_head_inputs]: `period_head_features`, standardised."""
        return self.standardise_period_input(self.period_head_features(features, mel))

    def period_logits(self, features: torch.Tensor, mel: torch.Tensor | None = None) -> torch.Tensor:
        """Frame features [B, R, D] (and their mel, see `period_head_input`) -> logits [B, R, classes (+ 1)]:
        the lags min_lag..max_lag (and unvoiced)."""
        return self.period_head(self.period_head_input(features, mel))

    def predicted_pitch(
        self, features: torch.Tensor, mel: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(period [B, R] int64, voiced [B, R] bool) the head gives for frame features [B, R, D] (and
        their mel): the most likely lag, and voiced where the head's probability of unvoiced is below
        `voicing_threshold` (always voiced without `voicing`)."""
        return self._pitch_from_logits(self.period_logits(features, mel))

    def _pitch_from_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`predicted_pitch` from the head's logits [B, F, classes (+ 1)]."""
        lags = self.periods.classes
        period = logits[..., :lags].argmax(-1) + self.periods.min_lag
        if not self.voicing:
            return period, torch.ones_like(period, dtype=torch.bool)
        # Voiced where the unvoiced class is less likely than `voicing_threshold`, not where it merely
        # loses the argmax: the voiced mass is spread over every lag near the period (targets are
        # spread over +-25 cents), so an argmax calls half the voiced frames unvoiced.
        return period, logits.float().log_softmax(-1)[..., lags] < math.log(self.voicing_threshold)

    def conditioning(self, mel: torch.Tensor, dsp_mel: torch.Tensor | None = None) -> torch.Tensor:
        """mel [B, n_mels, F + 2 * mel_context] -> [B, F + 2u, D + frame_channels]: features, each frame's
        predictor, and with taps the period the head predicts (in samples). dsp_mel (same shape): the
        mel the predictor and the frame gain come from, when not `mel` (the conditioning check)."""
        features = self.cond_net(mel)
        c = self.cond_net.context
        source = mel if dsp_mel is None else dsp_mel
        framed = source[..., c : source.shape[-1] - c] if c else source
        with torch.no_grad():
            lpc, gain = lpc_from_mel(
                framed, self.mel_config, self.lpc_order, self.preemphasis, self.lag_window_hz, with_gain=True
            )
            parts = [features, lpc.to(features.dtype)]
            if self.uses_pitch:
                period, voiced = self.predicted_pitch(features, mel)
                parts.append(period.unsqueeze(-1).to(features.dtype))
                if self.voicing:
                    parts.append(voiced.unsqueeze(-1).to(features.dtype))
            if self.excitation_rms:
                parts.append((gain / self.excitation_rms).unsqueeze(-1).to(features.dtype))
        return torch.cat(parts, dim=-1)

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        """[B, F + 2u, D + c] -> [B, F * hop, D + c]: features interpolated, predictors and periods repeated."""
        D, u = self.cond_channels, self.upsampler.context
        features = self.upsampler(cond[..., :D])
        frames = cond.shape[1] - 2 * u
        per_frame = cond[:, u : u + frames, D:].repeat_interleave(self.hop_length, dim=1)
        return torch.cat([features, per_frame.to(features.dtype)], dim=-1)

    # ---- teacher forcing ---------------------------------------------------------------------
    def _inputs(
        self, cond: torch.Tensor, targets: torch.Tensor, true_pulses: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU inputs [B, T, n E + D] and excitation targets [B, T] from per-sample cond and PCM targets.

        true_pulses: the phase input from the pulses of the true excitation (training), else from
        the pulse clock of generation."""
        D = self.cond_channels
        signal = pcm_values(targets)  # s_t
        short = predict(signal, cond[..., D : D + self.lpc_order].float())  # the short-term prediction from s_{<t}
        residual = signal - short
        prediction = short + self._long_term(cond, residual) if self.ltp_gain else short
        error, scale = signal - prediction, self.excitation_scale(cond)
        excitation = mulaw_encode(error / scale if scale is not None else error, EXCITATION_CLASSES)  # the target
        previous_signal = F.pad(signal[:, :-1], (1, 0))
        previous_excitation = F.pad(excitation[:, :-1], (1, 0), value=EXCITATION_CLASSES // 2)
        taps, phase = self._taps(cond, excitation), self._phases(cond, residual if true_pulses else None)
        x = self._embed(previous_signal, prediction, previous_excitation, cond[..., :D], taps, phase)
        return x, excitation

    def _frame_pitch(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(period [B, F], voiced [B, F]) read back from per-sample cond [B, F * hop, ..] (frames' first samples)."""
        firsts = cond[:, :: self.hop_length]
        period = firsts[..., self.period_channel].round().long()
        voiced = firsts[..., self.period_channel + 1] > 0.5 if self.voicing else torch.ones_like(period).bool()
        return period, voiced

    def _long_term(self, cond: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The long-term prediction [B, T] of every sample from the short-term residual [B, T] before it."""
        period, gain, taps, limit = self._long_term_inputs(cond)
        return long_term_predict(residual, period, gain.to(residual.dtype), taps, limit)

    def _phases(self, cond: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor | None:
        """Phase classes [B, T] (None without the phase input): from the pulses of the true residual
        [B, T] when given, else from the generation clock."""
        if not self.pitch_phase:
            return None
        period, voiced = self._frame_pitch(cond)
        if residual is None:
            return free_running_phases(period, voiced, self.hop_length, self.pitch_phase)[0]
        return pulse_phases(residual, period, voiced, self.hop_length, self.pitch_phase)

    def _taps(self, cond: torch.Tensor, past: torch.Tensor) -> torch.Tensor | None:
        """Tap classes [B, T, K] e_{t-T_t+k} from the excitation sequence past [B, T] the network saw
        (silence class before the sequence), or None without taps."""
        if not self.pitch_taps:
            return None
        period = cond[..., self.period_channel].round().long()  # [B, T]
        t = torch.arange(past.shape[1], device=past.device)
        taps = []
        for k in self.tap_offsets:
            index = t - period + k
            value = past.gather(1, index.clamp_min(0))
            taps.append(torch.where(index >= 0, value, torch.full_like(value, EXCITATION_CLASSES // 2)))
        return torch.stack(taps, dim=-1)

    @torch.no_grad()
    def _noisy_history(self, cond: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """LPCNet's noise injection: the network's inputs re-synthesised with noise, and its targets.

        Step by step, p_t is predicted from the noisy past, the clean excitation class mu(x_t - p_t) is
        the target, and the signal continues with that class plus noise, so training shows the network
        the kind of drift its own sampling causes at generation and teaches it to steer back. Each
        sequence draws its noise level in [0, injected_noise] classes (standard deviation). With the
        long-term predictor, p_t includes it, over the residuals of the noisy past; with the frame
        gain, the classes are of the normalised excitation.
        Returns (s_{t-1}, p_t, e_{t-1} as fed, target e_t), each [B, T].
        """
        clean = pcm_values(targets)
        lpc = cond[..., self.cond_channels : self.period_channel].float()
        batch, steps = clean.shape
        level = torch.rand(batch, device=clean.device) * self.injected_noise
        offsets = torch.round(torch.randn(batch, steps, device=clean.device) * level.unsqueeze(1)).long()
        long_term = self._long_term_inputs(cond)
        scale = self.excitation_scale(cond)
        scale = (scale if scale is not None else torch.ones_like(clean)).contiguous()  # x / 1 and 1 x are exact
        if clean.device.type == "cpu":  # the same arithmetic compiled: a Python step per sample costs ~1 s a batch
            from .lpcnet_numba import mulaw_tables, noisy_history

            period, gain, taps, limit = (
                (long_term[0].numpy(), long_term[1].contiguous().numpy(), long_term[2].numpy(), long_term[3])
                if long_term is not None
                else (np.zeros((batch, 0), np.int64), np.zeros((batch, 0), np.float32), np.zeros(0, np.float32), 0.0)
            )
            arrays = noisy_history(
                clean.numpy(), lpc.contiguous().numpy(), offsets.numpy(), *mulaw_tables(), period, gain, taps, limit,
                scale.numpy(),
            )  # fmt: skip
            return tuple(torch.from_numpy(a) for a in arrays)
        return noisy_history_reference(clean, lpc, offsets, long_term, scale)

    def _long_term_inputs(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
        """(period [B, T] int64, gain [B, T] float32, taps, limit) of the long-term predictor, or None without it."""
        if not self.ltp_gain:
            return None
        period = cond[..., self.period_channel].round().long().contiguous()
        voiced = cond[..., self.period_channel + 1] > 0.5
        gain = torch.where(voiced, torch.tensor(self.ltp_gain), torch.tensor(0.0)).float()
        return period, gain, self.ltp_taps.float(), self.ltp_limit

    def _embed(self, signal_in, prediction, excitation_in, features, taps=None, phase=None) -> torch.Tensor:
        """GRU input [.., n E + D] from s_{t-1}, p_t (floats), e_{t-1} (classes), the tap classes
        [.., K] (None without taps), the phase class [..] (None without) and the features."""
        parts = [
            self.embed_signal(mulaw_encode(signal_in, EXCITATION_CLASSES)),
            self.embed_prediction(mulaw_encode(prediction, EXCITATION_CLASSES)),
            self.embed_excitation(excitation_in),
        ]
        if self.pitch_taps:
            blocks = torch.arange(self.pitch_taps, device=taps.device) * EXCITATION_CLASSES
            parts.append(self.embed_taps(taps + blocks).flatten(-2))
        if self.pitch_phase:
            parts.append(self.embed_phase(phase))
        parts.append(features)
        return torch.cat(parts, dim=-1)

    def _teacher_forced(
        self,
        mel: torch.Tensor,
        targets: torch.Tensor,
        noisy: bool = False,
        pitch: tuple[torch.Tensor, torch.Tensor] | None = None,
        dsp_mel: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(excitation logits [B, T, 256], target classes [B, T], frame conditioning [B, F + 2u, D + c]).

        pitch: the true (period [B, F], voiced [B, F]) in place of the head's, and the phase input
        from the true pulses (training); None: as generation has them. dsp_mel: see `conditioning`.
        """
        frame_cond = self.conditioning(mel, dsp_mel)
        if pitch is not None and self.uses_pitch:
            u, (periods, voiced) = self.upsampler.context, pitch
            frame_cond = frame_cond.clone()
            frame_cond[:, u : u + periods.shape[1], self.period_channel] = periods.to(frame_cond.dtype)
            if self.voicing:
                frame_cond[:, u : u + periods.shape[1], self.period_channel + 1] = voiced.to(frame_cond.dtype)
        cond = self.upsample(frame_cond)
        if cond.shape[1] != targets.shape[1]:
            raise ValueError(
                f"mel gives {cond.shape[1]} samples of conditioning but the targets have {targets.shape[1]}"
            )
        if noisy:
            signal_in, prediction, excitation_in, excitation = self._noisy_history(cond, targets)
            seen = F.pad(excitation_in[:, 1:], (0, 1), value=EXCITATION_CLASSES // 2)  # e_t as the net saw it
            approximate = mulaw_decode(excitation, EXCITATION_CLASSES)  # the clean classes' residual
            if self.excitation_rms:
                approximate = approximate * self.excitation_scale(cond)
            phase = self._phases(cond, approximate if pitch is not None else None)
            features = cond[..., : self.cond_channels]
            x = self._embed(signal_in, prediction, excitation_in, features, self._taps(cond, seen), phase)
        else:
            x, excitation = self._inputs(cond, targets, true_pulses=pitch is not None)
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size, dtype=torch.float32)
        weights = [self.gru_weight_ih, self.gru_weight_hh, self.gru_bias_ih, self.gru_bias_hh]
        with torch.autocast(x.device.type, enabled=False):  # the recurrence in float32 (see WaveRNN)
            hidden, _ = torch._VF.gru(x.float(), h0, weights, True, 1, 0.0, self.training, False, True)
        return self.O2(torch.relu(self.O1(hidden))), excitation, frame_cond

    def forward_logits(self, mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced excitation logits [B, T, 256] (with taps, at the periods the head predicts)."""
        return self._teacher_forced(mel, targets)[0]

    def true_periods(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(period [B, F] samples, voiced [B, F] bool, complete [B, F] bool: measured on whole windows)
        of audio [B, F * hop]."""
        period, correlation, complete = frame_periods(audio, self.hop_length, self.periods)
        return period, voiced_frames(correlation, audio, self.hop_length), complete

    @property
    def reads_f0(self) -> bool:
        return self.uses_pitch and self.pitch_target == "reference"

    def reference_periods(self, f0: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(period [B, F] int64, voiced [B, F] bool) from the reference F0 [B, F] in Hz (0 = unvoiced)."""
        if f0 is None:
            raise ValueError('pitch_target "reference" needs the reference F0 per frame: loss(mel, audio, f0)')
        if f0.dim() != 2 or f0.shape[1] != frames:
            raise ValueError(f"f0 must be [B, {frames}] (one value per frame of the audio), got {tuple(f0.shape)}")
        if not torch.isfinite(f0).all() or (f0 < 0).any():
            raise ValueError("f0 must be finite and >= 0 Hz (0 = unvoiced)")
        return periods_from_f0(f0, self.periods)

    def conditioning_loss(
        self, heard_mel: torch.Tensor, true_mel: torch.Tensor, audio: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The mel also sets the excitation target here (predictor and frame gain): it stays the true mel's."""
        return self.loss(heard_mel, audio, *extra, dsp_mel=true_mel)

    def loss(
        self,
        mel: torch.Tensor,
        audio: torch.Tensor,
        f0: torch.Tensor | None = None,
        dsp_mel: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Excitation cross-entropy (+ period_weight x the period head's, with a head).

        f0: [B, frames] the reference F0 in Hz, with pitch_target "reference" (ignored otherwise).
        dsp_mel: the mel the predictor and frame gain come from, when not `mel` (see `conditioning`).
        The head learns the lag on voiced frames (targets spread over +-25 cents) and, with the phase
        input, voicing on every frame whose window lies inside the segment (every frame for the
        reference F0, measured on the whole utterance)."""
        noisy = self.training and self.injected_noise > 0
        pitch = None
        if self.reads_f0:
            periods, voiced = self.reference_periods(f0, audio.shape[1] // self.hop_length)
            complete = torch.ones_like(voiced)
            pitch = (periods, voiced)
        elif self.uses_pitch:
            with torch.no_grad():
                periods, voiced, complete = self.true_periods(audio)
            pitch = (periods, voiced)
        if self.training and self.train_dither:  # TPDF dither: no exact digital silence to learn
            lsb = self.train_dither / float(1 << (PCM_BITS - 1))
            audio = audio + lsb * (torch.rand_like(audio) - torch.rand_like(audio))
        logits, excitation, frame_cond = self._teacher_forced(
            mel, self.encode(audio), noisy=noisy, pitch=pitch, dsp_mel=dsp_mel
        )
        loss = F.cross_entropy(logits.float().flatten(0, 1), excitation.flatten())
        if not self.uses_pitch:
            return loss, {}
        u, frames = self.upsampler.context, periods.shape[1]
        features = frame_cond[..., : self.cond_channels]  # the head's input, with gradient
        head = self.period_logits(features, mel)[:, u : u + frames].float()
        target = self._period_targets(periods, voiced)
        per_frame = -(target * F.log_softmax(head, dim=-1)).sum(-1)
        weight = (complete.float() if self.voicing else voiced.float()) * complete.float()
        period_loss = (per_frame * weight).sum() / weight.sum().clamp_min(1.0)
        predicted, predicted_voiced = self._pitch_from_logits(head.detach())
        cents = 1200.0 * torch.log2(predicted.float() / periods.float()).abs()
        on = (voiced & complete).float()
        parts = {
            "excitation_ce": float(loss.detach()),
            "period_ce": float(period_loss.detach()),
            "period_within_50c": float(((cents <= 50.0).float() * on).sum() / on.sum().clamp_min(1.0)),
            "voiced": float(on.sum() / complete.float().sum().clamp_min(1.0)),
        }
        if self.voicing:
            agree = (predicted_voiced == voiced).float() * complete.float()
            parts["vuv_agree"] = float(agree.sum() / complete.float().sum().clamp_min(1.0))
        return loss + self.period_weight * period_loss, parts

    def _period_targets(self, periods: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """Head targets [B, F, classes (+ 1)]: a Gaussian over log-lag (25 cents) around the true lag on
        voiced frames; with the phase input the unvoiced class on the others."""
        lags = torch.arange(self.periods.min_lag, self.periods.max_lag + 1, device=periods.device).float()
        cents = 1200.0 * torch.log2(lags / periods.unsqueeze(-1).float())
        target = torch.exp(-0.5 * (cents / 25.0).square())
        target = target / target.sum(-1, keepdim=True)
        if not self.voicing:
            return target
        target = torch.where(voiced.unsqueeze(-1), target, torch.zeros_like(target))
        return torch.cat([target, (~voiced).float().unsqueeze(-1)], dim=-1)

    # ---- cost ----------------------------------------------------------------------------------
    def step_cost(self) -> StepCost:
        """One sample: R h, `embedded_inputs` embedding rows of the input matrix (looked up, precomputable),
        O1, O2, the 16-tap prediction; the conditioning projection and the period head are amortised
        over the hop (the head is not counted)."""
        H, D = self.hidden_size, self.cond_channels
        matrices = {
            "gru_weight_hh": (3 * H, H),
            "gru_weight_ih_embeddings": (3 * H, self.embedded_inputs),  # one precomputed row per embedded input
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
    def initial_state(self, batch: int, device: torch.device | str) -> tuple[torch.Tensor, ...]:
        """(h [B, H], signal history s_{t-1}, s_{t-2}, ... [B, order], previous excitation class [B],
        excitation memory e_{t-1}, e_{t-2}, ... [B, excitation_memory] (silence class; width 0 without taps),
        pulse clock n [B] (samples since the last pulse, see `vocoders.pitch.free_running_phases`),
        residual memory r_{t-1}, r_{t-2}, ... [B, residual_memory] (zeros; width 0 without the long-term predictor))."""
        hidden = torch.zeros(batch, self.hidden_size, device=device)
        history = torch.zeros(batch, self.lpc_order, device=device)
        excitation = torch.full((batch,), EXCITATION_CLASSES // 2, dtype=torch.long, device=device)
        memory = torch.full((batch, self.excitation_memory), EXCITATION_CLASSES // 2, dtype=torch.long, device=device)
        clock = torch.zeros(batch, dtype=torch.long, device=device)
        residuals = torch.zeros(batch, self.residual_memory, device=device)
        return hidden, history, excitation, memory, clock, residuals

    def step(self, state, cond_t, noise_t, temperature, forced=None):
        """One sample. cond_t [B, D + frame_channels]; noise_t [B, 1]; forced [B] PCM classes.

        Returns (state, PCM class of s_t [B], excitation logits [B, 256]).
        """
        hidden, history, previous_excitation, memory, clock, residuals = state
        D = self.cond_channels
        voiced = None
        short = predict_step(history, cond_t[:, D : self.period_channel].float())
        prediction = short
        taps = phase = None
        if self.uses_pitch:
            period = cond_t[:, self.period_channel].round().long()
        if self.voicing:
            voiced = cond_t[:, self.period_channel + 1] > 0.5
        if self.ltp_gain:
            gain = torch.where(voiced, torch.tensor(self.ltp_gain), torch.tensor(0.0)).to(short.dtype)
            prediction = short + long_term_step(residuals, period, gain, self.ltp_taps, self.ltp_limit)
        if self.pitch_taps:  # e_{t-T+k} is memory[:, T - k - 1]
            offsets = torch.tensor(list(self.tap_offsets), device=memory.device)
            taps = memory.gather(1, period.unsqueeze(1) - offsets - 1)
        if self.pitch_phase:  # the pulse clock of `pitch.free_running_phases`
            clock = torch.where(clock >= period, torch.zeros_like(clock), clock)
            cycle = cycle_classes(clock, period, self.pitch_phase)
            phase = torch.where(voiced, cycle, torch.full_like(clock, self.pitch_phase))
            clock = torch.where(voiced, clock + 1, torch.zeros_like(clock))
        x = self._embed(history[:, 0], prediction, previous_excitation, cond_t[:, :D], taps, phase)
        gi = F.linear(x, self.gru_weight_ih, self.gru_bias_ih)
        gh = F.linear(hidden, self.gru_weight_hh, self.gru_bias_hh)
        H = self.hidden_size
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        hidden = z * hidden + (1.0 - z) * n
        logits = self.O2(torch.relu(self.O1(hidden)))
        scale = self.excitation_scale(cond_t)
        if forced is not None:
            sample = forced
            signal = pcm_values(forced)
            error = signal - prediction
            excitation = mulaw_encode(error / scale if scale is not None else error, EXCITATION_CLASSES)
        else:
            excitation = sample_categorical(
                logits, noise_t[:, 0], self._temperatures(temperature, voiced), self.sampling_floor
            )
            value = mulaw_decode(excitation, EXCITATION_CLASSES)
            sample = pcm_classes(prediction + (scale * value if scale is not None else value))
            signal = pcm_values(sample)
        history = torch.cat([signal.unsqueeze(1), history[:, :-1]], dim=1)
        memory = torch.cat([excitation.unsqueeze(1), memory[:, :-1]], dim=1)
        if self.ltp_gain:
            residuals = torch.cat([(signal - short).unsqueeze(1), residuals[:, :-1]], dim=1)
        return (hidden, history, excitation, memory, clock, residuals), sample, logits

    def _temperatures(self, temperature: float, voiced: torch.Tensor | None) -> float | torch.Tensor:
        """The sampling temperature of each stream [B] float64 (temperature x voiced_temperature where
        voiced), or the plain float where the factor is off."""
        if self.voiced_temperature == 1.0 or voiced is None or temperature <= 0.0:
            return temperature
        sharp = torch.tensor(temperature * self.voiced_temperature, dtype=torch.float64)
        return torch.where(voiced, sharp, torch.tensor(float(temperature), dtype=torch.float64))


def noisy_history_reference(
    clean: torch.Tensor, lpc: torch.Tensor, offsets: torch.Tensor, long_term=None, scale=None
) -> tuple[torch.Tensor, ...]:
    """The re-synthesis of `LPCNet._noisy_history` in plain PyTorch, one step per sample (any device).

    clean [B, T] (pre-emphasised signal), lpc [B, T, order], offsets [B, T] int64 (mu-law classes);
    long_term: (period [B, T], gain [B, T], taps, limit) of the long-term predictor, or None;
    scale [B, T]: the excitation scale a of each sample (None: 1).
    """
    if scale is None:
        scale = torch.ones_like(clean)
    batch, steps = clean.shape
    history = clean.new_zeros(batch, lpc.shape[-1])
    if long_term is not None:
        period, gain, taps, limit = long_term
        residuals = clean.new_zeros(batch, int(period.max()) + taps.shape[0] // 2 + 1)
    previous_excitation = torch.full((batch,), EXCITATION_CLASSES // 2, dtype=torch.long, device=clean.device)
    signal_in, prediction = clean.new_empty(batch, steps), clean.new_empty(batch, steps)
    excitation_in, excitation = offsets.new_empty(batch, steps), offsets.new_empty(batch, steps)
    for t in range(steps):
        short = predict_step(history, lpc[:, t])
        p = short
        if long_term is not None:
            p = short + long_term_step(residuals, period[:, t], gain[:, t], taps, limit)
        target = mulaw_encode((clean[:, t] - p) / scale[:, t], EXCITATION_CLASSES)
        signal_in[:, t], prediction[:, t], excitation_in[:, t], excitation[:, t] = (
            history[:, 0],
            p,
            previous_excitation,
            target,
        )
        previous_excitation = (target + offsets[:, t]).clamp_(0, EXCITATION_CLASSES - 1)
        noisy = pcm_values(pcm_classes(p + scale[:, t] * mulaw_decode(previous_excitation, EXCITATION_CLASSES)))
        history = torch.cat([noisy.unsqueeze(1), history[:, :-1]], dim=1)
        if long_term is not None:
            residuals = torch.cat([(noisy - short).unsqueeze(1), residuals[:, :-1]], dim=1)
    return signal_in, prediction, excitation_in, excitation
