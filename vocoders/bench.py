"""`python -m vocoders.bench [overrides]`: how fast a vocoder samples on this machine, as JSON.

It composes the training config tree, so every training override applies (`recipe=wavernn
model.hidden_size=896`, `audio=24k`, `debug=tiny`), plus the `bench` group (conf/bench/default.yaml):

    python -m vocoders.bench recipe=wavernn bench.engine=cpu bench.threads=1 bench.seconds=2
    python -m vocoders.bench bench.checkpoint=run/checkpoints/last.safetensors bench.batch=4 bench.threads=2

The model has random weights unless `bench.checkpoint` names a trained one (`bench.save` writes
the random-weight checkpoint it timed, so `vocoders-synthesize` can check the figure). The last
line printed is one JSON object: the measured speed, the reference engine's speed on the same
model in the same run (a shorter run), and the floor (`vocoders.perf`) with its derivation.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def significant(value: float, digits: int = 6) -> float:
    """`value` to `digits` significant digits (short runs take milliseconds: fixed decimals would lose them)."""
    return float(f"{value:.{digits}g}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_bench_model(cfg: DictConfig):
    """The model to time: a trained checkpoint (bench.checkpoint) or the composed model with random weights."""
    from .checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
    from .features import MelConfig

    if cfg.bench.checkpoint:
        return model_from_checkpoint(read_checkpoint(cfg.bench.checkpoint)), str(cfg.bench.checkpoint)
    from hydra.utils import instantiate

    torch.manual_seed(int(cfg.bench.seed))
    mel = MelConfig.from_dict(OmegaConf.to_container(cfg.audio, resolve=True))
    model = instantiate(cfg.model, mel=mel.to_dict(), _convert_="all")
    if cfg.get("sparsity") and cfg.sparsity.get("enabled", True):  # a sparse recipe: prune to its final sparsity
        from .sparsity import prune_to_final

        prune_to_final(model, cfg.sparsity)
    if cfg.bench.save:
        save_checkpoint(cfg.bench.save, model, step=0, bench="random weights written by vocoders.bench")
    return model, None


def random_mel(model, frames: int, batch: int, seed: int) -> torch.Tensor:
    """A log-mel [batch, n_mels, frames] of values inside the model's mel range (speed does not depend on them)."""
    low, high = model.mel_config.value_range()
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(batch, model.n_mels, frames, generator=generator)


def _timed_generate(engine, cond: torch.Tensor, noise: torch.Tensor, temperature: float, device: torch.device):
    start = time.perf_counter()
    samples = engine.generate(cond, noise, temperature)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return samples, time.perf_counter() - start


