"""The 'cpu' engine for WaveNet: the whole autoregressive loop compiled, no Python per sample.

Per sample the loop reads each layer's weights once (Fast WaveNet ring buffers, O(layers)). Before
the loop, PyTorch computes the conditioning of all layers at frame rate in one matrix product
(`WaveNet.layer_projections`); the loop interpolates it per sample with the upsampler's kernel,
which is exact because the upsampler is linear and shared across channels.

Two backends run the same loop: the C kernel of vocoders._native (csrc/kern_wavenet.h; AVX-512,
AVX2 or portable code chosen at run time, several streams sharing each read of the weights) when
the extension is built, else a numba function (wavenet_numba.py), which needs no compiler.
Weight storage (`dtype`): float32 reproduces the reference engine; bfloat16 (round to nearest even)
halves the bytes read per sample and int8 (symmetric, one float32 scale per output row) quarters
them; arithmetic and accumulation stay float32 either way.
"""

from __future__ import annotations

import torch

from ...models.base import VocoderModel
from ...native import native_status
from ..base import Engine, EngineStream, StreamingError

BACKENDS = ("native", "numba")


class WaveNetCPUEngine(Engine):
    """WaveNet on the CPU. backend: "auto" (native when built, else numba), "native" or "numba"."""

    name = "cpu"
    dtypes = ("float32", "bfloat16", "int8")

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        threads: int | None = None,
        backend: str = "auto",
    ) -> None:
        reason = self.available(model, device)
        if reason is not None:
            raise RuntimeError(f"engine {self.name!r} cannot run {model.name}: {reason}")
        super().__init__(model, device, dtype)
        if backend == "auto":
            backend = "native" if native_status()[0] is not None else "numba"
        if backend == "native":
            from .wavenet_native import NativeWaveNet

            self.loop = NativeWaveNet(model, dtype, threads)
        elif backend == "numba":
            from .wavenet_numba import NumbaWaveNet

            self.loop = NumbaWaveNet(model, dtype)
        else:
            raise ValueError(f"unknown backend {backend!r}; use auto, {', '.join(BACKENDS)}")
        self.backend = backend

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        if torch.device(device).type != "cpu":
            return "it runs on the CPU only"
        if model.name != "wavenet":
            return f"this loop runs wavenet models, not {model.name}"
        return None

    def weight_bytes(self) -> int:
        """Bytes of weights the loop reads per sample (every matrix once, with its scales and biases)."""
        return self.loop.weight_bytes

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        steps = self.check_inputs(self.model, cond, noise)
        samples = torch.empty(cond.shape[0], steps, dtype=torch.long)
        noise = noise[..., 0].detach().to("cpu", torch.float32).contiguous()
        self.loop.run(*self._project(cond), noise, None, samples, None, temperature)
        return samples

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        batch, steps = cond.shape[0], self.model.num_samples(cond)
        if tuple(targets.shape) != (batch, steps):
            expected = (batch, steps)
            raise ValueError(f"targets must have shape {expected} for this conditioning, got {tuple(targets.shape)}")
        logits = torch.empty(batch, steps, self.model.classes)
        forced = targets.detach().to("cpu", torch.long).contiguous()
        noise = torch.zeros(batch, steps)
        self.loop.run(*self._project(cond), noise, forced, torch.empty(batch, steps, dtype=torch.long), logits, 1.0)
        return logits

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        if self.backend != "native":
            raise StreamingError("streaming WaveNet on the CPU needs the compiled loop (vocoders._native), not numba")
        return WaveNetCpuStream(self, batch, temperature)

    def _project(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond [B, F + 2u, D (+E)] -> (frame-rate layer conditioning [B, F + 2u, L * G], constant [B, L * G])."""
        local, constant = self.model.layer_projections(cond.detach().to("cpu", torch.float32))
        return local.contiguous(), constant.contiguous()


class WaveNetCpuStream(EngineStream):
    """The compiled WaveNet loop with its ring buffers, last sample and clock kept between chunks."""

    def __init__(self, engine: WaveNetCPUEngine, batch: int, temperature: float) -> None:
        self.engine, self.temperature = engine, temperature
        self.history, self.previous = engine.loop.initial_state(batch)
        self.start = 0

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        engine = self.engine
        steps = engine.check_inputs(engine.model, cond, noise)
        samples = torch.empty(cond.shape[0], steps, dtype=torch.long)
        noise = noise[..., 0].detach().to("cpu", torch.float32).contiguous()
        state = (self.history, self.previous, self.start)
        engine.loop.run(*engine._project(cond), noise, None, samples, None, self.temperature, state)
        self.start += steps
        return samples
