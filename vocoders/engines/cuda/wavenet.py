"""WaveNet on the device: Fast WaveNet ring buffers and the layer conditioning on the device, the
step in PyTorch ops captured in one CUDA graph per chunk, sampling on the device.

Layout (`WaveNetPack`; L layers, R residual, G gate, S skip channels, k taps):
    dilated [L, G, k R]       tap-major columns (j R + r multiplies x_l[t - (k - 1 - j) d_l][r]), weight dtype
    out_weight [L, R + S, G/2], head1 [H, S], head2 [classes, H]   weight dtype; biases float32
    embedding [classes, R], cond_weight [L G, D], upsample_weight [hop, taps]   float32

Ring buffers (`WaveNetGraphStepper`): one tensor [L, P, B, R] holds every layer's past inputs, the
input of step t at row t mod P. Layer l reads rows (t - (k - 1 - j) d_l) mod P, which is right as long
as P >= (k - 1) d_l. For whole utterances P divides the chunk length, so a captured chunk's row
indices (Python ints at capture time) are the same for every chunk: one graph replayed across the
sequence. A stream runs one frame per chunk, shorter than the ring: there P is the ring span rounded
up to whole frames and a chunk starts at one of P / hop phases, each captured once and then replayed.

The conditioning of all layers is projected at frame rate in one product before the loop
(`WaveNetPack.frame_projection`) and interpolated one chunk at a time on the device; the noise is
drawn by the caller before the loop; the host reads nothing back until the end.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ...models.wavenet import WaveNet
from ...sampling import sample_categorical
from .graph_stepper import ChunkGraphStepper
from .wavernn import _mm_float32
from .wavernn_pack import weight_dtype

log = logging.getLogger(__name__)


@dataclass
class WaveNetPack:
    """A WaveNet's step weights on one device. Build with `WaveNetPack.from_model`."""

    dilations: tuple[int, ...]
    kernel_size: int
    residual: int
    gate: int
    skip: int
    classes: int
    silence: int
    hop: int
    cond_channels: int
    dilated: torch.Tensor
    out_weight: torch.Tensor
    out_bias: torch.Tensor
    head1: torch.Tensor
    bias1: torch.Tensor
    head2: torch.Tensor
    bias2: torch.Tensor
    embedding: torch.Tensor
    cond_weight: torch.Tensor
    dilated_bias: torch.Tensor
    speaker_weight: torch.Tensor | None
    upsample_weight: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_model(
        cls, model: WaveNet, device: torch.device | str, dtype: str | torch.dtype = "float32"
    ) -> WaveNetPack:
        wdtype, dev = weight_dtype(dtype), torch.device(device)

        def weights(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, wdtype).contiguous()

        def exact(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, torch.float32).contiguous()

        L, G, R, k = model.dilated_weight.shape
        return cls(
            dilations=tuple(model.dilations),
            kernel_size=k,
            residual=R,
            gate=G,
            skip=model.skip_channels,
            classes=model.classes,
            silence=model.silence,
            hop=model.hop_length,
            cond_channels=model.cond_channels,
            dilated=weights(model.dilated_weight.permute(0, 1, 3, 2).reshape(L, G, k * R)),
            out_weight=weights(model.out_weight),
            out_bias=exact(model.out_bias),
            head1=weights(model.head1.weight),
            bias1=exact(model.head1.bias),
            head2=weights(model.head2.weight),
            bias2=exact(model.head2.bias),
            embedding=exact(model.embedding.weight),
            cond_weight=exact(model.cond_weight),
            dilated_bias=exact(model.dilated_bias.reshape(-1)),
            speaker_weight=exact(model.speaker_weight) if model.speakers else None,
            upsample_weight=exact(model.upsampler.weight),
        )

    @property
    def device(self) -> torch.device:
        return self.dilated.device

    @property
    def layers(self) -> int:
        return len(self.dilations)

    @property
    def taps(self) -> int:
        return self.upsample_weight.shape[1]

    @property
    def ring_span(self) -> int:
        """The longest history a layer needs: (k - 1) * max dilation."""
        return (self.kernel_size - 1) * max(self.dilations)

    def frame_projection(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cond [B, F + taps - 1, D (+E)] -> (local [B, F + taps - 1, L G], constant [B, L G]), float32.

        As `WaveNet.layer_projections`: the layer conditioning of sample t is upsample(local)[t] + constant.
        """
        cond = cond.to(self.device, torch.float32)
        D = self.cond_channels
        local = cond[..., :D] @ self.cond_weight.t()
        constant = self.dilated_bias.expand(cond.shape[0], -1)
        if self.speaker_weight is not None:
            constant = constant + cond[:, 0, D:] @ self.speaker_weight.t()
        return local, constant

    def sample_conditioning(
        self, local: torch.Tensor, constant: torch.Tensor, first_frame: int, frames: int
    ) -> torch.Tensor:
        """Per-sample layer conditioning of `frames` frames from `first_frame`: [B, frames * hop, L G].

        Frames past the end of `local` count as zeros (padding of a last, partial chunk).
        """
        batch, _, width = local.shape
        need = frames + self.taps - 1
        window = local[:, first_frame : first_frame + need]
        if window.shape[1] < need:
            window = torch.cat([window, window.new_zeros(batch, need - window.shape[1], width)], dim=1)
        per_sample = torch.einsum("bfck,pk->bfpc", window.unfold(1, self.taps, 1), self.upsample_weight)
        return per_sample.reshape(batch, frames * self.hop, width) + constant.unsqueeze(1)


def ring_length(span: int, chunk_steps: int) -> int:
    """The smallest divisor of `chunk_steps` that is at least `span` (rows of the shared ring buffer)."""
    if chunk_steps < span:
        raise ValueError(f"a chunk of {chunk_steps} steps is shorter than the longest ring span {span}")
    return next(p for p in range(span, chunk_steps + 1) if chunk_steps % p == 0)


class WaveNetGraphStepper(ChunkGraphStepper):
    """The WaveNet step in PyTorch ops on static buffers; one CUDA graph per chunk on a CUDA device.

    A graph is captured per (temperature, teacher forcing) and replayed for every chunk. `use_graph=False`
    runs the same ops eagerly (the CPU path the tests exercise).
    """

    model_name = "WaveNet"

    def __init__(
        self, pack: WaveNetPack, batch: int, steps: int, use_graph: bool | None = None, phased: bool = False
    ) -> None:
        """phased: a ring of the span rounded up to whole chunks, entered at a phase that moves on with
        every chunk (streams, whose chunks are shorter than the ring); else P divides the chunk."""
        dev = pack.device
        self.pack, self.batch, self.steps = pack, batch, steps
        self.use_graph = dev.type == "cuda" if use_graph is None else use_graph
        self.period = -(-pack.ring_span // steps) * steps if phased else ring_length(pack.ring_span, steps)
        self.phase = 0  # the chunk's first step mod P (always 0 unless phased)
        L, R, G = pack.layers, pack.residual, pack.gate
        self.ring = torch.zeros(L, self.period, batch, R, device=dev)
        self.prev = torch.full((batch,), pack.silence, dtype=torch.long, device=dev)
        self.inputs = torch.zeros(batch, steps, L * G, device=dev)  # per-sample layer conditioning
        self.noise = torch.full((batch, steps), 0.5, device=dev)
        self.targets = torch.full((batch, steps), pack.silence, dtype=torch.long, device=dev)
        self.samples = torch.zeros(batch, steps, dtype=torch.long, device=dev)
        self.logits = torch.zeros(batch, steps, pack.classes, device=dev)
        self._graphs: dict[tuple[float, bool], torch.cuda.CUDAGraph] = {}

    def reset(self) -> None:
        self.ring.zero_()
        self.prev.fill_(self.pack.silence)
        self.phase = 0

    def _graph_key(self) -> tuple:
        return (self.phase,)

    def _advance(self, steps: int) -> None:
        self.phase = (self.phase + steps) % self.period

    def _step(self, t: int, temperature: float, forced: bool) -> None:
        """Step t of the chunk; the absolute step's row is (phase + t) mod P."""
        p, k, G, R = self.pack, self.pack.kernel_size, self.pack.gate, self.pack.residual
        t_ring = self.phase + t
        x = p.embedding[self.prev]  # [B, R]
        cond = self.inputs[:, t].view(self.batch, p.layers, G)
        skip = None
        row = t_ring % self.period
        for layer, dilation in enumerate(p.dilations):
            ring = self.ring[layer]
            taps = [ring[(t_ring - (k - 1 - j) * dilation) % self.period] for j in range(k - 1)]
            a = _mm_float32(torch.cat([*taps, x], dim=-1), p.dilated[layer]) + cond[:, layer]  # [B, G]
            z = torch.tanh(a[:, : G // 2]) * torch.sigmoid(a[:, G // 2 :])
            out = _mm_float32(z, p.out_weight[layer]) + p.out_bias[layer]  # [B, R + S]
            ring[row].copy_(x)  # x_l[t] replaces x_l[t - P], no longer needed
            x = (x + out[:, :R]) * math.sqrt(0.5)
            skip = out[:, R:] if skip is None else skip + out[:, R:]
        hidden = torch.relu(_mm_float32(torch.relu(skip * math.sqrt(1.0 / p.layers)), p.head1) + p.bias1)
        logits = _mm_float32(hidden, p.head2) + p.bias2
        if forced:
            sample = self.targets[:, t]
            self.logits[:, t] = logits
        else:
            sample = sample_categorical(logits, self.noise[:, t], temperature)
        self.samples[:, t] = sample
        self.prev.copy_(sample)

    def _recurrent_state(self) -> tuple[torch.Tensor, ...]:
        return self.ring, self.prev


class WaveNetSampler:
    """Generation and teacher forcing over chunks of `chunk_frames` frames with one stepper."""

    def __init__(self, pack: WaveNetPack, stepper: WaveNetGraphStepper, chunk_frames: int) -> None:
        self.pack, self.stepper, self.chunk_frames = pack, stepper, chunk_frames

    def _chunks(self, cond: torch.Tensor):
        """Yield (first sample, per-sample layer conditioning [B, S, L G]) for each chunk."""
        p = self.pack
        local, constant = p.frame_projection(cond)
        frames = cond.shape[1] - (p.taps - 1)
        for first_frame in range(0, frames, self.chunk_frames):
            count = min(self.chunk_frames, frames - first_frame)
            yield first_frame * p.hop, p.sample_conditioning(local, constant, first_frame, count)

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """cond [B, F + taps - 1, D (+E)]; noise [B, F * hop, 1] -> samples [B, F * hop] int64."""
        dev = self.pack.device
        noise = noise.to(dev, torch.float32)[..., 0]
        out = torch.empty(noise.shape, dtype=torch.long, device=dev)
        self.stepper.reset()
        for first, chunk in self._chunks(cond):
            steps = chunk.shape[1]
            out[:, first : first + steps] = self.stepper.run(chunk, noise[:, first : first + steps], temperature)
        return out

    @torch.inference_mode()
    def proceed(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """`generate` from the stepper's current state (a stream's next chunk of whole frames): no reset."""
        dev = self.pack.device
        noise = noise.to(dev, torch.float32)[..., 0]
        out = torch.empty(noise.shape, dtype=torch.long, device=dev)
        for first, chunk in self._chunks(cond):
            steps = chunk.shape[1]
            if steps != self.stepper.steps:
                raise ValueError(f"a stream's chunks are whole frames of {self.stepper.steps} steps, got {steps}")
            out[:, first : first + steps] = self.stepper.run(chunk, noise[:, first : first + steps], temperature)
        return out

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """cond [B, F + taps - 1, D (+E)]; targets [B, T] -> logits [B, T, classes] (as `WaveNet.forward_logits`)."""
        dev = self.pack.device
        targets = targets.to(dev)
        batch, total = targets.shape
        logits = torch.empty(batch, total, self.pack.classes, device=dev)
        noise = torch.full((batch, total), 0.5, device=dev)
        self.stepper.reset()
        for first, chunk in self._chunks(cond):
            steps = min(chunk.shape[1], total - first)
            if steps <= 0:
                break
            span = slice(first, first + steps)
            chunk_logits = logits[:, span].contiguous()
            self.stepper.run(chunk[:, :steps], noise[:, span], 1.0, targets[:, span].contiguous(), chunk_logits)
            logits[:, span] = chunk_logits
        return logits
