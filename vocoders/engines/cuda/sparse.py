"""The block-sparse GPU engine (Sparse WaveRNN on a CUDA device): the CUDA-graph step with its pruned
matrices multiplied by the Triton 16x1 ELL kernel.

What is sparse: R (the GRU's recurrent matrix, which must be at least `MIN_ENGINE_SPARSITY` zeros for the
engine to take the model) and any of the output layers O1..O4 that is as sparse (O1 and O3 in the
`sparse_wavernn` recipe) are packed at construction into 16x1 ELL form (engines/cuda/triton_sparse.py,
blocks found from the weights' exact zeros), and each product by one of them is one launch of
`ell_matvec_kernel`, which reads only the kept 16x1 blocks (plus the padding of the busiest row group)
and one activation per block. A batch of streams goes through the same launch: each program loads its
weights once and applies them to every stream in turn.
What stays dense: an output layer with fewer zeros (torch products, as in the `cuda` engine's graph
step), the three sample columns of the input matrix, the gates and the draws; the conditioning is
projected at frame rate and interpolated per chunk on the device (engines/cuda/wavernn.py).
Graph capture: on a CUDA device a chunk of steps, the Triton launches among the torch ops, is
captured in one CUDA graph and replayed (the kernels are compiled by a warm-up run before capture),
so the host queues one launch per chunk and reads nothing back until the end.

`dtype` bfloat16 or float16 stores the weights in half precision. The sparse products keep the
activations in float32 and accumulate in float32, i.e. they compute exactly the model whose weights
are rounded (`engines.cpu.sparse.rounded_model`); the dense products round their inputs too (`_mm_float32`).

Without a GPU the engine runs on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1, set
before Triton is first imported), which is how the tests check it; `engine=auto` never picks it off a
CUDA device. On a CUDA device `auto` takes the dense `cuda` engine first (its persistent kernel runs a
chunk in one launch; neither has been timed on a GPU yet), so this engine is asked for by name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING

import torch

from ...models.base import StepCost, VocoderModel
from ...sparsity import MIN_ENGINE_SPARSITY, not_sparse_reason, sparsity_of
from ..base import EngineStream
from .engine import ChunkSamplerEngine, triton_installed
from .wavernn import BIAS_OF, GraphStepper, SamplerStream, WaveRNNSampler
from .wavernn_pack import WaveRNNPack, weight_dtype

if TYPE_CHECKING:
    from .triton_sparse import EllMatrix

log = logging.getLogger(__name__)

# The pack's matrices, the model parameters they come from and their names in `StepCost`.
SOURCE = {
    "recurrent": ("gru_weight_hh", "gru_weight_hh"),
    "out1": ("O1.weight", "O1"),
    "out2": ("O2.weight", "O2"),
    "out3": ("O3.weight", "O3"),
    "out4": ("O4.weight", "O4"),
}


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def sparse_matrices(model: VocoderModel) -> list[str]:
    """The pack names of the model's matrices with at least `MIN_ENGINE_SPARSITY` zeros (R first when it is)."""
    return [
        name for name, (param, _) in SOURCE.items() if sparsity_of(model.get_parameter(param)) >= MIN_ENGINE_SPARSITY
    ]


