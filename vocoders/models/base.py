"""The Vocoder contract every model implements.

A model knows its mel contract (and so its hop length and sample rate), computes its training loss
by teacher forcing, runs its conditioning network on a mel, and exposes one autoregressive step to
the engines. Constructors take plain values so a checkpoint's JSON rebuilds the model without Hydra.

Conditioning: `conditioning(mel)` returns frame-rate features [B, frames + 2 * upsample_context, D];
`upsample(cond)` turns them into per-sample features [B, frames * hop, D]. Engines receive the
frame-rate form; the reference engine upsamples it once, fast engines may exploit that the
upsampler is linear and shared across channels (project at frame rate, interpolate per sample).

Generation order: by default one sample per step, in time order. A model that produces several
samples per step (Subscale WaveRNN: one per sub-tensor) sets `samples_per_step` = P > 1 and
overrides `generation_order`, which lists the sample positions each step produces ([steps, P],
-1 for an idle slot), and `start_state`, which may size its state by the utterance length. Its
`step` then takes and returns one slot axis more (cond_t [B, P, D], noise_t [B, P, n], forced
[B, P]; samples [B, P], logits [B, P, ...]). Noise stays indexed by sample position, so every
engine that follows the order draws the same samples. Models with P = 1 keep the plain shapes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import CheckpointError
from ..features import MelConfig

State = Any

# Bytes per stored weight value for each weight dtype an engine may offer.
WEIGHT_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


@dataclass(frozen=True)
class StepCost:
    """The unavoidable work of one autoregressive step of one stream, for the benchmark's floor.

    matrices: weight matrices read once per step, name -> (rows, cols). A batch of streams on one
        thread shares one read; int8 storage adds one float32 scale per row.
    other_flops: floating-point operations per stream per step beyond 2 * rows * cols per matrix
        (gate nonlinearities, interpolation, conditioning work amortised per step).
    samples_per_step: samples one step yields per stream (Subscale WaveRNN: B).
    notes: what was counted and what was left out, for the benchmark's JSON.
    kept: for sparse matrices, the weights actually stored and read per step (name -> count; the
        others count rows * cols).
    index_bytes: bytes of sparse indices read per step.
    """

    matrices: dict[str, tuple[int, int]]
    other_flops: float = 0.0
    samples_per_step: int = 1
    notes: str = ""
    kept: dict[str, int] = field(default_factory=dict)
    index_bytes: int = 0

    def weights(self, name: str) -> int:
        """Weights of matrix `name` read per step."""
        rows, cols = self.matrices[name]
        return self.kept.get(name, rows * cols)

    def weight_bytes(self, dtype: str = "float32") -> int:
        """Bytes of weights (and sparse indices) read per step when stored as `dtype`."""
        if dtype not in WEIGHT_DTYPE_BYTES:
            raise ValueError(f"unknown weight dtype {dtype!r}; known: {', '.join(WEIGHT_DTYPE_BYTES)}")
        size = WEIGHT_DTYPE_BYTES[dtype]
        scales = 4 if dtype == "int8" else 0
        values = sum(self.weights(name) * size + rows * scales for name, (rows, _) in self.matrices.items())
        return values + self.index_bytes

    @property
    def flops(self) -> float:
        """Floating-point operations per stream per step (a multiply-add counts 2)."""
        return float(sum(2 * self.weights(name) for name in self.matrices)) + self.other_flops


class VocoderModel(nn.Module, ABC):
    """Base class of all vocoder networks.

    Class attributes set by subclasses:
        name: registry key stored in checkpoints.
        noise_per_step: uniform draws consumed per generated sample (2 for the dual softmax).
    """

    name: ClassVar[str]
    noise_per_step: ClassVar[int] = 1
    # Pruning metadata of a sparse checkpoint (block shape, density), set by `load_extras`; None when dense.
    sparsity: dict[str, Any] | None = None

    def __init__(self, mel: MelConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        if mel is None:
            mel = MelConfig()
        self.mel_config = mel if isinstance(mel, MelConfig) else MelConfig.from_dict(mel)

    # ---- identity --------------------------------------------------------------------------
    @property
    @abstractmethod
    def kwargs(self) -> dict[str, Any]:
        """Constructor arguments except `mel`, as plain JSON values."""

    @property
    def hop_length(self) -> int:
        return self.mel_config.hop_length

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def n_mels(self) -> int:
        return self.mel_config.n_mels

    @property
    @abstractmethod
    def mel_context(self) -> int:
        """Mel frames of context the conditioning path needs on each side of a segment."""

    def load_extras(self, checkpoint) -> None:
        """Apply what a checkpoint carries beside the weights: pruning masks zero their weights exactly
        (also averaged weights), and the sparsity metadata tells the engines the block shape."""
        from ..sparsity import apply_checkpoint_masks

        where = str(checkpoint.path or "checkpoint")
        masks = checkpoint.extras.get("mask", {})
        try:
            apply_checkpoint_masks(self, masks, where)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        self.sparsity = checkpoint.meta.get("sparsity") if masks else None

    # ---- training --------------------------------------------------------------------------
    @abstractmethod
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio [B, T] float in [-1, 1] -> target sample classes [B, T] int64."""

    @abstractmethod
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Sample classes [B, T] int64 -> audio [B, T] float32 in [-1, 1]."""

    @abstractmethod
    def forward_logits(self, mel: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits, in parallel over time.

        mel: [B, n_mels, frames + 2 * mel_context]; targets: [B, frames * hop] int64.
        Returns logits [B, frames * hop, ...] (model-specific trailing dims, same as `step`).
        """

    @abstractmethod
    def loss(self, mel: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss by teacher forcing.

        mel: [B, n_mels, frames + 2 * mel_context]; audio: [B, frames * hop] float in [-1, 1].
        Returns (scalar loss, named parts for logging).
        """

    def conditioning_loss(
        self, heard_mel: torch.Tensor, true_mel: torch.Tensor, audio: torch.Tensor, *extra: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`loss` with the network reading `heard_mel` while the targets stay those of `true_mel` (the
        conditioning check). Here the targets do not depend on the mel; a model whose mel also sets
        its targets (LPC: the predictor and frame gain) overrides this."""
        return self.loss(heard_mel, audio, *extra)

    @property
    def reads_f0(self) -> bool:
        """Whether `loss` takes a third argument, the reference tracker's F0 per frame [B, frames] in Hz
        (0 = unvoiced), which the data pipeline then supplies (`vocoders.data.FeatureCache.with_f0`)."""
        return False

    # ---- inference -------------------------------------------------------------------------
    def pad_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Edge-pad a full utterance's mel [B, n_mels, F] -> [B, n_mels, F + 2 * mel_context]."""
        c = self.mel_context
        if c == 0:
            return mel
        return torch.nn.functional.pad(mel, (c, c), mode="replicate")

    @abstractmethod
    def conditioning(self, mel: torch.Tensor) -> torch.Tensor:
        """Conditioning network. mel [B, n_mels, F + 2 * mel_context] -> [B, F + 2 * u, D] (u: upsampler context)."""

    @abstractmethod
    def upsample(self, cond: torch.Tensor) -> torch.Tensor:
        """Frame-rate conditioning [B, F + 2 * u, D] -> per-sample [B, F * hop, D]."""

    @property
    def lookahead_frames(self) -> int:
        """Mel frames a stream must have beyond a frame before it can emit that frame's audio."""
        return self.mel_context

    @property
    def decode_context(self) -> int:
        """Earlier samples `decode` reads for each sample (a stream keeps that many); 0: sample by sample."""
        return 0

    def num_samples(self, cond: torch.Tensor) -> int:
        """Samples that conditioning `cond` [B, F + 2u, D] generates."""
        return (cond.shape[1] - 2 * self.upsample_context) * self.hop_length

    def step_cost(self) -> StepCost:
        """The work of one step (weights read, FLOPs), from which `vocoders.bench` derives its floor.

        Every model that wants a floor in its benchmark overrides this; without it the benchmark
        reports the floor as unknown.
        """
        raise NotImplementedError(f"{type(self).__name__} does not describe its step cost")

    @property
    @abstractmethod
    def upsample_context(self) -> int:
        """Frames of context the upsampler consumes on each side."""

    @abstractmethod
    def initial_state(self, batch: int, device: torch.device | str) -> State:
        """Recurrent state and previous sample before the first step."""

    # ---- generation order (models with several samples per step override these) -------------------
    samples_per_step: int = 1

    def generation_order(self, num_samples: int) -> torch.Tensor:
        """Sample positions produced by each step: [steps, samples_per_step] int64, -1 for an idle slot.

        Every position in [0, num_samples) appears exactly once. Default: one per step, in time order.
        """
        return torch.arange(num_samples, dtype=torch.long).unsqueeze(1)

    def start_state(self, batch: int, num_samples: int, device: torch.device | str) -> State:
        """State before the first step of generating `num_samples` samples; default `initial_state`."""
        return self.initial_state(batch, device)

    @abstractmethod
    def step(
        self,
        state: State,
        cond_t: torch.Tensor,
        noise_t: torch.Tensor,
        temperature: float,
        forced: torch.Tensor | None = None,
    ) -> tuple[State, torch.Tensor, torch.Tensor]:
        """One autoregressive step, plain PyTorch (the reference the fast engines must match).

        cond_t: [B, D] this sample's conditioning; noise_t: [B, noise_per_step] uniform in [0, 1);
        forced: [B] int64 classes to feed back instead of sampling (teacher forcing).
        Returns (new state, sample classes [B] int64, logits [B, ...] as in `forward_logits`).
        With samples_per_step P > 1 every tensor has a slot axis after the batch (see the module doc).
        """
