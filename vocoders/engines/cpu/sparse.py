"""The block-sparse CPU engine (Sparse WaveRNN): the compiled WaveRNN loop over block-sparse matrices.

At construction the pruned matrices are packed in block-sparse form (engines/cpu/sparse_packing.py:
16x1 or 4x4 blocks, found from the weights' exact zeros), so a product reads only the kept blocks
and, for 16x1 blocks, one activation per block. R and whichever output layers were pruned are packed
sparse; a dense output layer is packed as every 16x1 block and multiplied over the non-zero inputs
only (the ReLU zeroes about half of them). The conditioning's projection W_cond, pruned with the
input matrix, is applied at frame rate by the block-sparse kernel too (a row per call). Everything
else (the conditioning network, the gates, the draws) is the dense compiled engine's, see
engines/cpu/engine.py.

`dtype` float16 or bfloat16 stores the weights in half precision and accumulates in float32, as the
paper did on mobile CPUs; the engine then samples the model whose weights are rounded to that
precision (tests compare it with the reference engine on exactly those weights).

`engine=auto` picks this engine for a model whose recurrent matrix R is mostly zeros.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading

import torch

from ...models.base import StepCost, VocoderModel
from ...models.subscale import SubscaleWaveRNN
from ...models.wavernn import WaveRNN
from ...native import native_status
from ...sparsity import not_sparse_reason
from ..base import Engine
from .engine import CpuEngine, PackedWaveRNN, cpu_rows, native_conditioning
from .packing import PACK_ROWS
from .shares import row_address, run_in_shares
from .sparse_packing import SparseMatrix, pack_sparse


class PackedSparseWaveRNN(PackedWaveRNN):
    """A WaveRNN's weights as the native sparse loop reads them: R and O1..O4 block-sparse."""

    @classmethod
    def from_model(cls, model: WaveRNN, dtype: str) -> PackedSparseWaveRNN:
        return super().from_model(model, dtype, pack_sparse)

    def describe(self) -> dict[str, dict[str, object]]:
        """Per matrix: block shape, dense or not, blocks and bytes read per product (for the benchmark)."""
        return {
            name: {
                "block": f"{m.block[0]}x{m.block[1]}",
                "dense": m.dense,
                "blocks": m.blocks,
                "stored_weights": m.stored_weights,
                "bytes": m.nbytes,
            }
            for name, m in self.matrices().items()
        }


def rounded_model(model: WaveRNN, dtype: str) -> WaveRNN:
    """A copy of `model` whose packed weights are rounded to `dtype` as the engine stores them (for tests)."""
    import copy

    storage = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    out = copy.deepcopy(model)
    if storage is None:
        return out
    with torch.no_grad():
        for name in ("gru_weight_hh", "O1.weight", "O2.weight", "O3.weight", "O4.weight"):
            param = out.get_parameter(name)
            param.copy_(param.to(storage).float())
    return out


