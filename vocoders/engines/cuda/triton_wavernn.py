"""The WaveRNN step as Triton kernels: one launch per phase, or one persistent launch per chunk.

Step t of stream b (H units, half = H / 2, O = out_hidden, Kc / Kf classes):
    A  gh = R h + b_hh, gi = inputs[t] + W_prev [c_prev, f_prev]; the coarse units finish h'
    B  y_c = relu(O1 h'_coarse + b1)            C  logits_c = O2 y_c + b2
    D  draw c_t; the fine units add c_t's column to gi and finish h'
    E  y_f = relu(O3 h'_fine + b3)              F  logits_f = O4 y_f + b4
    G  draw f_t, emit c_t * 2^fine_bits + f_t
Each phase needs all of the previous phase's output, so phases are separated by a grid-wide sync.
Program p owns hidden units [p * UNITS, ...), rows [p * ROWS_O, ...) of O1 and O3, and rows
[p * ROWS_K, ...) of O2 and O4.

The phase bodies are `@triton.jit` helpers that two drivers share:
- phased: one kernel launch per phase (the launch boundary is the sync), 7 launches per step. It
  runs under the Triton interpreter with any number of programs, which is how CI tests the phases.
- persistent: one launch per chunk of steps. Each program loads its slices of R, O1..O4 into
  registers once and keeps them on chip across steps (the WaveRNN paper's GPU kernel); phases are
  separated by `grid_sync`. Every program draws c_t and f_t itself from the same logits (same data,
  same code, same class), which saves two syncs: 6 per step. Needs all programs resident at once
  (grid <= SMs); under the interpreter programs run one after another, so only a grid of 1 runs there.

Buffers (see `TritonWaveRNN`): hidden [2, B, H] double-buffered by step parity (step t reads one
half and writes the other, so no program overwrites a vector another is still reading), prev [B]
samples, coarse [B], preacts [B, 6, H] (gi_r, gi_z, gi_n, gh_r, gh_z, gh_n kept for the fine units
between phases A and D), layer [B, 2, O], logits [B, (S,) 2, K] (step stride 0 when free-running),
counter [1] int32 (zeroed per launch).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import draw_class, grid_sync, load_exchanged, load_tile, matvec, pick, tanh
from .wavernn_pack import WaveRNNPack


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# ---- phase bodies (shared by both drivers) --------------------------------------------------------
@triton.jit
def _gru(gi_r, gi_z, gi_n, gh_r, gh_z, gh_n, h_old):
    r = tl.sigmoid(gi_r + gh_r)
    z = tl.sigmoid(gi_z + gh_z)
    n = tanh(gi_n + r * gh_n)
    return z * h_old + (1.0 - z) * n


@triton.jit
def _phase_recurrent(
    b, t, unit0, rec_r, rec_z, rec_n, sample_prev,
    bias_hh_ptr, w_prev_ptr, inputs_ptr, stride_ib, stride_it, src_ptr, dst_ptr, preacts_ptr,
    H, half, coarse_scale, fine_scale,
    FINE_BITS: tl.constexpr, UNITS: tl.constexpr, HP: tl.constexpr,
):  # fmt: skip
    """Phase A for stream b: the recurrent product of the owned units; coarse units store h'."""
    units = unit0 + tl.arange(0, UNITS)
    owned = units < H
    c_prev = (sample_prev >> FINE_BITS).to(tl.float32) * coarse_scale - 1.0
    f_prev = (sample_prev & ((1 << FINE_BITS) - 1)).to(tl.float32) * fine_scale - 1.0
    h = load_exchanged(src_ptr + b * H, 0, H, HP)
    # plain masked loads of the owned units' vectors (a helper call per load costs the interpreter)
    gh_r = matvec(rec_r, h) + tl.load(bias_hh_ptr + units, mask=owned, other=0.0)
    gh_z = matvec(rec_z, h) + tl.load(bias_hh_ptr + H + units, mask=owned, other=0.0)
    gh_n = matvec(rec_n, h) + tl.load(bias_hh_ptr + 2 * H + units, mask=owned, other=0.0)
    x = inputs_ptr + b * stride_ib + t * stride_it + units
    cp = w_prev_ptr + units
    fp = w_prev_ptr + 3 * H + units
    gi_r = tl.load(x, mask=owned, other=0.0) + c_prev * tl.load(cp, mask=owned, other=0.0)
    gi_r = gi_r + f_prev * tl.load(fp, mask=owned, other=0.0)
    gi_z = tl.load(x + H, mask=owned, other=0.0) + c_prev * tl.load(cp + H, mask=owned, other=0.0)
    gi_z = gi_z + f_prev * tl.load(fp + H, mask=owned, other=0.0)
    gi_n = tl.load(x + 2 * H, mask=owned, other=0.0) + c_prev * tl.load(cp + 2 * H, mask=owned, other=0.0)
    gi_n = gi_n + f_prev * tl.load(fp + 2 * H, mask=owned, other=0.0)
    h_old = tl.load(src_ptr + b * H + units, mask=owned, other=0.0, cache_modifier=".cg")
    h_new = _gru(gi_r, gi_z, gi_n, gh_r, gh_z, gh_n, h_old)
    tl.store(dst_ptr + b * H + units, h_new, mask=owned & (units < half))
    fine = owned & (units >= half)
    row = preacts_ptr + b * 6 * H + units
    tl.store(row, gi_r, mask=fine)
    tl.store(row + H, gi_z, mask=fine)
    tl.store(row + 2 * H, gi_n, mask=fine)
    tl.store(row + 3 * H, gh_r, mask=fine)
    tl.store(row + 4 * H, gh_z, mask=fine)
    tl.store(row + 5 * H, gh_n, mask=fine)


