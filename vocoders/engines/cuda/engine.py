"""The CUDA engine: the whole autoregressive loop on the GPU, no host synchronisation per sample.

Kernels (option `kernel`):
    persistent  one Triton launch per chunk; every program keeps its slice of the weights in
                registers across steps and the phases of a step meet at grid-wide syncs (the
                WaveRNN paper's single persistent kernel). For a few streams.
    graph       the step as PyTorch ops, a chunk of steps captured in one CUDA graph and replayed;
                any batch (the batched path: matrix-matrix products over the streams).
    phased      the Triton phase kernels, one launch per phase (7 per step, a chunk of them replayed
                from a CUDA graph); the persistent kernel's code without its grid syncs: the
                fallback where a persistent grid cannot be resident, and the interpreter-tested path.
    auto        persistent for batch <= `persistent_max_batch` when Triton is installed, else graph.

WaveNet runs on the graph kernel only (wavenet.py: its ring buffers and layer conditioning on
the device, a chunk of steps in one CUDA graph); there is no Triton kernel for it yet. Subscale
WaveRNN runs on the graph kernel only too (subscale.py: per step the context CNN of all B
sub-tensors in batched products, W_cond and the core step for all batch * B streams, a chunk of
staggered steps in one CUDA graph; W_cond and the context CNN stay float32 whatever `dtype`).

`dtype` chooses the weight storage: float32, bfloat16 or float16; products accumulate in float32
(tests state the resulting logit bound and sample agreement). Noise is drawn before the loop by the
caller and sampling happens on the device with the rule of `vocoders.sampling`.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from ...models.base import VocoderModel
from ..base import Engine, EngineStream, StreamingError
from .subscale import ContextWeights, SubscaleGraphStepper, SubscaleSampler, SubscaleSamplerStream
from .wavenet import WaveNetGraphStepper, WaveNetPack, WaveNetSampler
from .wavernn import CapturedStepper, GraphStepper, SamplerStream, WaveRNNSampler
from .wavernn_pack import WaveRNNPack, weight_dtype

log = logging.getLogger(__name__)

KERNELS = ("auto", "persistent", "graph", "phased")
SUPPORTED_MODELS = ("wavernn", "wavenet", "subscale_wavernn")
GRAPH_ONLY_MODELS = ("wavenet", "subscale_wavernn")  # no Triton kernel: the CUDA-graph step only


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


class ChunkSamplerEngine(Engine):
    """An engine whose `sampler(batch)` drives chunks of steps on the device (the CUDA engines)."""

    def sampler(self, batch: int):
        raise NotImplementedError

    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        self.check_inputs(self.model, cond, noise)
        return self.sampler(cond.shape[0]).generate(cond, noise, temperature)

    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        expected = (cond.shape[0], self.model.num_samples(cond))
        if tuple(targets.shape) != expected:
            raise ValueError(f"targets must have shape {expected} for this conditioning, got {tuple(targets.shape)}")
        return self.sampler(cond.shape[0]).forced_logits(cond, targets)


class CudaEngine(ChunkSamplerEngine):
    """WaveRNN, WaveNet and Subscale WaveRNN sampling on a CUDA device (see the module docstring for the kernels).

    Args:
        model, device: the model and a CUDA device.
        dtype: weight storage, "float32" | "bfloat16" | "float16".
        kernel: "auto" | "persistent" | "graph" | "phased".
        chunk_frames: frames of conditioning per chunk (chunk = chunk_frames * hop steps); default
            about 256 steps. A graph holds one chunk; the persistent kernel is launched once per chunk.
        persistent_max_batch: largest batch `auto` gives the persistent kernel.
        num_warps: warps per program of the Triton kernels (more warps, fewer registers per thread).
    """

    name = "cuda"
    dtypes = ("float32", "bfloat16", "float16")

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cuda",
        dtype: str = "float32",
        kernel: str = "auto",
        chunk_frames: int | None = None,
        persistent_max_batch: int = 4,
        num_warps: int = 8,
    ) -> None:
        super().__init__(model, device, dtype=dtype)
        if kernel not in KERNELS:
            raise ValueError(f"unknown CUDA kernel {kernel!r}; known: {', '.join(KERNELS)}")
        if model.name in GRAPH_ONLY_MODELS and kernel not in ("auto", "graph"):
            raise ValueError(f"CUDA kernel {kernel!r} has no {model.name} version; {model.name} runs on 'graph'")
        if kernel in ("persistent", "phased") and not triton_installed():
            raise RuntimeError(f"CUDA kernel {kernel!r} needs Triton: pip install 'vocoders[gpu]'")
        self.weight_dtype = weight_dtype(dtype)
        self.kernel = kernel
        self.chunk_frames = chunk_frames or max(1, 256 // model.hop_length)
        self.persistent_max_batch = persistent_max_batch
        self.num_warps = num_warps
        if model.name == "wavenet":
            self.pack = WaveNetPack.from_model(model, self.device, self.weight_dtype)
            # a chunk must hold the longest ring span (the ring length divides the chunk)
            self.chunk_frames = max(self.chunk_frames, -(-self.pack.ring_span // model.hop_length))
        elif model.name == "subscale_wavernn":
            self.pack = WaveRNNPack.from_model(model.core, self.device, self.weight_dtype)
            self.context_weights = ContextWeights(model, self.device)
        else:
            self.pack = WaveRNNPack.from_model(model, self.device, self.weight_dtype)
        self._samplers: dict[tuple[str, int], WaveRNNSampler | WaveNetSampler | SubscaleSampler] = {}

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        device = torch.device(device)
        if device.type != "cuda":
            return f"needs a CUDA device, got {device}"
        if not torch.cuda.is_available():
            return "CUDA is not available to this PyTorch build or machine"
        if model.name not in SUPPORTED_MODELS:
            return f"no CUDA path for model {model.name!r} (supported: {', '.join(SUPPORTED_MODELS)})"
        return None

    def kernel_for(self, batch: int) -> str:
        """The kernel this engine uses for `batch` streams."""
        if self.model.name in GRAPH_ONLY_MODELS:
            return "graph"
        if self.kernel != "auto":
            return self.kernel
        if batch <= self.persistent_max_batch and triton_installed():
            return "persistent"
        return "graph"

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        if self.model.name == "wavenet":  # one frame per chunk, the ring entered at a moving phase
            hop = self.model.hop_length
            stepper = WaveNetGraphStepper(self.pack, batch, hop, phased=True)
            return SamplerStream(WaveNetSampler(self.pack, stepper, 1), temperature)
        if self.model.name == "subscale_wavernn":  # its own sampler; a chunk: the steps of chunk_frames frames
            steps = max(1, -(-self.chunk_frames * self.model.hop_length // self.model.subscale))
            stepper = SubscaleGraphStepper(self.pack, self.context_weights, batch, steps)
            return SubscaleSamplerStream(SubscaleSampler(self.model, self.pack, stepper), batch, temperature)
        if self.model.name != "wavernn":
            raise StreamingError(f"engine {self.name!r} does not stream {self.model.name}")
        return SamplerStream(self._build_sampler(batch), temperature)  # its own: the stream's state lives in it

    def sampler(self, batch: int) -> WaveRNNSampler | WaveNetSampler | SubscaleSampler:
        """The chunk driver for `batch` streams, built on first use and kept (graphs, buffers)."""
        key = (self.kernel_for(batch), batch)
        if key not in self._samplers:
            self._samplers[key] = self._build_sampler(batch)
        return self._samplers[key]

    def _build_sampler(self, batch: int) -> WaveRNNSampler | WaveNetSampler | SubscaleSampler:
        kernel = self.kernel_for(batch)
        steps = self.chunk_frames * self.model.hop_length
        if self.model.name == "wavenet":
            log.info("cuda engine: wavenet graph step, batch %d, %s weights", batch, self.dtype)
            return WaveNetSampler(self.pack, WaveNetGraphStepper(self.pack, batch, steps), self.chunk_frames)
        if self.model.name == "subscale_wavernn":
            stepper = SubscaleGraphStepper(self.pack, self.context_weights, batch, steps)
            subscale = self.model.subscale
            log.info("cuda engine: subscale graph step, batch %d x %d streams, %s weights", batch, subscale, self.dtype)
            return SubscaleSampler(self.model, self.pack, stepper)
        if kernel == "graph":
            stepper = GraphStepper(self.pack, batch, steps)
        else:
            from .triton_wavernn import TritonWaveRNN

            stepper = TritonWaveRNN(self.pack, batch, mode=kernel, num_warps=self.num_warps)
            if kernel == "phased" and steps % 2 == 0:  # 7 launches per step: replay them from a graph
                stepper = CapturedStepper(stepper, self.pack, batch, steps)
        log.info("cuda engine: %s kernel, batch %d, %s weights", kernel, batch, self.dtype)
        return WaveRNNSampler(self.pack, stepper, self.chunk_frames)