class SparseCpuEngine(CpuEngine):
    """Sparse WaveRNN sampled by the compiled block-sparse loop (streams split over `threads` workers)."""

    name = "sparse-cpu"
    dtypes = ("float32", "float16", "bfloat16")

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        threads: int | None = None,
    ) -> None:
        Engine.__init__(self, model, device, dtype)
        reason = self.available(model, self.device)
        if reason is not None:
            raise RuntimeError(f"engine {self.name!r} cannot run {model.name} on {self.device}: {reason}")
        self.native, _ = native_status()
        self.threads = threads
        self.isa = os.environ.get("VOCODERS_ISA", "auto")
        self.packed = PackedSparseWaveRNN.from_model(model, dtype)
        self.native_cond = native_conditioning(model, self.native, self.isa)
        self._inputs_read = [0, 0, 0]  # O2 and O4 inputs read, steps run (the dense layers skip zero inputs)

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        reason = super().available(model, device)
        if reason is not None:
            return reason
        if isinstance(model, SubscaleWaveRNN):  # the dense cpu engine's subscale loop; no sparse one yet
            return f"the sparse loop runs the WaveRNN step only, not {model.name}"
        return not_sparse_reason(model.gru_weight_hh)

    def input_fraction(self) -> dict[str, float]:
        """Fraction of O2's and O4's inputs the runs so far read (the ReLU's non-zero outputs; 1 before any run)."""
        o2, o4, steps = self._inputs_read
        if steps == 0:
            return {"O2": 1.0, "O4": 1.0}
        return {"O2": o2 / (steps * self.model.out_hidden), "O4": o4 / (steps * self.model.out_hidden)}

    def step_cost(self) -> StepCost:
        """The model's step cost counting what this engine reads: the stored blocks and indices of the
        sparse matrices, and of a dense O2 / O4 the columns of non-zero inputs, at the fraction the
        runs so far measured."""
        cost = self.model.step_cost()
        names = {"R": "gru_weight_hh", "O1": "O1", "O2": "O2", "O3": "O3", "O4": "O4"}
        kept, index_bytes, read = {}, 0, self.input_fraction()
        for short, m in self.packed.matrices().items():
            if not m.dense:
                kept[names[short]] = m.stored_weights
                index_bytes += (m.block_col.numel() + m.group_start.numel()) * 4
            elif short in read:
                kept[short] = round(m.rows * m.cols * read[short])
        notes = (
            f"{cost.notes}; sparse matrices count their stored blocks plus int32 indices; dense O2/O4 count "
            f"the columns of non-zero inputs (measured fractions {read['O2']:.3f}, {read['O4']:.3f})"
        )
        return dataclasses.replace(cost, kept=kept, index_bytes=index_bytes, notes=notes)

    @functools.cached_property
    def w_cond_sparse(self) -> tuple[SparseMatrix, tuple, torch.Tensor] | None:
        """W_cond [3H, D] packed block-sparse float32, its spec and the kernel's scratch; None where it is
        not sparse (the recipe prunes the input matrix with R: at 95% a product reads a twentieth of it)."""
        packed = pack_sparse(self.packed.w_cond)
        if packed.dense:
            return None
        return packed, packed.spec(), torch.zeros(packed.cols, dtype=torch.int32)

    def _project(self, cond: torch.Tensor) -> torch.Tensor:
        """As `CpuEngine._project`, by the block-sparse kernel where W_cond is sparse, one row per call
        (each row's numbers its own: the same for any number of rows)."""
        sparse = self.w_cond_sparse
        if sparse is None:
            return super()._project(cond)
        packed, spec, active = sparse
        batch, frames, width = cond.shape
        rows = cpu_rows(cond)
        padded = -(-packed.rows // PACK_ROWS) * PACK_ROWS  # the kernel writes whole 16-row groups
        out = torch.empty(batch * frames, padded)
        x, y, scratch, matvec = rows.data_ptr(), out.data_ptr(), active.data_ptr(), self.native.sparse_matvec
        for row in range(batch * frames):
            matvec(spec, x + 4 * row * width, y + 4 * row * padded, scratch, self.isa)
        if padded != packed.rows:
            out = out[:, : packed.rows].contiguous()
        return out.view(batch, frames, packed.rows)

    def _run(self, projected, noise, forced, samples, logits, temperature: float, state=None) -> None:
        """Split the streams over the workers and run the native sparse loop on each share.

        state: (hidden [B, H] float32, previous [B] int64), read and updated in place, or None to
        start from zeros and silence (a stream carries it between calls).
        """
        hidden, previous = state if state is not None else (None, None)
        batch, frames, _ = projected.shape
        steps = samples.shape[1]
        weights = self.weights_spec
        width = 0 if logits is None else logits.shape[-1]
        lock = threading.Lock()

        def share(first: int, last: int) -> None:
            rows = [row_address(t, first) for t in (hidden, previous, projected, noise, forced, samples, logits)]
            job = (last - first, steps, frames, width, *rows, float(temperature))
            o2, o4 = self.native.sparse_wavernn_run(weights, job, self.isa)
            with lock:
                self._inputs_read[0] += o2
                self._inputs_read[1] += o4
                self._inputs_read[2] += (last - first) * steps

        run_in_shares(batch, self.threads or torch.get_num_threads(), share)