@triton.jit
def _phase_fine(b, unit0, coarse, w_now_ptr, src_ptr, dst_ptr, preacts_ptr, H, half, coarse_scale, UNITS: tl.constexpr):
    """Phase D for stream b: add c_t's input column to the fine units' gates and store their h'."""
    units = unit0 + tl.arange(0, UNITS)
    fine = (units < H) & (units >= half)
    c_now = coarse.to(tl.float32) * coarse_scale - 1.0
    row = preacts_ptr + b * 6 * H + units
    w_now = w_now_ptr + units
    gi_r = tl.load(row, mask=fine, other=0.0, cache_modifier=".cg") + c_now * tl.load(w_now, mask=fine, other=0.0)
    gi_z = tl.load(row + H, mask=fine, other=0.0, cache_modifier=".cg")
    gi_z = gi_z + c_now * tl.load(w_now + H, mask=fine, other=0.0)
    gi_n = tl.load(row + 2 * H, mask=fine, other=0.0, cache_modifier=".cg")
    gi_n = gi_n + c_now * tl.load(w_now + 2 * H, mask=fine, other=0.0)
    gh_r = tl.load(row + 3 * H, mask=fine, other=0.0, cache_modifier=".cg")
    gh_z = tl.load(row + 4 * H, mask=fine, other=0.0, cache_modifier=".cg")
    gh_n = tl.load(row + 5 * H, mask=fine, other=0.0, cache_modifier=".cg")
    h_old = tl.load(src_ptr + b * H + units, mask=fine, other=0.0, cache_modifier=".cg")
    h_new = _gru(gi_r, gi_z, gi_n, gh_r, gh_z, gh_n, h_old)
    tl.store(dst_ptr + b * H + units, h_new, mask=fine)


