"""WaveRNN with the dual softmax (Kalchbrenner et al. 2018), conditioned on mels.

One GRU of hidden size H whose state splits into a coarse half and a fine half. A 16-bit sample is
two bytes: c (high) and f (low), each an integer scaled to [-1, 1]. At step t the input is
x_t = [c_{t-1}, f_{t-1}, c_t, cond_t]; the input matrix is masked so that c_t reaches only the
fine half of the three gates, which makes the coarse prediction independent of c_t:

    u = sigma(R_u h + I_u x)      r = sigma(R_r h + I_r x)
    e = tanh(r * (R_e h) + I_e x)  h' = u * h + (1 - u) * e
    P(c_t) = softmax(O2 relu(O1 h'_coarse))     P(f_t) = softmax(O4 relu(O3 h'_fine))

This is exactly PyTorch's GRU formulation (reset gate applied after the recurrent product), so
training runs the fused GRU kernel with the masked input weights.

Parameter layout (gate rows in PyTorch order r, z(=u), n(=e)):
    gru_weight_ih [3H, 3 + D]   columns: c_{t-1}, f_{t-1}, c_t, cond (D = cond_channels)
    gru_weight_hh [3H, H]       R, one matrix-vector product per step
    gru_bias_ih, gru_bias_hh [3H]
    O1 [out_hidden, H/2], O2 [coarse_classes, out_hidden], O3, O4 likewise for the fine half.
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
    mulaw_decode,
    mulaw_encode,
    pcm_to_float,
    preemphasize,
    split_coarse_fine,
)
from ..features import MelConfig
from ..sampling import sample_categorical
from .base import StepCost, VocoderModel
from .layers import ConditioningNetwork, FrameUpsampler

COLUMN_C_PREV, COLUMN_F_PREV, COLUMN_C_NOW, FIRST_COND_COLUMN = 0, 1, 2, 3


class WaveRNN(VocoderModel):
    """Dual-softmax WaveRNN.

    Args:
        mel: the mel contract (MelConfig or its dict).
        hidden_size: GRU units H (paper: 896); even, split into coarse and fine halves.
        cond_channels: width D of the conditioning features fed to the GRU.
        cond_kernel: width of the first (non-causal) conditioning convolution over mel frames.
        cond_blocks: residual 1x1 blocks in the conditioning network.
        upsample_taps: frames each sample's conditioning interpolates between.
        out_hidden: width of O1 and O3 (default H / 2).
        bits: sample resolution; coarse gets bits - fine_bits, fine gets fine_bits (16 -> 8 + 8).
        fine_bits: bits of the fine softmax (default bits // 2). An uneven split such as 10 -> 8 + 2
            with mu-law gives a coarse softmax as smooth as WaveNet's 256 mu-law classes, refined by
            a small fine one.
        encoding: "linear" (the paper's 16-bit PCM split into bytes) or "mulaw" (mu-law companding to
            2^bits classes, mu = 2^bits - 1, split into high and low bits the same way). The dual
            softmax factorises either exactly: P(c) P(f | c) over the same 2^bits classes.
        preemphasis: alpha of the pre-emphasis x[t] - alpha x[t-1] applied before quantising (0 = none);
            decoding inverts it, so quantisation and sampling noise come out low-pass shaped.
    """

    name = "wavernn"
    noise_per_step = 2

    def __init__(
        self,
        mel: MelConfig | dict[str, Any] | None = None,
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
        if encoding not in ("linear", "mulaw"):
            raise ValueError(f"encoding must be 'linear' or 'mulaw', got {encoding!r}")
        if not 0.0 <= preemphasis < 1.0:
            raise ValueError(f"preemphasis must be in [0, 1), got {preemphasis}")
        self.encoding = encoding
        self.preemphasis = float(preemphasis)
        if hidden_size < 2 or hidden_size % 2:
            raise ValueError(f"hidden_size must be an even number >= 2, got {hidden_size}")
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in 2..16, got {bits}")
        self.hidden_size = hidden_size
        self.half = hidden_size // 2
        self.cond_channels = cond_channels
        self.cond_kernel = cond_kernel
        self.cond_blocks = cond_blocks
        self.upsample_taps = upsample_taps
        self.out_hidden = out_hidden or self.half
        self.bits = bits
        self.fine_bits = bits // 2 if fine_bits is None else int(fine_bits)
        if not 1 <= self.fine_bits < bits:
            raise ValueError(f"fine_bits must be in 1..{bits - 1}, got {self.fine_bits}")
        self.coarse_classes = 1 << (bits - self.fine_bits)
        self.fine_classes = 1 << self.fine_bits

        self.cond_net = ConditioningNetwork(self.n_mels, cond_channels, cond_kernel, cond_blocks)
        self.upsampler = FrameUpsampler(self.hop_length, upsample_taps)

        H, D = hidden_size, cond_channels
        bound = 1.0 / math.sqrt(H)
        self.gru_weight_ih = nn.Parameter(torch.empty(3 * H, FIRST_COND_COLUMN + D).uniform_(-bound, bound))
        self.gru_weight_hh = nn.Parameter(torch.empty(3 * H, H).uniform_(-bound, bound))
        self.gru_bias_ih = nn.Parameter(torch.empty(3 * H).uniform_(-bound, bound))
        self.gru_bias_hh = nn.Parameter(torch.empty(3 * H).uniform_(-bound, bound))
        mask = torch.ones(3 * H, FIRST_COND_COLUMN + D)
        for gate in range(3):  # c_t feeds only the fine half of each gate
            mask[gate * H : gate * H + self.half, COLUMN_C_NOW] = 0.0
        self.register_buffer("input_mask", mask, persistent=False)

        self.O1 = nn.Linear(self.half, self.out_hidden)
        self.O2 = nn.Linear(self.out_hidden, self.coarse_classes)
        self.O3 = nn.Linear(self.half, self.out_hidden)
        self.O4 = nn.Linear(self.out_hidden, self.fine_classes)

    @property
    def kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "cond_channels": self.cond_channels,
            "cond_kernel": self.cond_kernel,
            "cond_blocks": self.cond_blocks,
            "upsample_taps": self.upsample_taps,
            "out_hidden": self.out_hidden,
            "bits": self.bits,
            "fine_bits": self.fine_bits,
            "encoding": self.encoding,
            "preemphasis": self.preemphasis,
        }

    @property
    def mel_context(self) -> int:
        return self.cond_net.context + self.upsampler.context

    @property
    def upsample_context(self) -> int:
        return self.upsampler.context

    def prunable_matrices(self) -> dict[str, tuple[str, int, int]]:
        """Matrices magnitude pruning may sparsify, each on its own: name -> (parameter, first row, end row).

        gru_hh.{u,r,e}: the gates of R; gru_ih.{u,r,e}: the gates of the input matrix; O1..O4: the output layers.
        """
        H = self.hidden_size
        out = {}
        for gate, first in (("r", 0), ("u", H), ("e", 2 * H)):  # PyTorch's row order: r, z (= u), n (= e)
            out[f"gru_hh.{gate}"] = ("gru_weight_hh", first, first + H)
            out[f"gru_ih.{gate}"] = ("gru_weight_ih", first, first + H)
        for name in ("O1", "O2", "O3", "O4"):
            layer = getattr(self, name)
            out[name] = (f"{name}.weight", 0, layer.out_features)
        return out

    def structural_masks(self) -> dict[str, torch.Tensor]:
        """Masks the forward pass applies by construction (c_t never reaches the coarse rows)."""
        return {"gru_weight_ih": self.input_mask}

    def masked_weight_ih(self) -> torch.Tensor:
        """The input matrix with the c_t column cut from the coarse rows. [3H, 3 + D]."""
        return self.gru_weight_ih * self.input_mask

    # ---- sample representation ---------------------------------------------------------------
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        if self.preemphasis:
            audio = preemphasize(audio, self.preemphasis)
        if self.encoding == "mulaw":
            return mulaw_encode(audio, 1 << self.bits)
        coarse, fine = split_coarse_fine(audio, self.bits)
        return (coarse << (self.bits // 2)) | fine  # the PCM value; `split` divides it by fine_bits

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        if self.encoding == "mulaw":
            audio = mulaw_decode(samples, 1 << self.bits)
        else:
            audio = pcm_to_float(samples, self.bits)  # join_coarse_fine(split), in fewer operations
        if self.preemphasis:
            audio = deemphasize(audio, self.preemphasis).clamp_(-1.0, 1.0)
        return audio

    @property
    def decode_context(self) -> int:
        return max(0, deemphasis_taps(self.preemphasis) - 1)

    def split(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample classes -> (coarse, fine) classes."""
        return samples >> self.fine_bits, samples & (self.fine_classes - 1)

    def scale_coarse(self, coarse: torch.Tensor) -> torch.Tensor:
        return coarse.float() * (2.0 / (self.coarse_classes - 1)) - 1.0

    def scale_fine(self, fine: torch.Tensor) -> torch.Tensor:
        return fine.float() * (2.0 / (self.fine_classes - 1)) - 1.0

    @property
    def silence(self) -> int:
        """Class of the zero sample, used as the sample before the first."""
        return 1 << (self.bits - 1)

    # ---- conditioning ------------------------------------------------------------------------
    def conditioning(self, mel: torch.Tensor) -> torch.Tensor:
        return self.cond_net(mel)

    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        return self.upsampler(cond)

    # ---- teacher forcing ---------------------------------------------------------------------
    def forward_logits(self, mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, 2, classes] (coarse, fine)."""
        return _stack_logits(*self._teacher_forced(mel, targets))

    def _teacher_forced(self, mel: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.upsample(self.conditioning(mel))  # [B, T, D]
        if cond.shape[1] != targets.shape[1]:
            raise ValueError(
                f"mel gives {cond.shape[1]} samples of conditioning but the targets have {targets.shape[1]}"
            )
        return self.teacher_forced_core(cond, targets)

    def teacher_forced_core(self, cond: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrent core over whole sequences, fed the true samples (also used by Subscale WaveRNN).

        cond: per-sample conditioning [B, T, D]; targets: [B, T] int64, each row one sequence that
        starts after a silent sample. Returns (coarse logits [B, T, Kc], fine logits [B, T, Kf]).
        """
        coarse, fine = self.split(targets)
        previous = F.pad(targets[:, :-1], (1, 0), value=self.silence)
        c_prev, f_prev = self.split(previous)
        x = torch.cat(
            [
                torch.stack([self.scale_coarse(c_prev), self.scale_fine(f_prev), self.scale_coarse(coarse)], dim=-1).to(
                    cond.dtype
                ),
                cond,
            ],
            dim=-1,
        )
        h0 = x.new_zeros(1, x.shape[0], self.hidden_size, dtype=torch.float32)
        weights = [self.masked_weight_ih(), self.gru_weight_hh, self.gru_bias_ih, self.gru_bias_hh]
        # The recurrence runs in float32 even under autocast: CUDA autocast would hand cuDNN's GRU
        # float16 whatever dtype was asked for, and rounding compounds over ~1000 recurrent steps.
        # The conditioning network and the output layers around it still run in the autocast dtype.
        with torch.autocast(x.device.type, enabled=False):
            hidden, _ = torch._VF.gru(x.float(), h0, weights, True, 1, 0.0, self.training, False, True)
        coarse_logits = self.O2(torch.relu(self.O1(hidden[..., : self.half])))
        fine_logits = self.O4(torch.relu(self.O3(hidden[..., self.half :])))
        return coarse_logits, fine_logits

    def loss(self, mel: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        targets = self.encode(audio)
        coarse_logits, fine_logits = self._teacher_forced(mel, targets)
        coarse, fine = self.split(targets)
        coarse_loss = F.cross_entropy(coarse_logits.float().flatten(0, 1), coarse.flatten())
        fine_loss = F.cross_entropy(fine_logits.float().flatten(0, 1), fine.flatten())
        loss = coarse_loss + fine_loss
        return loss, {"coarse": float(coarse_loss.detach()), "fine": float(fine_loss.detach())}

    # ---- cost ----------------------------------------------------------------------------------
    def step_cost(self) -> StepCost:
        """One sample: R h (3H x H), the sample columns of I, O1..O4; the conditioning is projected
        at frame rate (the upsampler is linear), so per sample only its interpolation remains."""
        H, half, D, oh = self.hidden_size, self.half, self.cond_channels, self.out_hidden
        matrices = {
            "gru_weight_hh": (3 * H, H),
            "gru_weight_ih_samples": (3 * H, FIRST_COND_COLUMN),
            "O1": (oh, half),
            "O2": (self.coarse_classes, oh),
            "O3": (oh, half),
            "O4": (self.fine_classes, oh),
        }
        interpolation = 2 * 3 * H * self.upsample_taps
        projection = 2 * 3 * H * D / self.hop_length  # W_cond once per frame, shared by hop samples
        gates = 12 * H  # biases, sigmoid/tanh and the state update, roughly
        return StepCost(
            matrices=matrices,
            other_flops=interpolation + projection + gates,
            notes=(
                "weights read per sample: R, the 3 sample columns of I, O1-O4 (biases negligible); "
                "W_cond is applied at frame rate and amortised over the hop; the float64 inverse-CDF "
                f"sampling ({self.coarse_classes} + {self.fine_classes} exp per sample) is not counted"
            ),
        )

    # ---- one step (reference) ----------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.zeros(batch, self.hidden_size, device=device)
        previous = torch.full((batch,), self.silence, dtype=torch.long, device=device)
        return hidden, previous

    def step(self, state, cond_t, noise_t, temperature, forced=None):
        """One sample: R h once, coarse half, draw c_t, add I c_t to the fine half, draw f_t.

        state: (h [B, H], previous sample class [B]); cond_t: [B, D]; noise_t: [B, 2].
        Returns (state, sample class [B], logits [B, 2, classes]).
        """
        hidden, previous = state
        H, half = self.hidden_size, self.half
        c_prev, f_prev = self.split(previous)
        w_ih = self.gru_weight_ih  # only the c_t column is masked; mask that column alone below
        gh = F.linear(hidden, self.gru_weight_hh, self.gru_bias_hh)  # [B, 3H]
        known = torch.stack([self.scale_coarse(c_prev), self.scale_fine(f_prev)], dim=-1)
        gi = F.linear(known, w_ih[:, :COLUMN_C_NOW]) + F.linear(cond_t, w_ih[:, FIRST_COND_COLUMN:]) + self.gru_bias_ih

        def gate_rows(t: torch.Tensor, gate: int, rows: slice) -> torch.Tensor:
            return t[:, gate * H : (gate + 1) * H][:, rows]

        def update(rows: slice, gi_: torch.Tensor) -> torch.Tensor:
            r = torch.sigmoid(gate_rows(gi_, 0, rows) + gate_rows(gh, 0, rows))
            z = torch.sigmoid(gate_rows(gi_, 1, rows) + gate_rows(gh, 1, rows))
            n = torch.tanh(gate_rows(gi_, 2, rows) + r * gate_rows(gh, 2, rows))
            return z * hidden[:, rows] + (1.0 - z) * n

        coarse_rows, fine_rows = slice(0, half), slice(half, H)
        h_coarse = update(coarse_rows, gi)
        coarse_logits = self.O2(torch.relu(self.O1(h_coarse)))
        if forced is not None:
            coarse, fine_forced = self.split(forced)
        else:
            coarse = sample_categorical(coarse_logits, noise_t[:, 0], temperature)
        c_now_column = w_ih[:, COLUMN_C_NOW] * self.input_mask[:, COLUMN_C_NOW]  # zero on coarse rows
        gi = gi + self.scale_coarse(coarse).unsqueeze(-1) * c_now_column
        h_fine = update(fine_rows, gi)
        fine_logits = self.O4(torch.relu(self.O3(h_fine)))
        if forced is not None:
            fine = fine_forced
        else:
            fine = sample_categorical(fine_logits, noise_t[:, 1], temperature)
        sample = (coarse << self.fine_bits) | fine
        hidden = torch.cat([h_coarse, h_fine], dim=-1)
        logits = _stack_logits(coarse_logits, fine_logits)
        return (hidden, sample), sample, logits


def _stack_logits(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """[..., Kc], [..., Kf] -> [..., 2, max(Kc, Kf)], padding the shorter with -inf."""
    if coarse.shape[-1] == fine.shape[-1]:
        return torch.stack([coarse, fine], dim=-2)
    width = max(coarse.shape[-1], fine.shape[-1])
    coarse = F.pad(coarse, (0, width - coarse.shape[-1]), value=float("-inf"))
    fine = F.pad(fine, (0, width - fine.shape[-1]), value=float("-inf"))
    return torch.stack([coarse, fine], dim=-2)
