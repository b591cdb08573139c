"""Subscale WaveRNN on the CUDA engine: B samples per step, a chunk of steps in one CUDA graph.

One staggered step t (see `SubscaleWaveRNN.step`, the reference) runs, for every stream of the batch:
- the masked dilated context CNN advanced by one coordinate for all B sub-tensors at once: per layer,
  one `index_select` of its K taps from a ring buffer and one `torch.baddbmm` over the B sub-tensors
  (each with its own weights); the layers' outputs are written back with `index_copy_`;
- the conditioning of all B sub-tensors (the upsampled mel at their sample positions + the context)
  projected by W_cond in one product;
- the WaveRNN core step (`GraphStepper._core_step`: the same ops as the plain `graph` kernel) for all
  batch * B streams at once; sub-tensors idle in this step (the ramp at the start and end of the
  staggered order) keep their state through `torch.where`;
- the new samples written into the context's input ring (zeros for slots outside the signal).

What is captured: `SubscaleGraphStepper` holds every tensor a step touches in static buffers, and on a
CUDA device a chunk of steps is captured once in a CUDA graph per (temperature, teacher forcing) and
replayed for every chunk of every utterance. Nothing in a step depends on a value on the host: the
per-step tables (ring slots to read and write, which sub-tensors run, which write inside the signal)
are computed on the device for the whole utterance, and before each replay the chunk's rows of them,
with its conditioning, noise and targets gathered at the sub-tensors' sample positions, are copied
into the static buffers. After the replay one `index_copy_` puts the chunk's samples at their sample
positions in the output. The host never reads a device value until the caller does.

Memory: ring buffers make the context's state independent of the utterance length: the inputs ring
holds R_in = (B - 1)(F + 1) + K + 1 coordinates x B sub-tensors x 2 values, each hidden ring
R_h = lookback + 1 coordinates x B x C (float32, per stream), each ring one coordinate more for the
scratch slots of `idle_rows`. The utterance's per-sample conditioning [batch, T, D] float32 and its
step tables (~(L + 2) * K * B int64 per step) stay on the device.
Weights: the core's in `dtype`; W_cond and the context CNN in float32.

Streaming (`SubscaleSamplerStream`, docs/streaming.md#subscale-wavernn): a stream runs the same rows
of the step tables as the conditioning arrives, those of `model.stream_steps`, in chunks of its own
stepper's steps, the last chunk of a push padded with rows that change nothing (`idle_rows`), and
keeps the per-sample conditioning, noise and samples from the first sample not yet made on.
"""

from __future__ import annotations

import logging

import torch

from ...models.subscale import SubscaleWaveRNN
from ..base import Engine, EngineStream, SampleWindow
from .wavernn import GraphStepper, _mm_float32
from .wavernn_pack import WaveRNNPack

log = logging.getLogger(__name__)


class ContextWeights:
    """The context CNN's weights laid out for one batched product per layer (float32, on `device`).

    w_in [B, K * B * 2, C] (masked; rows in (tap, source sub-tensor, value) order), b_in [B, 1, C];
    w_layers[n] [B, K * C, C] (rows in (tap, channel) order), b_layers[n] [B, 1, C]; w_out [B, C, D],
    b_out [B, 1, D].
    """

    def __init__(self, model: SubscaleWaveRNN, device: torch.device) -> None:
        ctx = model.context
        B, C, K, D = ctx.factor, ctx.channels, ctx.kernel, ctx.out_channels
        self.factor, self.channels, self.kernel, self.out_channels = B, C, K, D
        self.horizon, self.dilations, self.lookback = ctx.horizon, list(ctx.dilations), ctx.lookback

        def put(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device, torch.float32).contiguous()

        with torch.no_grad():
            w_in = ctx.masked_input_weight().reshape(B, C, B, 2, K).permute(0, 4, 2, 3, 1)
            self.w_in = put(w_in.reshape(B, K * B * 2, C))
            self.b_in = put(ctx.conv_in.bias.reshape(B, 1, C))
            self.w_layers = [
                put(layer.weight.reshape(B, C, C, K).permute(0, 3, 2, 1).reshape(B, K * C, C)) for layer in ctx.layers
            ]
            self.b_layers = [put(layer.bias.reshape(B, 1, C)) for layer in ctx.layers]
            self.w_out = put(ctx.conv_out.weight.reshape(B, D, C).transpose(1, 2))
            self.b_out = put(ctx.conv_out.bias.reshape(B, 1, D))

    @property
    def input_ring(self) -> int:
        """Coordinates the inputs ring keeps: a sample written by sub-tensor z is read last by sub-tensor
        B - 1, (B - 1 - z)(F + 1) - F + K - 1 steps later."""
        return (self.factor - 1) * (self.horizon + 1) + self.kernel + 1

    @property
    def hidden_ring(self) -> int:
        """Coordinates a hidden ring keeps: a layer reads its own sub-tensor back `lookback` coordinates."""
        return self.lookback + 1