@triton.jit
def _phase_dense(
    tile, row0, bias_ptr, n_rows, x_ptr, n_in, out_ptr, RELU: tl.constexpr, ROWS: tl.constexpr, IN_P: tl.constexpr
):
    """Phases B, C, E, F: the owned rows of y = W x + bias (relu'd for B and E)."""
    x = load_exchanged(x_ptr, 0, n_in, IN_P)
    rows = row0 + tl.arange(0, ROWS)
    y = matvec(tile, x) + tl.load(bias_ptr + rows, mask=rows < n_rows, other=0.0)
    if RELU:
        y = tl.maximum(y, 0.0)
    tl.store(out_ptr + rows, y, mask=rows < n_rows)


@triton.jit
def _draw(logits_ptr, n_classes, u, temperature, GREEDY: tl.constexpr, CLASSES: tl.constexpr):
    logits = load_exchanged(logits_ptr, 0, n_classes, CLASSES)
    return draw_class(logits, n_classes, u, temperature, GREEDY, CLASSES).to(tl.int64)


# ---- phased driver: one launch per phase -----------------------------------------------------------
@triton.jit
def phase_recurrent_kernel(
    rec_ptr, bias_hh_ptr, w_prev_ptr, inputs_ptr, stride_ib, stride_it,
    hidden_ptr, prev_ptr, preacts_ptr, t, parity, batch, H, half, coarse_scale, fine_scale,
    FINE_BITS: tl.constexpr, UNITS: tl.constexpr, HP: tl.constexpr,
):  # fmt: skip
    unit0 = tl.program_id(0) * UNITS
    rec_r = load_tile(rec_ptr, unit0, H, H, H, UNITS, HP)
    rec_z = load_tile(rec_ptr + H * H, unit0, H, H, H, UNITS, HP)
    rec_n = load_tile(rec_ptr + 2 * H * H, unit0, H, H, H, UNITS, HP)
    src = hidden_ptr + parity * batch * H
    dst = hidden_ptr + (1 - parity) * batch * H
    for b in range(batch):
        sample_prev = tl.load(prev_ptr + b)
        _phase_recurrent(
            b, t, unit0, rec_r, rec_z, rec_n, sample_prev, bias_hh_ptr, w_prev_ptr, inputs_ptr, stride_ib,
            stride_it, src, dst, preacts_ptr, H, half, coarse_scale, fine_scale, FINE_BITS, UNITS, HP,
        )  # fmt: skip


@triton.jit
def phase_dense_kernel(
    w_ptr, bias_ptr, n_rows, n_in, x_ptr, stride_xb, out_ptr, stride_ob, batch,
    RELU: tl.constexpr, ROWS: tl.constexpr, IN_P: tl.constexpr,
):  # fmt: skip
    """y[b] = W x[b] + bias (relu'd) for every stream; program p computes rows [p * ROWS, ...)."""
    row0 = tl.program_id(0) * ROWS
    tile = load_tile(w_ptr, row0, n_rows, n_in, n_in, ROWS, IN_P)
    for b in range(batch):
        _phase_dense(
            tile, row0, bias_ptr, n_rows, x_ptr + b * stride_xb, n_in, out_ptr + b * stride_ob, RELU, ROWS, IN_P
        )


@triton.jit
def phase_fine_kernel(
    w_now_ptr, hidden_ptr, preacts_ptr, logits_ptr, stride_lb, noise_ptr, stride_nb, targets_ptr, stride_tb,
    coarse_ptr, temperature_ptr, t, parity, batch, H, half, n_coarse, coarse_scale,
    FINE_BITS: tl.constexpr, FORCED: tl.constexpr, GREEDY: tl.constexpr, UNITS: tl.constexpr,
    CLASSES: tl.constexpr,
):  # fmt: skip
    """Phase D: every program draws c_t itself; program 0 records it for the emit phase."""
    pid = tl.program_id(0)
    src = hidden_ptr + parity * batch * H
    dst = hidden_ptr + (1 - parity) * batch * H
    temperature = tl.load(temperature_ptr)
    for b in range(batch):
        if FORCED:
            coarse = tl.load(targets_ptr + b * stride_tb + t) >> FINE_BITS
        else:
            u = tl.load(noise_ptr + b * stride_nb + 2 * t)
            coarse = _draw(logits_ptr + b * stride_lb, n_coarse, u, temperature, GREEDY, CLASSES)
        _phase_fine(b, pid * UNITS, coarse, w_now_ptr, src, dst, preacts_ptr, H, half, coarse_scale, UNITS)
        if pid == 0:
            tl.store(coarse_ptr + b, coarse)


