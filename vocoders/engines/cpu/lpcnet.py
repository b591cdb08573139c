"""The 'cpu' engine for LPCNet: the whole autoregressive loop in numba, no Python per sample.

Before the loop, PyTorch folds every embedding into the GRU's input matrix (three tables
[256, 3H]: the rows W_ih[:, block] @ E^T, one per mu-law class) and projects the frame-rate
features with W_ih's conditioning columns (frames x 3H, `linear_rows`, so a frame's projection
does not depend on how many frames are projected together and streams get the same numbers);
the loop interpolates that projection per sample with the upsampler's kernel, which is exact
in real arithmetic because the upsampler is linear and shared across channels. Per sample and
stream the loop then does what `LPCNet.step` does:

    p = sum_k c_k s_{t-1-k}                 float32, k in increasing order from 0.0 (`lpc.predict_step`)
    gi = b_ih + T_s[mu(s_{t-1})] + T_p[mu(p)] + T_e[e_{t-1}] + sum_k T_k[e_{t-T+k}] + sum_j up[phase, j] proj[frame + j]
    GRU (r, z, n as PyTorch), logits = O2 relu(O1 h)
    e_t = inverse-CDF draw (float64, `sampling.sample_categorical`), or from the forced sample
    s_t = pcm(p + mu^-1(e_t))

With long-term prediction the taps T_k read a memory of the last excitation classes at the
frame's period T (a conditioning channel), one table [256, 3H] per tap. With the pulse-phase
input a pulse clock (the integer recurrence of `LPCNet.step`) adds the row of its phase class.
With the long-term predictor, p adds g * sum_j h_j r_{t-T+j-M} over a memory of the short-term
residuals r = s - p_short, summed as `lpc.long_term_step` sums.

The prediction, the mu-law classes, the PCM rounding and the draw reproduce the reference's
arithmetic exactly; the matrix products and the gate functions sum and round in their own order
(within about 1e-6 of the logits), as in the other compiled engines. mu-law encoding is a search
over the float32 class thresholds of `vocoders.audio.mulaw_encode` itself, found once per
process by bisection over float32 values (torch's float32 log1p is not the C library's, so
recomputing the formula here would disagree next to some boundaries).

All streams of a batch step together on one thread, sharing each read of the weights. No
fastmath: the float32 sums that must match the reference keep their order and rounding.
Weights are packed at construction (the engine sees the weights the model had then).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from ...models.base import VocoderModel
from ...models.layers import FrameUpsampler, linear_rows
from ...models.lpcnet import EXCITATION_CLASSES, LPCNet
from ...models.lpcnet_numba import (  # noqa: F401  (re-exported for the tests)
    _PCM_HALF,
    _PCM_MAX,
    mulaw_class,
    mulaw_classes,
    mulaw_tables,
    pcm_class,
    pcm_class_array,
    pcm_value,
)
from ..base import Engine, EngineStream
from .numba_ops import sample_inverse_cdf_floored

# Samples per call into the loop; the state carries over, and Ctrl-C is honoured between calls.
CHUNK_STEPS = 8192


# ---- the loop --------------------------------------------------------------------------------------
@njit(inline="always")
def _accumulate(acc, weights, x, n_in, n_out, batch):
    """acc[b, :n_out] += weights[:n_in, :n_out].T @ x[b, :n_in] for every stream b (weights input-major).

    Eight inputs per pass (then four, then one), every stream in turn: the weight rows of a pass are
    read from memory once and from the cache for the other streams, and each accumulator is loaded
    and stored once per eight products. (These sums need not match the reference's bit for bit.)
    """
    i = 0
    while i + 8 <= n_in:
        for b in range(batch):
            x0, x1, x2, x3 = x[b, i], x[b, i + 1], x[b, i + 2], x[b, i + 3]
            x4, x5, x6, x7 = x[b, i + 4], x[b, i + 5], x[b, i + 6], x[b, i + 7]
            for o in range(n_out):
                low = weights[i, o] * x0 + weights[i + 1, o] * x1 + weights[i + 2, o] * x2 + weights[i + 3, o] * x3
                high = weights[i + 4, o] * x4 + weights[i + 5, o] * x5 + weights[i + 6, o] * x6 + weights[i + 7, o] * x7
                acc[b, o] += low + high
        i += 8
    while i + 4 <= n_in:
        for b in range(batch):
            x0, x1, x2, x3 = x[b, i], x[b, i + 1], x[b, i + 2], x[b, i + 3]
            for o in range(n_out):
                acc[b, o] += (
                    weights[i, o] * x0 + weights[i + 1, o] * x1 + weights[i + 2, o] * x2 + weights[i + 3, o] * x3
                )
        i += 4
    while i < n_in:
        for b in range(batch):
            xi = x[b, i]
            for o in range(n_out):
                acc[b, o] += weights[i, o] * xi
        i += 1


@njit(inline="always")
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + math.exp(-x))


@njit(cache=True, nogil=True)
def lpcnet_loop(
    table_s,  # [256, 3H] f32: W_ih[:, signal embedding] @ E_s^T, one row per class
    table_p,  # [256, 3H] f32: the prediction's
    table_e,  # [256, 3H] f32: the previous excitation's
    table_taps,  # [K * 256, 3H] f32: tap j's class c is row j * 256 + c (K = 0: no taps)
    tap_offsets,  # [K] int64: k of tap j, reading e_{t-T+k}
    period,  # [B, F] int64 each frame's period T (read only with taps or phase)
    table_phase,  # [P + 1, 3H] f32: the phase class's row (0 rows: no phase input)
    voiced,  # [B, F] int64 each frame's voicing 0/1 (read only with phase or the long-term predictor)
    ltp_taps,  # [2M + 1] f32 the long-term predictor's low-pass (0 taps: none)
    ltp_gain,  # float32 its gain in voiced frames
    ltp_limit,  # float32 bound on the filtered band before the gain (0: none)
    bias_ih,  # [3H] f32
    w_hh,  # [H, 3H] f32 input-major
    bias_hh,  # [3H] f32
    o1,  # [H, O] f32 input-major
    o1_bias,  # [O]
    o2,  # [O, 256] f32 input-major
    o2_bias,  # [256]
    thresholds,  # [255] f32 mu-law class thresholds (`mulaw_tables`)
    decoded,  # [256] f32 mu-law class values
    upsample,  # [hop, taps] f32 upsampler kernel
    projected,  # [B, F + 2u, 3H] f32 frame-rate conditioning projection
    lpc,  # [B, F, order] f32 each frame's predictor
    scale,  # [B, F] f32 each frame's excitation scale a (ones without the frame gain)
    noise,  # [B, T] f32 uniform
    temperature,
    voiced_temperature,  # factor on the temperature in voiced frames (1: none; read only with `voiced`)
    floor,  # the sampling floor (`LPCNet.sampling_floor`; 0 = off)
    forced,  # [B, T] int64 PCM classes to feed back, or [B, 0] to sample
    hidden,  # [B, H] f32 state, updated in place
    history,  # [B, order] f32 s_{t-1}, s_{t-2}, ..., updated in place
    excitation,  # [B] int64 previous excitation class, updated in place
    memory,  # [B, R] int64 e_{t-1}, e_{t-2}, ..., updated in place (R = 0 without taps)
    clock,  # [B] int64 samples since the last pulse, updated in place
    residuals,  # [B, R'] f32 r_{t-1}, r_{t-2}, ... short-term residuals, updated in place (R' = 0 without LTP)
    samples_out,  # [B, T] int64
    logits_out,  # [B, T, 256] f32 to record logits, or [B, 0, 256]
    start,  # first step of this call
    stop,  # one past its last step
):
    batch = hidden.shape[0]
    H = hidden.shape[1]
    G = 3 * H
    O = o1.shape[1]
    C = o2.shape[1]
    order = history.shape[1]
    hop = upsample.shape[0]
    taps = upsample.shape[1]
    record = logits_out.shape[1] > 0
    n_taps = tap_offsets.shape[0]
    bins = table_phase.shape[0] - 1  # -1: no phase input
    n_ltp = ltp_taps.shape[0]
    ltp_half = n_ltp // 2
    reach_r = residuals.shape[1]
    gain32 = np.float32(ltp_gain)
    limit32 = np.float32(ltp_limit)
    short = np.empty(batch, np.float32)
    reach = memory.shape[1]
    forcing = forced.shape[1] > 0
    sharpen = voiced.shape[1] > 0 and voiced_temperature != 1.0 and temperature > 0.0
    one = np.float32(1.0)
    zero = np.float32(0.0)

    gi = np.empty((batch, G), np.float32)
    gh = np.empty((batch, G), np.float32)
    inner = np.empty((batch, O), np.float32)
    logits = np.empty((batch, C), np.float32)
    prediction = np.empty(batch, np.float32)
    cdf = np.empty(C, np.float64)

    for t in range(start, stop):
        frame = t // hop
        phase = t - frame * hop
        for b in range(batch):
            p = zero
            for k in range(order):  # the order and rounding of lpc.predict_step
                p = p + lpc[b, frame, k] * history[b, k]
            short[b] = p
            if n_ltp > 0:  # lpc.long_term_step: the gain is 0 in unvoiced frames
                lag = period[b, frame]
                y = zero
                for j in range(n_ltp):
                    y = y + ltp_taps[j] * residuals[b, lag - (j - ltp_half) - 1]
                if limit32 > zero:
                    y = min(max(y, -limit32), limit32)
                g = gain32 if voiced[b, frame] != 0 else zero
                p = p + g * y
            prediction[b] = p
            cs = mulaw_class(history[b, 0], thresholds)
            cp = mulaw_class(p, thresholds)
            ce = excitation[b]
            for g in range(G):
                gi[b, g] = bias_ih[g] + table_s[cs, g] + table_p[cp, g] + table_e[ce, g]
            if n_taps > 0:
                lag = period[b, frame]
                for j in range(n_taps):
                    row = j * 256 + memory[b, lag - tap_offsets[j] - 1]
                    for g in range(G):
                        gi[b, g] += table_taps[row, g]
            if bins > 0:
                lag = period[b, frame]
                n = clock[b]
                if n >= lag:
                    n = 0
                if voiced[b, frame] != 0:
                    cls = n  # `pitch.cycle_classes`
                    if n >= bins // 2:
                        half = bins // 2
                        cls = half + ((n - half) * (bins - half)) // max(lag - half, 1)
                    clock[b] = n + 1
                else:
                    cls = bins
                    clock[b] = 0
                for g in range(G):
                    gi[b, g] += table_phase[cls, g]
            for j in range(taps):
                u = upsample[phase, j]
                for g in range(G):
                    gi[b, g] += u * projected[b, frame + j, g]
            for g in range(G):
                gh[b, g] = bias_hh[g]
        _accumulate(gh, w_hh, hidden, H, G, batch)
        for b in range(batch):
            for j in range(H):
                r = _sigmoid(gi[b, j] + gh[b, j])
                z = _sigmoid(gi[b, H + j] + gh[b, H + j])
                n = math.tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
                hidden[b, j] = z * hidden[b, j] + (one - z) * n
            for o in range(O):
                inner[b, o] = o1_bias[o]
        _accumulate(inner, o1, hidden, H, O, batch)
        for b in range(batch):
            for o in range(O):
                inner[b, o] = max(inner[b, o], zero)
            for c in range(C):
                logits[b, c] = o2_bias[c]
        _accumulate(logits, o2, inner, O, C, batch)
        for b in range(batch):
            if record:
                for c in range(C):
                    logits_out[b, t, c] = logits[b, c]
            p = prediction[b]
            a = scale[b, frame]
            if forcing:
                sample = forced[b, t]
                signal = pcm_value(sample)
                e = mulaw_class(np.float32(np.float32(signal - p) / a), thresholds)
            else:
                tb = temperature
                if sharpen and voiced[b, frame] != 0:
                    tb = temperature * voiced_temperature
                e = sample_inverse_cdf_floored(logits[b], noise[b, t], tb, floor, cdf)
                sample = pcm_class(np.float32(p + np.float32(a * decoded[e])))
                signal = pcm_value(sample)
            samples_out[b, t] = sample
            excitation[b] = e
            for k in range(reach - 1, 0, -1):
                memory[b, k] = memory[b, k - 1]
            if reach > 0:
                memory[b, 0] = e
            for k in range(order - 1, 0, -1):
                history[b, k] = history[b, k - 1]
            history[b, 0] = signal
            if reach_r > 0:
                for k in range(reach_r - 1, 0, -1):
                    residuals[b, k] = residuals[b, k - 1]
                residuals[b, 0] = signal - short[b]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy copy."""
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy()).copy()


