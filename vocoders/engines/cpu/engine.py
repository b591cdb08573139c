"""The compiled CPU engine: WaveRNN's whole sampling loop in C (vocoders._native), no Python per sample.

Weights are packed once, at construction (float32, or bfloat16 / int8 storage with float32
accumulation: `dtype`), so the engine sees the weights the model had then. Per call, the input
projection of the conditioning (W_cond = gru_weight_ih[:, 3:], 3H x D) is applied at frame rate
by the native matrix-vector kernel: the upsampler is linear and shared across channels, so
projecting then interpolating equals interpolating then projecting, and per sample only R, the
three sample columns of the input matrix and O1-O4 remain. The mel conditioning network runs in
the native kernels too (`conditioning`, engines/cpu/conditioning.py). Both give each frame its own
numbers whatever frames are computed together, so a stream's chunks cost one native call each for
them and reproduce whole-utterance generation exactly.

Batches: the streams are split over `threads` workers (Python threads; the kernel releases the
GIL), and each worker steps its streams together so they share every read of the weights.
`VOCODERS_ISA=avx2|portable` forces a lower instruction set than the best one the CPU has.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...models.base import VocoderModel
from ...models.layers import FrameUpsampler
from ...models.subscale import SubscaleWaveRNN
from ...models.wavernn import COLUMN_C_NOW, COLUMN_C_PREV, COLUMN_F_PREV, FIRST_COND_COLUMN, WaveRNN
from ...native import native_status
from ..base import Engine, EngineStream
from .conditioning import NativeConditioning
from .packing import PackedMatrix, pack_matrix, padded_vector
from .shares import row_address, run_in_shares
from .subscale import SubscaleCpuLoop, SubscaleCpuStream

# Samples per native call; the recurrent state carries over between calls.
CHUNK_STEPS = 8192
# Rows the native matrix-vector kernel takes per call (its limit on streams).
MATVEC_ROWS = 64


def cpu_rows(cond: torch.Tensor) -> torch.Tensor:
    """Conditioning [B, F, D] as the contiguous float32 CPU rows [B * F, D] the native kernels read
    (no copy when it already is)."""
    if cond.dtype != torch.float32 or cond.device.type != "cpu" or cond.requires_grad:
        cond = cond.detach().to("cpu", torch.float32)
    rows = cond.reshape(-1, cond.shape[-1])
    return rows if rows.is_contiguous() else rows.contiguous()


@dataclass
class PackedWaveRNN:
    """A WaveRNN's weights as the native loop reads them (kept alive while it runs).

    The five matrices are dense `PackedMatrix`es here; the sparse engine's subclass packs them as
    block-sparse `SparseMatrix`es, which the native sparse loop reads from the same tuple layout.
    """

    R: PackedMatrix
    O1: PackedMatrix
    O2: PackedMatrix
    O3: PackedMatrix
    O4: PackedMatrix
    bias_ih: torch.Tensor
    w_c_prev: torch.Tensor
    w_f_prev: torch.Tensor
    w_c_now: torch.Tensor
    upsample: torch.Tensor
    w_cond: torch.Tensor  # [3H, D], applied at frame rate (CpuEngine._project)

    @classmethod
    def from_model(cls, model: WaveRNN, dtype: str, pack_weights: Callable = pack_matrix) -> PackedWaveRNN:
        """`pack_weights(weight, bias, dtype)` packs each of R, O1..O4."""
        with torch.no_grad():
            w_ih = model.masked_weight_ih().float()
            length = w_ih.shape[0] + 16
            layers = {name: getattr(model, name) for name in ("O1", "O2", "O3", "O4")}
            return cls(
                R=pack_weights(model.gru_weight_hh, model.gru_bias_hh, dtype),
                **{name: pack_weights(layer.weight, layer.bias, dtype) for name, layer in layers.items()},
                bias_ih=padded_vector(model.gru_bias_ih, length),
                w_c_prev=padded_vector(w_ih[:, COLUMN_C_PREV], length),
                w_f_prev=padded_vector(w_ih[:, COLUMN_F_PREV], length),
                w_c_now=padded_vector(w_ih[:, COLUMN_C_NOW], length),
                upsample=model.upsampler.weight.detach().float().contiguous().clone(),
                w_cond=w_ih[:, FIRST_COND_COLUMN:].contiguous().clone(),
            )

    def matrices(self) -> dict[str, PackedMatrix]:
        return {"R": self.R, "O1": self.O1, "O2": self.O2, "O3": self.O3, "O4": self.O4}

    def spec(self, model: WaveRNN) -> tuple:
        """The weights tuple of vocoders._native.wavernn_run (and of sparse_wavernn_run)."""
        return (
            model.hidden_size,
            model.half,
            model.out_hidden,
            model.coarse_classes,
            model.fine_classes,
            model.fine_bits,
            model.upsampler.taps,
            model.hop_length,
            *(m.spec() for m in self.matrices().values()),
            self.bias_ih.data_ptr(),
            self.w_c_prev.data_ptr(),
            self.w_f_prev.data_ptr(),
            self.w_c_now.data_ptr(),
            self.upsample.data_ptr(),
        )


class CpuEngine(Engine):
    """WaveRNN (and Subscale WaveRNN's core) sampled by the compiled loop.

    `threads` workers for batches of WaveRNN streams (default: torch's thread count); a Subscale
    WaveRNN runs its B sub-tensors as the streams of one worker, one native call per step.
    Other model families have their own compiled loop under the same name: constructing a CpuEngine
    for one of them returns that family's engine (see `family_engine`).
    """

    name = "cpu"
    dtypes = ("float32", "bfloat16", "int8")
    subscale: SubscaleCpuLoop | None = None  # set for a Subscale WaveRNN (subclasses may skip __init__)

    def __new__(cls, model: VocoderModel, *args, **kwargs):
        family = family_engine(model) if cls is CpuEngine else None
        if family is not None:
            return family(model, *args, **kwargs)  # not a CpuEngine, so CpuEngine.__init__ does not run
        return super().__new__(cls)

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        threads: int | None = None,
    ) -> None:
        super().__init__(model, device, dtype)
        reason = self.available(model, self.device)
        if reason is not None:
            raise RuntimeError(f"engine 'cpu' cannot run {model.name} on {self.device}: {reason}")
        self.native, _ = native_status()
        self.threads = threads
        self.isa = os.environ.get("VOCODERS_ISA", "auto")
        core = model.core if isinstance(model, SubscaleWaveRNN) else model
        self.packed = PackedWaveRNN.from_model(core, dtype)
        self.subscale = SubscaleCpuLoop(model, self.packed, self.native, self.isa) if core is not model else None
        self.native_cond = native_conditioning(model, self.native, self.isa)

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        family = family_engine(model) if cls is CpuEngine else None
        if family is not None:
            return family.available(model, device)
        if torch.device(device).type != "cpu":
            return "it runs on the CPU only"
        if isinstance(model, SubscaleWaveRNN) and type(model).step is SubscaleWaveRNN.step:
            model = model.core  # its B sub-tensors run through the core's loop together (subscale.py)
        if not isinstance(model, WaveRNN) or type(model).step is not WaveRNN.step:
            return f"the compiled loop implements the dual-softmax WaveRNN step only, not {model.name}"
        if type(model.upsampler) is not FrameUpsampler:
            return "the compiled loop needs the linear FrameUpsampler"
        return native_status()[1]

    def conditioning(self, mel: torch.Tensor, speaker=None) -> torch.Tensor:
        """As `Engine.conditioning`, the network in the native kernel where it is the plain one (see
        engines/cpu/conditioning.py): a stream's chunks then cost one call each, not a dozen."""
        if self.native_cond is None or speaker is not None:
            return super().conditioning(mel, speaker)
        return self.native_cond(mel)

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        if self.subscale is None:  # one chunk of a stream, from the loop's initial state
            return CpuStream(self, cond.shape[0], temperature).run(cond, noise)
        self.check_inputs(self.model, cond, noise)
        noise = noise.detach().to("cpu", torch.float32).contiguous()
        return self.subscale.run(cond.detach().to("cpu"), noise, None, temperature, workers=self._workers())[0]

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        model = self.model
        batch, steps = targets.shape
        if steps != model.num_samples(cond) or batch != cond.shape[0]:
            expected = (cond.shape[0], model.num_samples(cond))
            raise ValueError(f"targets must have shape {expected} for this conditioning, got {tuple(targets.shape)}")
        core = model.core if self.subscale is not None else model
        width = max(core.coarse_classes, core.fine_classes)
        forced = targets.detach().to("cpu", torch.long).contiguous()
        if self.subscale is not None:
            noise = torch.zeros(batch, steps, 2)
            return self.subscale.run(cond.detach().to("cpu"), noise, forced, 1.0, width, self._workers())[1]
        logits = torch.full((batch, steps, 2, width), float("-inf"))
        noise = torch.zeros(batch, steps, 2)
        self._run(self._project(cond), noise, forced, torch.empty(batch, steps, dtype=torch.long), logits, 1.0)
        return logits

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        if self.subscale is not None:
            return SubscaleCpuStream(self.subscale, batch, temperature, self._workers())
        return CpuStream(self, batch, temperature)

    def initial_native_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [B, H] zeros, previous [B] silence): the loop's state before the first sample."""
        return torch.zeros(batch, self.model.hidden_size), torch.full((batch,), self.model.silence, dtype=torch.long)

    def _workers(self) -> int:
        return self.threads or torch.get_num_threads()

    @functools.cached_property
    def weights_spec(self) -> tuple:
        """The packed weights' addresses and sizes the native loop takes: fixed once packed, so built once
        (a stream calls the loop per chunk)."""
        return self.packed.spec(self.model)

    @functools.cached_property
    def w_cond_packed(self) -> tuple[PackedMatrix, tuple]:
        """W_cond [3H, D] packed float32 for the native matrix-vector kernel, and its spec (built once)."""
        packed = pack_matrix(self.packed.w_cond)
        return packed, packed.spec()

    def _project(self, cond: torch.Tensor) -> torch.Tensor:
        """Frame-rate conditioning [B, F + 2u, D] -> its input projection [B, F + 2u, 3H] (W_cond at frame rate).

        The native matrix-vector kernel multiplies each row on its own (MATVEC_ROWS rows share one pass
        over the weights), so a row's numbers do not depend on how many are projected together: a
        stream projecting a few frames per chunk gets the whole utterance's numbers, in one native
        call instead of several PyTorch ones.
        """
        batch, frames, width = cond.shape
        rows = cpu_rows(cond)
        packed, spec = self.w_cond_packed
        out = torch.empty(batch * frames, packed.rows_padded)
        x, y = rows.data_ptr(), out.data_ptr()
        for first in range(0, batch * frames, MATVEC_ROWS):
            count = min(MATVEC_ROWS, batch * frames - first)
            self.native.matvec(spec, x + 4 * first * width, width, y + 4 * first * packed.rows_padded,
                               packed.rows_padded, count, self.isa)  # fmt: skip
        if packed.rows_padded != packed.rows:
            out = out[:, : packed.rows].contiguous()
        return out.view(batch, frames, packed.rows)

    def _run(
        self,
        projected: torch.Tensor,
        noise: torch.Tensor,
        forced: torch.Tensor | None,
        samples: torch.Tensor,
        logits: torch.Tensor | None,
        temperature: float,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Split the streams over the workers; each runs the native loop chunk by chunk.

        Chunks of CHUNK_STEPS samples carry the recurrent state between calls, so Ctrl-C is honoured
        between chunks rather than only at the end of a long utterance. state: (hidden [B, H] float32,
        previous [B] int64), read and updated in place (a stream carries it between calls), or None
        to start from zeros and silence.
        """
        batch, frames, _ = projected.shape
        steps = samples.shape[1]
        if state is None:
            state = self.initial_native_state(batch)
        hidden, previous = state
        weights = self.weights_spec
        width = 0 if logits is None else logits.shape[-1]
        stop = threading.Event()

        def share(first: int, last: int) -> None:
            rows = [row_address(t, first) for t in (hidden, previous, projected, noise, forced, samples, logits)]
            for start in range(0, steps, CHUNK_STEPS):
                if stop.is_set():
                    return
                job = (
                    last - first,
                    steps,
                    start,
                    min(start + CHUNK_STEPS, steps),
                    frames,
                    width,
                    *rows,
                    float(temperature),
                )
                self.native.wavernn_run(weights, job, self.isa)

        run_in_shares(batch, self.threads or torch.get_num_threads(), share, stop)


def native_conditioning(model: VocoderModel, native, isa: str) -> NativeConditioning | None:
    """The model's conditioning network in the native kernel, or None where the model computes it otherwise."""
    if type(model).conditioning is not WaveRNN.conditioning or not NativeConditioning.supports(model.cond_net):
        return None
    return NativeConditioning(model.cond_net, native, isa)


def family_engine(model: VocoderModel) -> type[Engine] | None:
    """The 'cpu' engine of a model family that has its own compiled loop (None: WaveRNN's, this file)."""
    if model.name == "wavenet":
        from .wavenet import WaveNetCPUEngine

        return WaveNetCPUEngine
    if model.name == "lpcnet":
        from .lpcnet import LPCNetCPUEngine

        return LPCNetCPUEngine
    return None


class CpuStream(EngineStream):
    """The compiled WaveRNN loop (dense or sparse), hidden state and last sample kept between chunks.

    Consecutive chunks share 2u conditioning rows (the upsampler's context, see `EngineStream`); their
    projection is kept from the chunk before, so each row is projected once, in a product of the new
    rows only (`CpuEngine._project`: the same numbers as projecting the whole utterance at once).
    """

    def __init__(self, engine: CpuEngine, batch: int, temperature: float) -> None:
        self.engine, self.temperature = engine, temperature
        self.state = engine.initial_native_state(batch)
        self.shared = 2 * engine.model.upsample_context
        self._tail: torch.Tensor | None = None  # [B, 2u, 3H] projection of the last chunk's last 2u rows

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._loop(self.project(cond), noise)

    @torch.inference_mode()
    def run_fresh(self, fresh: torch.Tensor, noise: torch.Tensor, shared: int) -> torch.Tensor:
        """As `EngineStream.run_fresh`: only the fresh rows are projected (the shared ones were, last chunk)."""
        return self._loop(self._extend(self.engine._project(fresh)), noise)

    def project(self, cond: torch.Tensor) -> torch.Tensor:
        """This chunk's conditioning [B, n + 2u, D] -> its input projection [B, n + 2u, 3H], contiguous."""
        return self._extend(self.engine._project(cond if self._tail is None else cond[:, self.shared :]))

    def _extend(self, fresh: torch.Tensor) -> torch.Tensor:
        """The projection of the fresh rows [B, m, 3H] -> the chunk's [B, n + 2u, 3H], the shared rows in front."""
        projected = fresh if self._tail is None else torch.cat([self._tail, fresh], dim=1)
        self._tail = projected[:, projected.shape[1] - self.shared :]
        return projected

    def _loop(self, projected: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The native loop over a chunk's projected conditioning [B, n + 2u, 3H]: samples [B, n * hop]."""
        engine = self.engine
        steps = engine.check_inputs(engine.model, projected, noise)
        samples = torch.empty(projected.shape[0], steps, dtype=torch.long)
        if noise.dtype != torch.float32 or noise.device.type != "cpu" or not noise.is_contiguous():
            noise = noise.detach().to("cpu", torch.float32).contiguous()
        engine._run(projected, noise, None, samples, None, self.temperature, self.state)
        return samples
