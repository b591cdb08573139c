"""Machine rates and the speed floor that `vocoders.bench` reports beside every figure.

A step of an autoregressive vocoder reads its weights once and does a fixed number of FLOPs, so
a stream cannot go faster than

    time per step >= max(weight bytes / read bandwidth of the cache level holding them,
                         FLOPs / matrix rate)

Both rates are measured here, on this machine, rather than taken from a data sheet:
- read bandwidth: a buffer of exactly the weights' size read over and over (so it sits in the
  cache level the weights would sit in), by the native read kernel when the extension is built,
  else by `torch.sum`; with several threads, every thread reads the same buffer at once, as every
  worker of a batched engine reads the same weights.
- matrix rate: a single-thread float32 matrix product (torch), the best FLOP rate one core reaches.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .models.base import StepCost
from .native import load_native

SWEEP_BYTES = (32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(run, min_seconds: float, rounds: int = 3) -> float:
    """Fastest single call of `run()` over at least `rounds` calls and `rounds * min_seconds` of calling.

    The minimum of single calls, not a mean: a floor is what the machine can do, and on a shared
    machine a mean also counts the time other processes held the core.
    """
    best, calls, start = math.inf, 0, time.perf_counter()
    while calls < rounds or time.perf_counter() - start < rounds * min_seconds:
        begin = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - begin)
        calls += 1
    return best


def read_bandwidth(nbytes: int, device: torch.device | str = "cpu", threads: int = 1, min_seconds: float = 0.05):
    """Aggregate read bandwidth (bytes/s) of `threads` threads each reading the same `nbytes` buffer.

    Returns (bytes per second, method).
    """
    device = torch.device(device)
    count = max(256, int(nbytes) // 4 // 256 * 256)
    buffer = torch.ones(count, dtype=torch.float32, device=device)
    native = load_native() if device.type == "cpu" else None
    if native is not None:
        # ~256 MB per call: a call then lasts 1 ms (L1) to 25 ms (DRAM), so the Python call and the
        # thread hand-off (tens of µs) stay below 5% even for the fastest level. With 4 MB per call
        # the overhead alone halved the apparent L1-L2 bandwidth and put engines above their floor.
        reps = max(1, int(256e6 // (count * 4)))

        def read_once() -> None:
            native.read_sum(buffer.data_ptr(), count, reps)

        if threads == 1:
            read_once()
            seconds = _best_seconds(read_once, min_seconds)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:

                def read_all() -> None:
                    for result in [pool.submit(read_once) for _ in range(threads)]:
                        result.result()

                read_all()
                seconds = _best_seconds(read_all, min_seconds)
        isa = native.isas()[0]
        return threads * reps * count * 4 / seconds, f"native read kernel ({isa}), {threads} thread(s) at once"

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:

        def read_torch() -> None:
            buffer.sum()
            _sync(device)

        read_torch()
        seconds = _best_seconds(read_torch, min_seconds)
    finally:
        torch.set_num_threads(previous)
    # torch.sum splits one buffer between its threads, so with several threads this is the shared rate.
    return count * 4 / seconds, f"torch.sum on {device.type}, {threads} thread(s) splitting the buffer"


def bandwidth_sweep(device: torch.device | str = "cpu", sizes: tuple[int, ...] = SWEEP_BYTES) -> dict[str, float]:
    """Single-thread read bandwidth in GB/s by buffer size (shows the cache levels)."""
    return {_size_name(size): round(read_bandwidth(size, device, 1, 0.02)[0] / 1e9, 2) for size in sizes}


def matrix_rate(device: torch.device | str = "cpu", size: int | None = None) -> float:
    """FLOP/s of one thread (one device) on a float32 square matrix product."""
    device = torch.device(device)
    size = size or (512 if device.type == "cpu" else 8192)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:

        def product() -> None:
            torch.mm(a, b)
            _sync(device)

        product()
        seconds = _best_seconds(product, 0.05)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / seconds


def speed_floor(
    cost: StepCost,
    dtype: str,
    batch: int,
    threads: int,
    device: torch.device | str = "cpu",
    rates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fastest this model can be sampled here: samples/s and how that figure was derived.

    `batch` streams are spread over `threads` workers (CPU; a GPU counts as one worker); the streams
    of one worker share one read of the weights per step. `rates` caches measured rates between calls.
    """
    device = torch.device(device)
    rates = {} if rates is None else rates
    workers = min(threads, batch) if device.type == "cpu" else 1
    per_worker = math.ceil(batch / workers)
    weight_bytes = cost.weight_bytes(dtype)
    key = ("bandwidth", weight_bytes, workers, device.type)
    if key not in rates:
        rates[key] = read_bandwidth(weight_bytes, device, workers)
    bandwidth, method = rates[key]
    if "matrix" not in rates:
        rates["matrix"] = matrix_rate(device)
    flop_rate = rates["matrix"]
    memory_seconds = weight_bytes / (bandwidth / workers)
    compute_seconds = per_worker * cost.flops / flop_rate
    step_seconds = max(memory_seconds, compute_seconds)
    floor = batch * cost.samples_per_step / step_seconds
    return {
        "samples_per_second": round(floor, 1),
        "bound": "memory" if memory_seconds >= compute_seconds else "compute",
        "weight_bytes_per_step": weight_bytes,
        "weight_dtype": dtype,
        "flops_per_step": round(cost.flops),
        "samples_per_step": cost.samples_per_step,
        "read_bandwidth_GBps": round(bandwidth / 1e9, 2),
        "read_bandwidth_method": f"{_size_name(weight_bytes)} buffer (the weights' size), {method}",
        "matrix_GFLOPs": round(flop_rate / 1e9, 2),
        "matrix_method": f"float32 square matrix product, 1 thread, {device.type}",
        "workers": workers,
        "streams_per_worker": per_worker,
        "memory_seconds_per_step": memory_seconds,
        "compute_seconds_per_step": compute_seconds,
        "derivation": (
            "floor = batch * samples_per_step / max(weight_bytes / (bandwidth / workers), "
            "streams_per_worker * flops / matrix_rate)"
        ),
        "weights": {name: list(shape) for name, shape in cost.matrices.items()},
        "notes": cost.notes,
    }


def _size_name(nbytes: int) -> str:
    if nbytes >= 1 << 20:
        return f"{nbytes / (1 << 20):.3g} MiB"
    return f"{nbytes / (1 << 10):.3g} KiB"