def step_tables(
    weights: ContextWeights, num_samples: int, steps: int, device: torch.device, first: int = 0
) -> dict[str, torch.Tensor]:
    """Per-step index tables of an utterance of `num_samples` samples, `steps` steps from t = first - F.

    The first F steps (t < 0) only advance the context (no sub-tensor runs yet), as `start_state`
    does. Row u is step t = u - F; sub-tensor s is at position i = t - s(F + 1) and computes its
    context at coordinate i + F. Ring slots are coordinates modulo the ring length (flattened with the
    sub-tensor: slot * B + s, except `in_read`, whose rows hold every source sub-tensor).

    Returns, each [steps, ...]:
        in_read [K, B] inputs-ring rows tap k of reader s reads (coordinate - (K - 1 - k));
        hidden_read [L, K * B] per residual layer (its dilation), flat slots of its own sub-tensor;
        hidden_write [B] flat slot of the coordinate; live [B] bool: the coordinate is in [0, N + F)
            (else zeros are stored: the causal padding, and what the reference never stores);
        input_write [B] flat inputs-ring slot of the position; in_signal [B] bool: the position is a
            sample of the signal (else a zero is written: positions past the end read as zeros);
        running [B] bool: the core runs this sub-tensor (position in [0, N));
        sample [B] sample index B * i + s inside the signal, else 0 (a harmless gather);
        out [B] the same, else `num_samples` (the output's discard column).
    """
    B, Fh, K = weights.factor, weights.horizon, weights.kernel
    positions = -(-num_samples // B)
    sub = torch.arange(B, device=device)
    t = torch.arange(first, first + steps, device=device).unsqueeze(1) - Fh  # [S, 1]
    position = t - sub * (Fh + 1)  # [S, B]
    coordinate = position + Fh
    back = torch.arange(K - 1, -1, -1, device=device)  # tap k reads coordinate - (K - 1 - k) * dilation
    ring_in, ring_h = weights.input_ring, weights.hidden_ring
    in_read = torch.remainder(coordinate.unsqueeze(1) - back[:, None], ring_in)  # [S, K, B]
    hidden_read = [
        (torch.remainder(coordinate.unsqueeze(1) - d * back[:, None], ring_h) * B + sub).flatten(1)
        for d in weights.dilations
    ]
    running = (position >= 0) & (position < positions)
    index = B * position + sub
    in_signal = running & (index < num_samples)
    return {
        "in_read": in_read,
        "hidden_read": torch.stack(hidden_read, dim=1) if hidden_read else in_read.new_zeros(steps, 0, K * B),
        "hidden_write": torch.remainder(coordinate, ring_h) * B + sub,
        "live": (coordinate >= 0) & (coordinate < positions + Fh),
        "input_write": torch.remainder(position, ring_in) * B + sub,
        "in_signal": in_signal,
        "running": running,
        "sample": torch.where(in_signal, index, 0),
        "out": torch.where(in_signal, index, num_samples),
    }


def idle_rows(weights: ContextWeights, tables: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """Tables whose rows from `count` on are steps that change nothing (a stream's chunk padding).

    Such a row runs no sub-tensor and writes only the rings' scratch slots (the coordinate past each
    ring, `SubscaleGraphStepper`), so a chunk of steps may stop anywhere in the order and go on later.
    """
    B = weights.factor
    sub = torch.arange(B, device=tables["running"].device)
    tables = {name: table.clone() for name, table in tables.items()}
    for name in ("in_read", "hidden_read", "sample"):
        tables[name][count:] = 0
    for name in ("live", "in_signal", "running"):
        tables[name][count:] = False
    tables["hidden_write"][count:] = weights.hidden_ring * B + sub
    tables["input_write"][count:] = weights.input_ring * B + sub
    return tables


class SubscaleGraphStepper(GraphStepper):
    """Advances `batch` Subscale WaveRNN streams by a chunk of `steps` staggered steps.

    The core's state covers batch * B streams (stream b * B + s is sub-tensor s of utterance b). Per
    chunk `load` fills the static buffers (cond [batch, S, B, D], noise [batch, S, B, 2], targets
    [batch, S, B] and the step tables' rows); `run_chunk` runs the chunk (a CUDA graph replay on a CUDA
    device, the same ops eagerly with `use_graph=False`) into samples [batch, S, B] and, teacher
    forced, logits [batch, S, B, 2, classes].
    """

    model_name = "Subscale WaveRNN"

    def __init__(
        self,
        pack: WaveRNNPack,
        context: ContextWeights,
        batch: int,
        steps: int,
        use_graph: bool | None = None,
    ) -> None:
        dev = pack.recurrent.device
        B, C = context.factor, context.channels
        self.pack, self.context, self.batch, self.steps = pack, context, batch, steps
        self.use_graph = dev.type == "cuda" if use_graph is None else use_graph
        streams = batch * B
        self.hidden = torch.zeros(streams, pack.hidden, device=dev)
        self.prev = torch.full((streams,), pack.silence, dtype=torch.long, device=dev)
        # Each ring has one more coordinate than it keeps: the scratch slots the rows of `idle_rows` write.
        self.input_ring = torch.zeros(batch, context.input_ring + 1, B, 2, device=dev)
        self.hidden_rings = [
            torch.zeros(batch, (context.hidden_ring + 1) * B, C, device=dev) for _ in range(1 + len(context.dilations))
        ]
        self.cond = torch.zeros(batch, steps, B, pack.w_cond.shape[1], device=dev)
        self.noise = torch.full((batch, steps, B, 2), 0.5, device=dev)
        self.targets = torch.full((batch, steps, B), pack.silence, dtype=torch.long, device=dev)
        self.samples = torch.zeros(batch, steps, B, dtype=torch.long, device=dev)
        self.logits = torch.full((batch, steps, B, 2, pack.classes), float("-inf"), device=dev)
        empty = step_tables(context, 1, steps, dev)  # shapes and dtypes only; `load` overwrites them
        self.tables = {name: torch.zeros_like(table) for name, table in empty.items()}
        self.sub = torch.arange(B, device=dev)
        self._graphs: dict[tuple[float, bool], torch.cuda.CUDAGraph] = {}

    def reset(self) -> None:
        self.hidden.zero_()
        self.prev.fill_(self.pack.silence)
        self.input_ring.zero_()
        for ring in self.hidden_rings:
            ring.zero_()

    def _recurrent_state(self) -> tuple[torch.Tensor, ...]:
        return self.hidden, self.prev, self.input_ring, *self.hidden_rings

    def load(self, tables: dict[str, torch.Tensor], cond: torch.Tensor, noise: torch.Tensor, targets=None) -> None:
        """Copy one chunk into the static buffers: tables' rows [S, ...], cond [batch, S, B, D], noise
        [batch, S, B, 2], targets [batch, S, B] or None."""
        for name, table in tables.items():
            self.tables[name].copy_(table)
        self.cond.copy_(cond)
        self.noise.copy_(noise)
        if targets is not None:
            self.targets.copy_(targets)

    def run_chunk(self, temperature: float = 1.0, forced: bool = False) -> None:
        if self.use_graph:
            self._graph(float(temperature), forced).replay()
        else:
            self._chunk(float(temperature), forced)

    # ---- one step, plain ops --------------------------------------------------------------------
    def _context(self, t: int) -> torch.Tensor:
        """Advance the context CNN of all B sub-tensors by one coordinate -> context [B, batch, D]."""
        w, tab = self.context, self.tables
        B, K, batch = w.factor, w.kernel, self.batch
        live = tab["live"][t].view(1, B, 1)
        x = self.input_ring.view(batch, -1, 2 * B).index_select(1, tab["in_read"][t].flatten())
        x = x.view(batch, K, B, 2 * B).permute(2, 0, 1, 3).reshape(B, batch, -1)  # [reader, batch, (k, z, v)]
        h = torch.relu(torch.baddbmm(w.b_in, x, w.w_in))  # [B, batch, C]
        self._store(0, h, tab["hidden_write"][t], live)
        for n, (weight, bias) in enumerate(zip(w.w_layers, w.b_layers, strict=True)):
            x = self.hidden_rings[n].index_select(1, tab["hidden_read"][t, n])  # [batch, K * B, C]
            x = x.view(batch, K, B, -1).permute(2, 0, 1, 3).reshape(B, batch, -1)
            h = h + torch.relu(torch.baddbmm(bias, x, weight))
            self._store(n + 1, h, tab["hidden_write"][t], live)
        return torch.baddbmm(w.b_out, h, w.w_out)

    def _store(self, ring: int, h: torch.Tensor, slots: torch.Tensor, live: torch.Tensor) -> None:
        """h [B, batch, C] into hidden ring `ring` at slots [B]; zeros for coordinates outside [0, N + F)."""
        value = torch.where(live, h.transpose(0, 1), 0.0)
        self.hidden_rings[ring].index_copy_(1, slots, value)

    def _step(self, t: int, temperature: float, forced: bool) -> None:
        p, tab, B, batch = self.pack, self.tables, self.context.factor, self.batch
        context = self._context(t).transpose(0, 1)  # [batch, B, D]
        cond = (self.cond[:, t] + context).flatten(0, 1)  # [batch * B, D]
        inputs = _mm_float32(cond, p.w_cond) + p.bias_ih
        h, sample, logits_c, logits_f = self._core_step(
            self.hidden,
            self.prev,
            inputs,
            self.noise[:, t].flatten(0, 1),
            self.targets[:, t].flatten(0, 1),
            temperature,
            forced,
        )
        keep = tab["running"][t].repeat(batch)  # idle sub-tensors keep their state
        self.hidden.copy_(torch.where(keep.unsqueeze(1), h, self.hidden))
        self.prev.copy_(torch.where(keep, sample, self.prev))
        sample = sample.view(batch, B)
        self.samples[:, t] = sample
        if forced:
            self.logits[:, t, :, 0, : p.coarse_classes] = logits_c.view(batch, B, -1)
            self.logits[:, t, :, 1, : p.fine_classes] = logits_f.view(batch, B, -1)
        fine_mask = p.fine_classes - 1
        values = torch.stack(
            [self._scale(sample >> p.fine_bits, p.coarse_classes), self._scale(sample & fine_mask, p.fine_classes)],
            dim=-1,
        )  # [batch, B, 2], as `SubscaleWaveRNN.context_values`
        values = torch.where(tab["in_signal"][t].view(1, B, 1), values, 0.0)
        self.input_ring.view(batch, -1, 2).index_copy_(1, tab["input_write"][t], values)


class SubscaleSampler:
    """Generation and teacher forcing of a Subscale WaveRNN over chunks of the stepper's steps."""

    def __init__(self, model: SubscaleWaveRNN, pack: WaveRNNPack, stepper: SubscaleGraphStepper) -> None:
        self.model, self.pack, self.stepper = model, pack, stepper
        self.factor, self.horizon = model.subscale, model.horizon

    def per_sample(self, cond: torch.Tensor) -> torch.Tensor:
        """Frame-rate conditioning [batch, F + taps - 1, D] -> per-sample [batch, F * hop, D] (the upsampler)."""
        p = self.pack
        batch, length, width = cond.shape
        windows = cond.to(p.upsample_weight.device, torch.float32).unfold(1, p.taps, 1)  # [b, F, D, taps]
        out = torch.einsum("bfdk,pk->bfpd", windows, p.upsample_weight)
        return out.reshape(batch, -1, width)

    def _run(self, cond, noise, temperature, targets, logits):
        """Every chunk of the utterance; returns samples [batch, T]; fills logits [batch, T, 2, K] if forced."""
        stepper, dev = self.stepper, self.pack.recurrent.device
        per_sample = self.per_sample(cond)
        batch, total = per_sample.shape[:2]
        chunk = stepper.steps
        steps = self.horizon + len(self.model.generation_order(total))  # the order's steps, after F to start
        steps = -(-steps // chunk) * chunk
        tables = step_tables(stepper.context, total, steps, dev)
        out = torch.zeros(batch, total + 1, dtype=torch.long, device=dev)  # last column: discarded slots
        forced = targets is not None
        stepper.reset()
        for first in range(0, steps, chunk):
            rows = {name: table[first : first + chunk] for name, table in tables.items()}
            index = rows["sample"].flatten()  # [S * B]
            chunk_cond = per_sample.index_select(1, index).view(batch, chunk, self.factor, -1)
            chunk_noise = noise.index_select(1, index).view(batch, chunk, self.factor, 2)
            chunk_targets = None if not forced else targets.index_select(1, index).view(batch, chunk, self.factor)
            stepper.load(rows, chunk_cond, chunk_noise, chunk_targets)
            stepper.run_chunk(temperature, forced)
            where = rows["out"].flatten()
            out.index_copy_(1, where, stepper.samples.flatten(1, 2))
            if forced:
                logits.index_copy_(1, where, stepper.logits.flatten(1, 2))
        return out[:, :total]

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """cond [batch, F + taps - 1, D]; noise [batch, F * hop, 2] -> samples [batch, F * hop] int64."""
        dev = self.pack.recurrent.device
        return self._run(cond.to(dev), noise.to(dev, torch.float32), temperature, None, None)

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """cond [batch, F + taps - 1, D]; targets [batch, T] -> logits [batch, T, 2, K] (as `forward_logits`)."""
        dev, p = self.pack.recurrent.device, self.pack
        targets = targets.to(dev)
        batch, total = targets.shape
        logits = torch.full((batch, total + 1, 2, p.classes), float("-inf"), device=dev)
        noise = torch.full((batch, total, 2), 0.5, device=dev)
        self._run(cond.to(dev), noise, 1.0, targets, logits)
        return logits[:, :total]


class SubscaleSamplerStream(EngineStream):
    """A stream over its own sampler: the whole utterance's staggered order run as conditioning arrives.

    Each chunk runs the rows of the step tables its conditioning allows (`model.stream_steps`, after
    the F rows that start the context), built for a signal as long as what has arrived (the rows are
    those of any longer one), in chunks of the stepper's steps, the last padded with `idle_rows`. It
    returns the samples made up to the first one still missing (`model.stream_made`); `finish` runs
    the rest of the order with the end where it fell. The per-sample conditioning, noise and samples
    are kept on the device from the first sample not yet made on (and the last one that has arrived:
    a slot past the end reads some row) in a `SampleWindow`. The host reads no device value.
    """

    def __init__(self, sampler: SubscaleSampler, batch: int, temperature: float) -> None:
        self.sampler, self.model, self.temperature = sampler, sampler.model, temperature
        self.stepper, self.device = sampler.stepper, sampler.pack.recurrent.device
        self.stepper.reset()
        self.row = 0  # the next row of the step tables (step row - F)
        self.returned = 0  # samples returned
        width = sampler.pack.w_cond.shape[1]
        self.window = SampleWindow(
            batch, self.device, cond=((width,), torch.float32), noise=((2,), torch.float32), samples=((), torch.long)
        )

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        Engine.check_inputs(self.model, cond, noise)
        per_sample = self.sampler.per_sample(cond.to(self.device))
        self.window.append(cond=per_sample, noise=noise.to(self.device, torch.float32))
        return self._advance(ended=False)

    @torch.inference_mode()
    def finish(self) -> torch.Tensor | None:
        return self._advance(ended=True) if self.window.end else None

    def _advance(self, ended: bool) -> torch.Tensor:
        model, window, stepper = self.model, self.window, self.stepper
        weights, B, Fh = stepper.context, model.subscale, model.horizon
        known, origin, length = window.end, window.origin, window.length
        batch, chunk = window.batch, stepper.steps
        last = Fh + model.stream_steps(known, ended)
        cond, noise = window.rows("cond"), window.rows("noise")
        # the window's samples and a last column where the chunks' slots outside the signal go
        samples = torch.cat([window.rows("samples"), window.rows("samples").new_zeros(batch, 1)], dim=1)
        while self.row < last:
            count = min(chunk, last - self.row)
            tables = step_tables(weights, known, chunk, self.device, first=self.row)
            if count < chunk:
                tables = idle_rows(weights, tables, count)
            inside = tables["in_signal"]
            rows = torch.where(inside, tables["sample"] - origin, 0).flatten()  # [S * B] rows of the window
            stepper.load(
                tables,
                cond.index_select(1, rows).view(batch, chunk, B, -1),
                noise.index_select(1, rows).view(batch, chunk, B, 2),
            )
            stepper.run_chunk(self.temperature)
            where = torch.where(inside, tables["sample"] - origin, length).flatten()
            samples.index_copy_(1, where, stepper.samples.flatten(1, 2))
            self.row += count
        window.rows("samples").copy_(samples[:, :length])
        made = model.stream_made(self.row - Fh, known)
        out = window.rows("samples")[:, self.returned - origin : made - origin].clone()
        self.returned = made
        window.drop(min(made, known - 1) - origin)  # keep the last row: a slot past the end reads one
        return out