@triton.jit
def phase_emit_kernel(
    logits_ptr, stride_lb, noise_ptr, stride_nb, targets_ptr, stride_tb, coarse_ptr, prev_ptr,
    samples_ptr, stride_sb, temperature_ptr, t, batch, n_fine, K,
    FINE_BITS: tl.constexpr, FORCED: tl.constexpr, GREEDY: tl.constexpr, CLASSES: tl.constexpr,
):  # fmt: skip
    """Phase G (one program): draw f_t, write the sample and make it the next step's previous sample."""
    temperature = tl.load(temperature_ptr)
    for b in range(batch):
        if FORCED:
            sample = tl.load(targets_ptr + b * stride_tb + t)
        else:
            u = tl.load(noise_ptr + b * stride_nb + 2 * t + 1)
            fine = _draw(logits_ptr + b * stride_lb + K, n_fine, u, temperature, GREEDY, CLASSES)
            sample = (tl.load(coarse_ptr + b) << FINE_BITS) | fine
        tl.store(samples_ptr + b * stride_sb + t, sample)
        tl.store(prev_ptr + b, sample)


# ---- persistent driver: one launch per chunk, weights resident --------------------------------------
@triton.jit
def persistent_kernel(
    rec_ptr, bias_hh_ptr, w_prev_ptr, w_now_ptr,
    out1_ptr, bias1_ptr, out2_ptr, bias2_ptr, out3_ptr, bias3_ptr, out4_ptr, bias4_ptr,
    inputs_ptr, stride_ib, stride_it, noise_ptr, stride_nb, targets_ptr, stride_tb,
    samples_ptr, stride_sb, logits_ptr, stride_lb, stride_lt,
    hidden_ptr, prev_ptr, preacts_ptr, layer_ptr, counter_ptr, temperature_ptr,
    steps, parity, batch, H, half, O, n_coarse, n_fine, K, coarse_scale, fine_scale,
    FINE_BITS: tl.constexpr, FORCED: tl.constexpr, GREEDY: tl.constexpr,
    UNITS: tl.constexpr, HP: tl.constexpr, HALF_P: tl.constexpr, ROWS_O: tl.constexpr, OP: tl.constexpr,
    ROWS_K: tl.constexpr, CLASSES: tl.constexpr, BATCH_P: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    unit0 = pid * UNITS
    o0 = pid * ROWS_O
    k0 = pid * ROWS_K
    # This program's weights, loaded once and kept in registers for every step of the chunk.
    rec_r = load_tile(rec_ptr, unit0, H, H, H, UNITS, HP)
    rec_z = load_tile(rec_ptr + H * H, unit0, H, H, H, UNITS, HP)
    rec_n = load_tile(rec_ptr + 2 * H * H, unit0, H, H, H, UNITS, HP)
    out1 = load_tile(out1_ptr, o0, O, half, half, ROWS_O, HALF_P)
    out2 = load_tile(out2_ptr, k0, n_coarse, O, O, ROWS_K, OP)
    out3 = load_tile(out3_ptr, o0, O, half, half, ROWS_O, HALF_P)
    out4 = load_tile(out4_ptr, k0, n_fine, O, O, ROWS_K, OP)
    temperature = tl.load(temperature_ptr)
    streams = tl.arange(0, BATCH_P)
    prev = tl.load(prev_ptr + streams, mask=streams < batch, other=0)
    coarse_all = prev
    syncs = 0
    for t in range(steps):
        # An offset of 0 read from memory every step: the per-unit vector addresses below depend on it,
        # so the compiler recomputes them per step instead of keeping them live (in registers next to
        # the resident weights) across the whole loop.
        zero = tl.load(counter_ptr + 1)
        unit_t, o_t, k_t = unit0 + zero, o0 + zero, k0 + zero
        src = hidden_ptr + ((parity + t) % 2) * batch * H
        dst = hidden_ptr + ((parity + t + 1) % 2) * batch * H
        logits_t = logits_ptr + t * stride_lt
        for b in range(batch):  # A
            _phase_recurrent(
                b, t, unit_t, rec_r, rec_z, rec_n, pick(prev, b, BATCH_P), bias_hh_ptr, w_prev_ptr, inputs_ptr,
                stride_ib, stride_it, src, dst, preacts_ptr, H, half, coarse_scale, fine_scale, FINE_BITS, UNITS, HP,
            )  # fmt: skip
        syncs += 1
        grid_sync(counter_ptr, syncs * programs)
        for b in range(batch):  # B
            _phase_dense(out1, o_t, bias1_ptr, O, dst + b * H, half, layer_ptr + b * 2 * O, True, ROWS_O, HALF_P)
        syncs += 1
        grid_sync(counter_ptr, syncs * programs)
        for b in range(batch):  # C
            _phase_dense(
                out2, k_t, bias2_ptr, n_coarse, layer_ptr + b * 2 * O, O, logits_t + b * stride_lb, False, ROWS_K, OP
            )
        syncs += 1
        grid_sync(counter_ptr, syncs * programs)
        for b in range(batch):  # D
            if FORCED:
                coarse = tl.load(targets_ptr + b * stride_tb + t) >> FINE_BITS
            else:
                u = tl.load(noise_ptr + b * stride_nb + 2 * t)
                coarse = _draw(logits_t + b * stride_lb, n_coarse, u, temperature, GREEDY, CLASSES)
            coarse_all = tl.where(streams == b, coarse, coarse_all)
            _phase_fine(b, unit_t, coarse, w_now_ptr, src, dst, preacts_ptr, H, half, coarse_scale, UNITS)
        syncs += 1
        grid_sync(counter_ptr, syncs * programs)
        for b in range(batch):  # E
            _phase_dense(
                out3, o_t, bias3_ptr, O, dst + b * H + half, half, layer_ptr + b * 2 * O + O, True, ROWS_O, HALF_P
            )
        syncs += 1
        grid_sync(counter_ptr, syncs * programs)
        for b in range(batch):  # F
            _phase_dense(
                out4,
                k0,
                bias4_ptr,
                n_fine,
                layer_ptr + b * 2 * O + O,
                O,
                logits_t + b * stride_lb + K,
                False,
                ROWS_K,
                OP,
            )
        syncs += 1
        grid_sync(counter_ptr, syncs * programs)
        for b in range(batch):  # G
            if FORCED:
                sample = tl.load(targets_ptr + b * stride_tb + t)
            else:
                u = tl.load(noise_ptr + b * stride_nb + 2 * t + 1)
                fine = _draw(logits_t + b * stride_lb + K, n_fine, u, temperature, GREEDY, CLASSES)
                sample = (pick(coarse_all, b, BATCH_P) << FINE_BITS) | fine
            prev = tl.where(streams == b, sample, prev)
            if pid == 0:
                tl.store(samples_ptr + b * stride_sb + t, sample)
    if pid == 0:
        tl.store(prev_ptr + streams, prev, mask=streams < batch)


# ---- host side ---------------------------------------------------------------------------------------
class TritonWaveRNN:
    """Runs chunks of WaveRNN steps with the Triton kernels for a fixed batch.

    mode: "persistent" (one launch per chunk, weights in registers, grid <= `max_programs`, by
    default the device's SM count so that every program is resident) or "phased" (7 launches per
    step). `units` overrides the hidden units per program (a power of two). The persistent kernel
    is launched with num_stages=1: no software pipelining may move a load across a grid sync.
    Tensors may live on a CUDA device, or on the CPU under TRITON_INTERPRET=1.
    """

    def __init__(
        self,
        pack: WaveRNNPack,
        batch: int,
        mode: str = "persistent",
        max_programs: int | None = None,
        units: int | None = None,
        num_warps: int = 8,
    ) -> None:
        if mode not in ("persistent", "phased"):
            raise ValueError(f"mode must be 'persistent' or 'phased', got {mode!r}")
        self.pack, self.batch, self.mode, self.num_warps = pack, batch, mode, num_warps
        H, dev = pack.hidden, pack.recurrent.device
        if max_programs is None:
            max_programs = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else H
        self.units = units or next_power_of_2(-(-H // max_programs))
        self.programs = -(-H // self.units)
        if mode == "persistent" and self.programs > max_programs:
            raise ValueError(f"{self.programs} programs of {self.units} units exceed the {max_programs} allowed")
        self.rows_o = next_power_of_2(-(-pack.out_hidden // self.programs))
        self.rows_k = next_power_of_2(-(-pack.classes // self.programs))
        self.hidden = torch.zeros(2, batch, H, device=dev)
        self.prev = torch.full((batch,), pack.silence, dtype=torch.long, device=dev)
        self.coarse = torch.zeros(batch, dtype=torch.long, device=dev)
        self.preacts = torch.zeros(batch, 6, H, device=dev)
        self.layer = torch.zeros(batch, 2, pack.out_hidden, device=dev)
        self.scratch_logits = torch.zeros(batch, 2, pack.classes, device=dev)
        self.counter = torch.zeros(2, dtype=torch.int32, device=dev)  # [arrivals, a constant 0]
        self.temperature = torch.ones(1, dtype=torch.float64, device=dev)
        self.parity = 0

    def reset(self) -> None:
        """Zero hidden state and silence as the previous sample."""
        self.hidden.zero_()
        self.prev.fill_(self.pack.silence)
        self.parity = 0

    def state(self) -> torch.Tensor:
        """The current hidden state [B, H]."""
        return self.hidden[self.parity]

    def run(
        self,
        inputs: torch.Tensor,
        noise: torch.Tensor,
        temperature: float = 1.0,
        targets: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Advance S steps.

        inputs [B, S, 3H] float32 (per-sample input-gate terms with b_ih); noise [B, S, 2];
        targets [B, S] int64 to teacher-force (then `logits` [B, S, 2, K] float32 receives the
        logits of every step; the caller pre-fills it with -inf). Returns samples [B, S] int64.
        """
        p = self.pack
        batch, steps = inputs.shape[:2]
        if batch != self.batch:
            raise ValueError(f"runner built for batch {self.batch}, got {batch}")
        inputs, noise = inputs.contiguous(), noise.contiguous()
        forced = targets is not None
        if forced:
            targets = targets.contiguous()
            if logits is None or not logits.is_contiguous():
                raise ValueError("teacher forcing needs a contiguous logits [B, S, 2, K] output")
            logit_buf, stride_lb, stride_lt = logits, logits.stride(0), logits.stride(1)
        else:
            targets = self.prev  # unused placeholder pointer
            logit_buf, stride_lb, stride_lt = self.scratch_logits, self.scratch_logits.stride(0), 0
        self.temperature.fill_(max(temperature, 0.0))
        greedy = temperature <= 0.0
        samples = torch.empty(batch, steps, dtype=torch.long, device=inputs.device)
        H, half, O = p.hidden, p.half, p.out_hidden
        coarse_scale, fine_scale = 2.0 / (p.coarse_classes - 1), 2.0 / (p.fine_classes - 1)
        common = dict(FINE_BITS=p.fine_bits, FORCED=forced, GREEDY=greedy)
        if self.mode == "persistent":
            self.counter.zero_()
            persistent_kernel[(self.programs,)](
                p.recurrent, p.bias_hh, p.w_prev, p.w_now,
                p.out1, p.bias1, p.out2, p.bias2, p.out3, p.bias3, p.out4, p.bias4,
                inputs, inputs.stride(0), inputs.stride(1), noise, noise.stride(0), targets, steps if forced else 0,
                samples, samples.stride(0), logit_buf, stride_lb, stride_lt,
                self.hidden, self.prev, self.preacts, self.layer, self.counter, self.temperature,
                steps, self.parity, batch, H, half, O, p.coarse_classes, p.fine_classes, p.classes,
                coarse_scale, fine_scale,
                UNITS=self.units, HP=next_power_of_2(H), HALF_P=next_power_of_2(half), ROWS_O=self.rows_o,
                OP=next_power_of_2(O), ROWS_K=self.rows_k, CLASSES=next_power_of_2(p.classes),
                BATCH_P=next_power_of_2(batch), num_warps=self.num_warps, num_stages=1, **common,
            )  # fmt: skip
            self.parity = (self.parity + steps) % 2
            return samples
        for t in range(steps):
            self._phased_step(t, inputs, noise, targets, samples, logit_buf, stride_lb, stride_lt, common)
            self.parity ^= 1
        return samples

    def _phased_step(self, t, inputs, noise, targets, samples, logit_buf, stride_lb, stride_lt, common) -> None:
        p, batch, grid = self.pack, self.batch, (self.programs,)
        H, half, O, K = p.hidden, p.half, p.out_hidden, p.classes
        stride_tb = targets.stride(0) if common["FORCED"] else 0
        logits_t = logit_buf[:, t] if stride_lt else logit_buf
        coarse_scale, fine_scale = 2.0 / (p.coarse_classes - 1), 2.0 / (p.fine_classes - 1)
        dst = self.hidden[1 - self.parity]
        phase_recurrent_kernel[grid](
            p.recurrent, p.bias_hh, p.w_prev, inputs, inputs.stride(0), inputs.stride(1), self.hidden, self.prev,
            self.preacts, t, self.parity, batch, H, half, coarse_scale, fine_scale,
            FINE_BITS=p.fine_bits, UNITS=self.units, HP=next_power_of_2(H),
        )  # fmt: skip
        layer_c, layer_f = self.layer[:, 0], self.layer[:, 1]
        dense = dict(ROWS=self.rows_o, IN_P=next_power_of_2(half), RELU=True)
        phase_dense_kernel[grid](p.out1, p.bias1, O, half, dst, H, layer_c, 2 * O, batch, **dense)
        dense_k = dict(ROWS=self.rows_k, IN_P=next_power_of_2(O), RELU=False)
        phase_dense_kernel[grid](
            p.out2, p.bias2, p.coarse_classes, O, layer_c, 2 * O, logits_t, stride_lb, batch, **dense_k
        )
        phase_fine_kernel[grid](
            p.w_now, self.hidden, self.preacts, logits_t, stride_lb, noise, noise.stride(0), targets, stride_tb,
            self.coarse, self.temperature, t, self.parity, batch, H, half, p.coarse_classes, coarse_scale,
            UNITS=self.units, CLASSES=next_power_of_2(K), **common,
        )  # fmt: skip
        phase_dense_kernel[grid](p.out3, p.bias3, O, half, dst[:, half:], H, layer_f, 2 * O, batch, **dense)
        phase_dense_kernel[grid](
            p.out4, p.bias4, p.fine_classes, O, layer_f, 2 * O, logits_t[:, 1], stride_lb, batch, **dense_k
        )
        phase_emit_kernel[(1,)](
            logits_t, stride_lb, noise, noise.stride(0), targets, stride_tb, self.coarse, self.prev, samples,
            samples.stride(0), self.temperature, t, batch, p.fine_classes, K, CLASSES=next_power_of_2(K), **common,
        )  # fmt: skip