class LPCNetCPUEngine(Engine):
    """LPCNet on the CPU, one numba loop for all streams of a batch (one thread; `threads` is accepted
    for the 'cpu' engine's signature and ignored)."""

    name = "cpu"
    dtypes = ("float32",)

    def __init__(
        self,
        model: VocoderModel,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
        threads: int | None = None,
    ) -> None:
        reason = self.available(model, device)
        if reason is not None:
            raise RuntimeError(f"engine {self.name!r} cannot run {model.name} on {device}: {reason}")
        super().__init__(model, device, dtype)
        E, K = model.embedding, model.pitch_taps
        with torch.no_grad():
            w_ih = model.gru_weight_ih.detach().float().cpu()
            self.table_s = _numpy(linear_rows(model.embed_signal.weight.float().cpu(), w_ih[:, :E]))
            self.table_p = _numpy(linear_rows(model.embed_prediction.weight.float().cpu(), w_ih[:, E : 2 * E]))
            self.table_e = _numpy(linear_rows(model.embed_excitation.weight.float().cpu(), w_ih[:, 2 * E : 3 * E]))
            tables = []
            for j in range(K):
                rows = model.embed_taps.weight[j * EXCITATION_CLASSES : (j + 1) * EXCITATION_CLASSES]
                tables.append(linear_rows(rows.float().cpu(), w_ih[:, (3 + j) * E : (4 + j) * E]))
            width = 3 * model.hidden_size
            self.table_taps = _numpy(torch.cat(tables) if tables else torch.zeros(0, width))
            self.tap_offsets = np.array(list(model.tap_offsets), np.int64)
            if model.pitch_phase:
                column = (3 + K) * E
                self.table_phase = _numpy(
                    linear_rows(model.embed_phase.weight.float().cpu(), w_ih[:, column : column + E])
                )
            else:
                self.table_phase = np.zeros((0, width), np.float32)
            self.w_cond = w_ih[:, model.embedded_inputs * E :].contiguous().clone()  # [3H, D], applied at frame rate
            self.ltp_taps = _numpy(model.ltp_taps) if model.ltp_gain else np.zeros(0, np.float32)
            self.bias_ih = _numpy(model.gru_bias_ih)
            self.w_hh = _numpy(model.gru_weight_hh.t())  # [H, 3H]
            self.bias_hh = _numpy(model.gru_bias_hh)
            self.o1, self.o1_bias = _numpy(model.O1.weight.t()), _numpy(model.O1.bias)
            self.o2, self.o2_bias = _numpy(model.O2.weight.t()), _numpy(model.O2.bias)
            self.upsample = _numpy(model.upsampler.weight)
        self.thresholds, self.decoded = mulaw_tables()

    @classmethod
    def available(cls, model: VocoderModel, device: torch.device | str) -> str | None:
        if torch.device(device).type != "cpu":
            return "it runs on the CPU only"
        if not isinstance(model, LPCNet):
            return f"this loop runs lpcnet models, not {model.name}"
        for method in ("step", "upsample"):
            if getattr(type(model), method) is not getattr(LPCNet, method):
                return f"the loop implements LPCNet's own {method}, which {type(model).__name__} overrides"
        if type(model.upsampler) is not FrameUpsampler:
            return "the loop needs the linear FrameUpsampler"
        return None

    def weight_bytes(self) -> int:
        """Bytes of weights the loop reads per sample (the 3 + K table rows, R, O1, O2, biases)."""
        row = self.table_s.shape[1] * 4
        arrays = (self.w_hh, self.o1, self.o2, self.bias_ih, self.bias_hh, self.o1_bias, self.o2_bias)
        return self.model.embedded_inputs * row + int(sum(a.nbytes for a in arrays))

    def initial_loop_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """(hidden [B, H] zeros, history [B, order] zeros, previous excitation [B] = 128, excitation
        memory [B, R] = 128, pulse clock [B] zeros, residual memory [B, R'] zeros): `LPCNet.initial_state`."""
        m = self.model
        return (
            np.zeros((batch, m.hidden_size), np.float32),
            np.zeros((batch, m.lpc_order), np.float32),
            np.full(batch, EXCITATION_CLASSES // 2, np.int64),
            np.full((batch, m.excitation_memory), EXCITATION_CLASSES // 2, np.int64),
            np.zeros(batch, np.int64),
            np.zeros((batch, m.residual_memory), np.float32),
        )

    @torch.inference_mode()
    def generate(self, cond: torch.Tensor, noise: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return LPCNetCpuStream(self, cond.shape[0], temperature).run(cond, noise)

    @torch.inference_mode()
    def forced_logits(self, cond: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        batch, steps = cond.shape[0], self.model.num_samples(cond)
        if tuple(targets.shape) != (batch, steps):
            expected = (batch, steps)
            raise ValueError(f"targets must have shape {expected} for this conditioning, got {tuple(targets.shape)}")
        forced = np.ascontiguousarray(targets.detach().to("cpu", torch.long).numpy())
        logits = np.empty((batch, steps, EXCITATION_CLASSES), np.float32)
        samples = np.empty((batch, steps), np.int64)
        noise = np.zeros((batch, steps), np.float32)
        self._run(cond, noise, forced, samples, logits, 1.0, self.initial_loop_state(batch))
        return torch.from_numpy(logits)

    def open_stream(self, batch: int, temperature: float = 1.0) -> EngineStream:
        return LPCNetCpuStream(self, batch, temperature)

    def _run(self, cond, noise, forced, samples, logits, temperature, state) -> None:
        """One chunk of conditioning [B, F + 2u, D + frame_channels] through the loop, state updated in place."""
        m = self.model
        D, u = m.cond_channels, m.upsample_context
        cond = cond.detach().to("cpu", torch.float32)
        frames = cond.shape[1] - 2 * u
        projected = np.ascontiguousarray(linear_rows(cond[..., :D], self.w_cond).numpy())
        lpc = np.ascontiguousarray(cond[:, u : u + frames, D : m.period_channel].numpy())
        per_frame = cond[:, u : u + frames]
        scale = per_frame[..., m.scale_channel] if m.excitation_rms else torch.ones(per_frame.shape[:2])
        scale = np.ascontiguousarray(scale.numpy())
        empty = np.zeros((cond.shape[0], 0), np.int64)
        period = per_frame[..., m.period_channel].round().long().numpy() if m.uses_pitch else empty
        voiced = (per_frame[..., m.period_channel + 1] > 0.5).long().numpy() if m.voicing else empty
        period, voiced = np.ascontiguousarray(period), np.ascontiguousarray(voiced)
        batch, steps = samples.shape
        if forced is None:
            forced = np.empty((batch, 0), np.int64)
        if logits is None:
            logits = np.empty((batch, 0, EXCITATION_CLASSES), np.float32)
        hidden, history, excitation, memory, clock, residuals = state
        for begin in range(0, steps, CHUNK_STEPS):
            lpcnet_loop(
                self.table_s, self.table_p, self.table_e, self.table_taps, self.tap_offsets, period,
                self.table_phase, voiced, self.ltp_taps, float(np.float32(m.ltp_gain)), float(np.float32(m.ltp_limit)),
                self.bias_ih, self.w_hh, self.bias_hh,
                self.o1, self.o1_bias, self.o2, self.o2_bias, self.thresholds, self.decoded, self.upsample,
                projected, lpc, scale, noise, float(temperature), float(m.voiced_temperature), float(m.sampling_floor),
                forced, hidden, history, excitation, memory, clock, residuals, samples, logits,
                begin, min(begin + CHUNK_STEPS, steps),
            )  # fmt: skip


class LPCNetCpuStream(EngineStream):
    """The compiled LPCNet loop, its hidden state, signal history and last excitation kept between chunks."""

    def __init__(self, engine: LPCNetCPUEngine, batch: int, temperature: float) -> None:
        self.engine, self.temperature = engine, temperature
        self.state = engine.initial_loop_state(batch)

    @torch.inference_mode()
    def run(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        engine = self.engine
        steps = engine.check_inputs(engine.model, cond, noise)
        if cond.shape[0] != self.state[0].shape[0]:
            raise ValueError(f"this stream has {self.state[0].shape[0]} streams, the chunk {cond.shape[0]}")
        samples = np.empty((cond.shape[0], steps), np.int64)
        uniform = np.ascontiguousarray(noise[..., 0].detach().to("cpu", torch.float32).numpy())
        engine._run(cond, uniform, None, samples, None, self.temperature, self.state)
        return torch.from_numpy(samples)