def _warm_up(engine, model, cond: torch.Tensor, noise: torch.Tensor, temperature: float) -> None:
    """One frame through the engine so packing, compilation and first touches stay out of the timing."""
    width = 1 + 2 * model.upsample_context
    engine.generate(cond[:, :width], noise[:, : model.hop_length], temperature)


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Time `cfg.bench.engine` on the composed model; returns the JSON record."""
    from .engines import make_engine
    from .perf import bandwidth_sweep, speed_floor
    from .sampling import draw_noise

    bench = cfg.bench
    threads, batch = int(bench.threads), int(bench.batch)
    if threads < 1 or batch < 1:
        raise ValueError(f"bench.threads and bench.batch must be >= 1, got {threads} and {batch}")
    if float(bench.seconds) <= 0:
        raise ValueError(f"bench.seconds must be > 0, got {bench.seconds}")
    torch.set_num_threads(threads)
    device = resolve_device(str(bench.device))
    model, checkpoint = build_bench_model(cfg)
    model = model.to(device).eval()
    temperature = float(bench.temperature)
    engine = make_engine(str(bench.engine), model, device, dtype=str(bench.dtype))

    frames = max(1, round(float(bench.seconds) * model.sample_rate / model.hop_length))
    with torch.inference_mode():
        mel = random_mel(model, frames, batch, int(bench.seed)).to(device)
        start = time.perf_counter()
        cond = engine.conditioning(model.pad_mel(mel))
        conditioning_seconds = time.perf_counter() - start
    steps = model.num_samples(cond)
    noise = draw_noise(batch, steps, model.noise_per_step, seed=int(bench.seed))

    _warm_up(engine, model, cond, noise, temperature)
    samples, seconds = _timed_generate(engine, cond, noise, temperature, device)
    total = batch * steps
    speed = total / seconds
    log.info("%s: %d samples in %.3f s (%.0f samples/s)", engine.name, total, seconds, speed)

    reference = _reference_run(cfg, model, engine, cond, noise, samples, temperature, device, seconds)
    plain = _plain_run(cfg, model, cond, noise, temperature, device, speed)
    rates: dict[str, Any] = {}
    try:
        cost = engine.step_cost() if hasattr(engine, "step_cost") else model.step_cost()  # sparse: what is kept
        floor = speed_floor(cost, engine.dtype, batch, threads, device, rates)
    except NotImplementedError as exc:
        floor = {"samples_per_second": None, "unknown": str(exc)}
    floor_speed = floor["samples_per_second"]
    audio_seconds = steps / model.sample_rate

    record = {
        "model": model.name,
        "model_kwargs": model.kwargs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint": checkpoint,
        "engine": engine.name,
        "engine_requested": str(bench.engine),
        "device": str(device),
        "threads": threads,
        "batch": batch,
        "dtype": engine.dtype,
        "temperature": temperature,
        "sample_rate": model.sample_rate,
        "samples": total,
        "audio_seconds_per_stream": significant(audio_seconds),
        "seconds": significant(seconds),
        "samples_per_second": round(speed, 1),
        "samples_per_second_per_stream": round(speed / batch, 1),
        "realtime_factor": significant(seconds / (batch * audio_seconds)),
        "stream_realtime_factor": significant(seconds / audio_seconds),
        "conditioning_seconds": significant(conditioning_seconds),
        **reference,
        **plain,
        "floor_samples_per_second": floor_speed,
        "fraction_of_floor": round(speed / floor_speed, 3) if floor_speed else None,
        "floor": floor,
        **({"sparsity": model.sparsity} if model.sparsity else {}),
        "machine": _machine(device),
    }
    if bench.get("stream_chunk") is not None:
        whole = model.decode(samples).float().cpu()
        record["stream"] = _stream_runs(cfg, model, engine, mel, whole, noise, temperature, device)
    if bench.sweep and device.type == "cpu":
        record["read_bandwidth_sweep_GBps"] = bandwidth_sweep(device)
    return record


def _stream_runs(cfg, model, engine, mel, whole_audio, noise, temperature, device) -> list[dict[str, Any]]:
    """Stream `mel` through `engine` in chunks of each `bench.stream_chunk` frames, fed as fast as they are taken.

    Per chunk size: time to first audio (from the first push to the first audio pulled), the
    real-time factor, the cost against whole-utterance generation (conditioning, loop and decoding
    on both sides) and whether the streamed audio equals the whole-utterance audio. The whole
    utterance and every chunk size run `bench.stream_repeats` times, interleaved, and each keeps its
    best time: a cost of a few percent is otherwise lost in the machine's run-to-run spread.
    `bench.stream_mel_projection` = N > 0 projects both (`vocoders.mel_projection`, N iterations).
    """
    from .inference import Vocoder
    from .mel_projection import mel_projection

    sizes = cfg.bench.stream_chunk
    sizes = [int(sizes)] if isinstance(sizes, int | str) else [int(n) for n in sizes]
    repeats = max(1, int(cfg.bench.get("stream_repeats", 3)))
    block_frames = int(cfg.bench.get("stream_block", 4))
    iterations = int(cfg.bench.get("stream_mel_projection", 0) or 0)
    vocoder = Vocoder(model, device=engine.device, engine="reference", mel_projection=iterations)
    vocoder.engine = engine  # the engine timed above, weights already packed
    frames, hop, rate = mel.shape[2], model.hop_length, model.sample_rate

    def whole_once() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            samples = engine.generate(engine.conditioning(model.pad_mel(mel)), noise, temperature)
            audio = model.decode(samples.cpu())
            if iterations:
                mel_projection(audio.float(), mel.cpu(), model.mel_config, iterations)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def stream_once(size: int) -> tuple[float, float, torch.Tensor, int]:
        stream = vocoder.stream(
            batch=mel.shape[0],
            seed=int(cfg.bench.seed),
            temperature=float(cfg.bench.temperature),
            block_frames=block_frames,
        )
        pieces, first_audio = [], None
        start = time.perf_counter()
        for at in range(0, frames, size):  # each chunk's audio as it is made, `block_frames` at a time
            stream.push(mel[:, :, at : at + size], generate=False)
            for piece in stream:
                pieces.append(piece)
                if first_audio is None:
                    first_audio = time.perf_counter() - start
        pieces.append(stream.close())
        seconds = time.perf_counter() - start
        audio = torch.cat([p.reshape(mel.shape[0], -1) for p in pieces], dim=1)
        return seconds, (first_audio if first_audio is not None else seconds), audio, stream.lookahead_frames

    if iterations:
        whole_audio = mel_projection(whole_audio, mel.cpu(), model.mel_config, iterations)
    whole_best = float("inf")
    best: dict[int, tuple[float, float, torch.Tensor, int]] = {}
    for _ in range(repeats):
        whole_best = min(whole_best, whole_once())
        for size in sizes:
            result = stream_once(size)
            if size not in best or result[0] < best[size][0]:
                best[size] = result
    runs = []
    for size in sizes:
        seconds, first_audio, audio, lookahead = best[size]
        runs.append(
            {
                "chunk_frames": size,
                "chunk_ms": significant(1000 * size * hop / rate),
                "lookahead_frames": lookahead,
                "block_frames": block_frames,
                "mel_projection": iterations,
                "lookahead_ms": significant(1000 * lookahead * hop / rate),
                "first_audio_ms": significant(1000 * first_audio),
                "seconds": significant(seconds),
                "realtime_factor": significant(seconds / (frames * hop / rate)),
                "whole_seconds": significant(whole_best),
                "cost_over_whole": round(seconds / whole_best - 1, 4),
                "repeats": repeats,
                "equal_to_whole": bool(torch.equal(audio, whole_audio)),
            }
        )
        log.info("stream %d frames: %.3f s (whole %.3f s), first audio %.1f ms", size, seconds, whole_best,
                 runs[-1]["first_audio_ms"])  # fmt: skip
    return runs


def _reference_run(cfg, model, engine, cond, noise, samples, temperature, device, seconds) -> dict[str, Any]:
    """The reference engine on the first `bench.reference_seconds` of the same input, and agreement."""
    from .engines import make_engine

    bench = cfg.bench
    steps = samples.shape[1]
    if engine.name == "reference":
        return {
            "reference_samples_per_second": round(samples.numel() / seconds, 1),
            "reference_samples": samples.numel(),
            "speedup_over_reference": 1.0,
            "reference_agreement": 1.0,
        }
    if float(bench.reference_seconds) <= 0:
        return {"reference_samples_per_second": None}
    hop = model.hop_length
    frames = min(steps // hop, max(1, round(float(bench.reference_seconds) * model.sample_rate / hop)))
    width = frames + 2 * model.upsample_context
    reference = make_engine("reference", model, device)
    _warm_up(reference, model, cond, noise, temperature)
    short_noise = noise[:, : frames * hop]
    ref_samples, ref_seconds = _timed_generate(reference, cond[:, :width], short_noise, temperature, device)
    ref_speed = ref_samples.numel() / ref_seconds
    compared = samples[:, : frames * hop]
    if model.samples_per_step > 1:
        # Subscale: a sample sees the earlier sub-tensors F positions ahead, so the start of a long
        # utterance is not the short one's output; compare the engine on the same short input instead.
        compared = engine.generate(cond[:, :width], short_noise, temperature)
    agreement = (ref_samples.cpu() == compared.cpu()).double().mean().item()
    return {
        "reference_samples_per_second": round(ref_speed, 1),
        "reference_samples": ref_samples.numel(),
        "speedup_over_reference": round(samples.numel() / seconds / ref_speed, 2),
        # Fraction of the reference run's samples this engine reproduced from the same noise; float32
        # engines give 1.0, reduced-precision weights drift away once one draw lands differently.
        "reference_agreement": round(agreement, 4),
    }


def _plain_run(cfg, model, cond, noise, temperature, device, speed: float) -> dict[str, Any]:
    """For a model generating several samples per step (Subscale WaveRNN): its recurrent core alone, a
    plain WaveRNN of the same hidden size, on the same engine, dtype, threads and conditioning, timed
    over the first `bench.plain_seconds` of audio; and the speed-up over it."""
    from .engines import make_engine

    bench = cfg.bench
    core = getattr(model, "core", None)
    if model.samples_per_step == 1 or core is None or float(bench.plain_seconds) <= 0:
        return {}
    hop = core.hop_length
    frames = min(
        cond.shape[1] - 2 * core.upsample_context, max(1, round(float(bench.plain_seconds) * core.sample_rate / hop))
    )
    width = frames + 2 * core.upsample_context
    engine = make_engine(str(bench.engine), core, device, dtype=str(bench.dtype))
    _warm_up(engine, core, cond, noise, temperature)
    samples, seconds = _timed_generate(engine, cond[:, :width], noise[:, : frames * hop], temperature, device)
    plain_speed = samples.numel() / seconds
    log.info("plain %s (the core alone) on %s: %.0f samples/s", core.name, engine.name, plain_speed)
    return {
        "plain_model": core.name,
        "plain_engine": engine.name,
        "plain_samples": samples.numel(),
        "plain_samples_per_second": round(plain_speed, 1),
        "speedup_over_plain": round(speed / plain_speed, 2),
    }


def _machine(device: torch.device) -> dict[str, Any]:
    from .native import load_native

    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    except OSError:
        info["cpu"] = platform.processor() or None
    native = load_native()
    info["native_isa"] = native.isas()[0] if native is not None else None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_cli(cfg: DictConfig) -> int:
    """Run the benchmark and print its JSON record (last line); a bad setting prints one error line. Exit code."""
    from .checkpoint import CheckpointError

    try:
        record = run_benchmark(cfg)
    except (CheckpointError, ValueError, RuntimeError) as exc:
        print(f"vocoders.bench: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(record))
    return 0


@hydra.main(version_base="1.3", config_path="pkg://vocoders.conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    status = run_cli(cfg)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