class SparseGraphStepper(GraphStepper):
    """`GraphStepper` whose products by the matrices in `ell` go through the Triton ELL kernel.

    ell: pack name ("recurrent", "out1", ..) -> EllMatrix on the pack's device; the others stay dense.
    groups_per_program: 16-row groups per Triton program (1: the most programs, for batch 1 latency).
    """

    model_name = "sparse WaveRNN"

    def __init__(
        self,
        pack: WaveRNNPack,
        ell: dict[str, EllMatrix],
        batch: int,
        steps: int,
        use_graph: bool | None = None,
        groups_per_program: int = 1,
    ) -> None:
        super().__init__(pack, batch, steps, use_graph)
        self.ell, self.groups_per_program = ell, groups_per_program

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x [B, K] float32 -> [B, N] float32: one ELL launch for a sparse matrix, else the dense product."""
        matrix = self.ell.get(name)
        if matrix is None:
            return super()._linear(x, name)
        from .triton_sparse import ell_matvec_launch

        bias = getattr(self.pack, BIAS_OF[name])
        return ell_matvec_launch(matrix, x.contiguous(), bias, self.groups_per_program)


class SparseCudaEngine(ChunkSamplerEngine):
    """Sparse WaveRNN sampled on a CUDA device with block-sparse products (see the module docstring).

    Args:
        model, device: a WaveRNN whose R is block-sparse, and a CUDA device (a CPU device only under
            TRITON_INTERPRET=1, for tests).
        dtype: weight storage, "float32" | "bfloat16" | "float16"; sums in float32.
        chunk_frames: frames of conditioning per chunk (one CUDA graph holds one chunk); default about
            256 steps.
        groups_per_program: 16-row groups per Triton program of the ELL kernel.
    """

    name = "sparse-cuda"
    dtypes = ("float32", "bfloat16", "float16")

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cuda",
        dtype: str = "float32",
        chunk_frames: int | None = None,
        groups_per_program: int = 1,
    ) -> None:
        super().__init__(model, device, dtype=dtype)
        reason = self.available(model, self.device)
        if reason is not None:
            raise RuntimeError(f"engine {self.name!r} cannot run {model.name} on {self.device}: {reason}")
        if groups_per_program < 1:
            raise ValueError(f"groups_per_program must be >= 1, got {groups_per_program}")
        from .triton_sparse import pack_ell  # imported late: TRITON_INTERPRET must be set before triton is

        self.weight_dtype = weight_dtype(dtype)
        self.chunk_frames = chunk_frames or max(1, 256 // model.hop_length)
        self.groups_per_program = groups_per_program
        self.pack = WaveRNNPack.from_model(model, self.device, self.weight_dtype)
        self.ell = {
            name: pack_ell(getattr(self.pack, name), self.weight_dtype, self.device) for name in sparse_matrices(model)
        }
        self._samplers: dict[int, WaveRNNSampler] = {}
        log.info("sparse-cuda engine: ELL products for %s, %s weights", ", ".join(self.ell), dtype)

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        device = torch.device(device)
        if model.name != "wavernn":
            return f"the block-sparse GPU step runs WaveRNN only, not {model.name}"
        if not triton_installed():
            return "needs Triton: pip install 'vocoders[gpu]'"
        if device.type == "cuda":
            if not torch.cuda.is_available():
                return "CUDA is not available to this PyTorch build or machine"
        elif device.type != "cpu" or not interpreter_on():
            return f"needs a CUDA device, got {device} (CPU tensors run only under TRITON_INTERPRET=1, for tests)"
        return not_sparse_reason(model.gru_weight_hh)

    @classmethod
    def available_to_auto(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        if torch.device(device).type != "cuda":
            return "auto picks it on a CUDA device only"
        return cls.available(model, device)

    def sampler(self, batch: int) -> WaveRNNSampler:
        """The chunk driver for `batch` streams, built on first use and kept (graphs, buffers)."""
        if batch not in self._samplers:
            self._samplers[batch] = self._build_sampler(batch)
        return self._samplers[batch]

    def _build_sampler(self, batch: int) -> WaveRNNSampler:
        steps = self.chunk_frames * self.model.hop_length
        stepper = SparseGraphStepper(self.pack, self.ell, batch, steps, groups_per_program=self.groups_per_program)
        return WaveRNNSampler(self.pack, stepper, self.chunk_frames)

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        return SamplerStream(self._build_sampler(batch), temperature)  # its own stepper: the stream's state

    def step_cost(self) -> StepCost:
        """The model's step cost counting what the ELL kernel reads for each sparse matrix: every stored
        block, the padding of shorter row groups included, and one int32 column index per block."""
        cost = self.model.step_cost()
        kept, index_bytes = {}, 0
        for name, matrix in self.ell.items():
            kept[SOURCE[name][1]] = matrix.values.numel()
            index_bytes += matrix.cols.numel() * 4
        notes = (
            f"{cost.notes}; the ELL matrices ({', '.join(kept)}) count width x 16 values per 16-row group "
            "(padding included: what the kernel reads) plus int32 column indices; the others are dense"
        )
        return dataclasses.replace(cost, kept=kept, index_bytes=index_bytes, notes=notes)
