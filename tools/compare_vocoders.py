"""Side by side on the CPU: our autoregressive engines, the plain per-sample loop, and HiFi-GAN V1 / V3.

    python tools/compare_vocoders.py --threads 1 2 -o compare_vocoders.json
    python tools/compare_vocoders.py --wav speech.flac --seconds 10 --notes "training job paused"
    python tools/compare_vocoders.py --tiny --seconds 0.05 --repeats 1     # seconds-long smoke run

One process, one mel: `--seconds` (default 10) of real speech (`--wav` files, else the speech sample
shipped in `vocoders/assets/cs-male-22k-sample/`, utterances joined in name order) turned into the
`hifigan` log-mel (22.05 kHz, hop 256, 80 mels). For each thread count (`--threads`; set with
`torch.set_num_threads` and, where our engines have one, their `threads=` option) it times, mel in and
waveform out (conditioning network + autoregressive loop + decoding; the uniform noise is drawn before,
as the engine contract has it):

- Sparse WaveRNN-896: random weights pruned to 95% in 16x1 blocks exactly as `python -m vocoders.bench
  recipe=sparse_wavernn` prunes them (same config tree, same `build_bench_model`), float32, `sparse-cpu`;
- dense WaveRNN-896 (`recipe=wavernn`) on `cpu`;
- the WaveNet of `recipe=wavenet` on `cpu`;
- the `reference` engine (the plain PyTorch loop per sample that the popular implementations run) on
  WaveRNN-896, over the first `--reference-seconds` (default 0.5) only, scaled to samples/s;
- HiFi-GAN V1 and V3 generators of the published architecture (Kong et al. 2020), written below as
  plain PyTorch modules with random weights, under `torch.inference_mode`.

Each figure is the best of `--repeats` runs (fewer when the runs of one system pass `--budget`
seconds; at least one). Nothing is asserted about the samples: this is a timing, not a test. The
JSON (stdout, and `-o FILE`) holds, per thread count and system, samples/s and the real-time factor
(generation time / audio duration at 22.05 kHz), the ratio of Sparse WaveRNN-896 to HiFi-GAN V1 and
V3, the machine (CPU, torch, cores, load average before and after) and `--notes`.

fatchord's WaveRNN (github.com/fatchord/WaveRNN) is not on PyPI; the script asks pip for it (`pip
download --no-deps fatchord-wavernn`) and reports it as not measured, with pip's answer as the reason.

At batch 1 our engines run the one stream on one thread (their `threads=` workers split a batch's
streams), so a second thread helps only their conditioning network; HiFi-GAN's convolutions use both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python tools/compare_vocoders.py` from a clone
    sys.path.insert(0, str(REPO))

SAMPLE_RATE, HOP, N_MELS = 22050, 256, 80
FATCHORD = "fatchord-wavernn"
SPARSE, DENSE, WAVENET, REFERENCE = "sparse_wavernn_896", "wavernn_896", "wavenet", "reference_wavernn_896"
HIFIGAN_V1, HIFIGAN_V3, PEER_WAVERNN = "hifigan_v1", "hifigan_v3", "fatchord_wavernn"


# ---- HiFi-GAN generators (Kong et al. 2020) ---------------------------------------------------------


def _same(kernel: int, dilation: int = 1) -> int:
    return (kernel - 1) * dilation // 2


class ResBlock1(nn.Module):
    """V1's residual block: per dilation, leaky ReLU -> dilated conv -> leaky ReLU -> conv, added back.

    x: [B, C, T] -> [B, C, T].
    """

    def __init__(self, channels: int, kernel: int, dilations=(1, 3, 5), slope: float = 0.1) -> None:
        super().__init__()
        self.slope = slope
        self.dilated = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same(kernel, d)) for d in dilations
        )
        self.plain = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=_same(kernel)) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.dilated, self.plain, strict=True):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, self.slope)), self.slope))
        return x


class ResBlock2(nn.Module):
    """V3's lighter residual block: per dilation, leaky ReLU -> dilated conv, added back. [B, C, T] -> [B, C, T]."""

    def __init__(self, channels: int, kernel: int, dilations=(1, 3), slope: float = 0.1) -> None:
        super().__init__()
        self.slope = slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same(kernel, d)) for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, self.slope))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN's generator: mel [B, n_mels, frames] -> waveform [B, 1, frames * prod(rates)] in [-1, 1].

    conv_pre (kernel 7) to `channels`; per upsampling stage a leaky ReLU (0.1) and a transposed
    convolution (stride = rate, kernel as given, padding (kernel - rate) / 2, so each stage multiplies
    the length exactly by its rate) that halves the channels, then multi-receptive-field fusion: one
    residual block per kernel size, their outputs averaged; finally leaky ReLU, conv_post (kernel 7)
    to one channel and tanh. Weight normalisation is left out: at inference it folds into the weights
    (w = g v / |v|), so it changes neither the work per sample nor, by more than one scale per
    output channel, the parameter count.
    """

    def __init__(
        self,
        channels: int,
        rates: tuple[int, ...],
        up_kernels: tuple[int, ...],
        block: type[nn.Module],
        block_kernels: tuple[int, ...],
        block_dilations: tuple[int, ...],
        n_mels: int = N_MELS,
    ) -> None:
        super().__init__()
        self.hop_length = math.prod(rates)
        self.conv_pre = nn.Conv1d(n_mels, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.fusions = nn.ModuleList()
        for stage, (rate, kernel) in enumerate(zip(rates, up_kernels, strict=True)):
            c_in, c_out = channels >> stage, channels >> (stage + 1)
            self.ups.append(nn.ConvTranspose1d(c_in, c_out, kernel, stride=rate, padding=(kernel - rate) // 2))
            self.fusions.append(nn.ModuleList(block(c_out, k, block_dilations) for k in block_kernels))
        self.conv_post = nn.Conv1d(channels >> len(rates), 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for up, blocks in zip(self.ups, self.fusions, strict=True):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(b(x) for b in blocks) / len(blocks)
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def hifigan_v1() -> HiFiGANGenerator:
    """V1: 512 channels, rates 8-8-2-2 (kernels 16-16-4-4), ResBlock1 with kernels 3, 7, 11 and dilations 1, 3, 5."""
    return HiFiGANGenerator(512, (8, 8, 2, 2), (16, 16, 4, 4), ResBlock1, (3, 7, 11), (1, 3, 5))


def hifigan_v3() -> HiFiGANGenerator:
    """V3: 256 channels, rates 8-8-4 (kernels 16-16-8), ResBlock2 with kernels 3, 5, 7 and dilations 1, 3."""
    return HiFiGANGenerator(256, (8, 8, 4), (16, 16, 8), ResBlock2, (3, 5, 7), (1, 3))


# ---- inputs and models -----------------------------------------------------------------------------


def speech_mel(seconds: float, wavs: list[Path] | None = None) -> tuple[torch.Tensor, list[str]]:
    """A real `hifigan` log-mel [1, 80, frames] of `seconds` of speech (frames = round(seconds * 22050 / 256)).

    The files (default: the shipped sample's utterances, in name order) are joined end to end, cycling
    through them again if they are shorter than needed. Returns the mel and the files used.
    """
    from vocoders.audio import read_audio
    from vocoders.features import MelConfig, MelSpectrogram
    from vocoders.training import embedded_sample

    config = MelConfig.preset("hifigan")
    files = list(wavs) if wavs else sorted((embedded_sample().parent / "wavs").glob("*.flac"))
    if not files:
        raise SystemExit("no speech found to build the mel from")
    frames = max(1, round(seconds * config.sample_rate / config.hop_length))
    needed = frames * config.hop_length + config.n_fft
    pieces, used, total = [], [], 0
    while total < needed:
        path = files[len(used) % len(files)]
        audio, _ = read_audio(path, config.sample_rate)
        pieces.append(torch.from_numpy(audio))
        used.append(str(path))
        total += len(audio)
    mel = MelSpectrogram(config)(torch.cat(pieces))[:, :frames]
    return mel.unsqueeze(0).float(), sorted(set(used), key=used.index)


def bench_model(recipe: str, tiny: bool):
    """The model `python -m vocoders.bench recipe=RECIPE` times (random weights, seed 0, sparse recipes
    pruned to their final sparsity by the same code); `tiny` adds `debug=tiny`."""
    from hydra import compose, initialize_config_module

    from vocoders.bench import build_bench_model

    overrides = [f"recipe={recipe}", "audio=hifigan", "bench.seed=0", "bench.device=cpu"]
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=overrides + (["debug=tiny"] if tiny else []))
    model, _ = build_bench_model(cfg)
    return model.eval()


def fatchord_status() -> str:
    """Why fatchord's WaveRNN is not measured: pip's answer to `pip download --no-deps fatchord-wavernn`."""
    base = (
        "fatchord's WaveRNN (github.com/fatchord/WaveRNN) is a repository of scripts, not a package on "
        "PyPI, so it cannot be installed beside this project and is not timed here"
    )
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d", folder, FATCHORD]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{base}; `pip download --no-deps {FATCHORD}` did not answer ({exc})"
    if done.returncode == 0:
        return f"`pip download --no-deps {FATCHORD}` found a distribution, but this tool does not time it yet"
    errors = [line.strip() for line in done.stderr.splitlines() if line.startswith("ERROR")]
    return f"{base}; `pip download --no-deps {FATCHORD}`: {errors[-1] if errors else 'exit ' + str(done.returncode)}"


# ---- timing ----------------------------------------------------------------------------------------


def best_of(run, repeats: int, budget: float) -> list[float]:
    """Seconds of each run of `run()`: `repeats` of them, or fewer once they add up past `budget` (at least one)."""
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def entry(samples: int, times: list[float], **extra) -> dict:
    best = min(times)
    return {
        "samples_per_second": round(samples / best, 1),
        "real_time_factor": float(f"{best / (samples / SAMPLE_RATE):.5g}"),
        "seconds": float(f"{best:.5g}"),
        "samples": samples,
        "runs_seconds": [float(f"{t:.5g}") for t in times],
        **extra,
    }


def vocode_fn(model, engine, mel: torch.Tensor, noise: torch.Tensor):
    """mel [1, 80, F] -> audio [1, F * hop]: conditioning network, the engine's loop, decoding."""

    def run():
        with torch.inference_mode():
            cond = model.conditioning(model.pad_mel(mel))
            return model.decode(engine.generate(cond, noise))

    return run


def time_ours(model, engine_name: str, mel: torch.Tensor, threads: int, args, with_threads: bool = True) -> dict:
    from vocoders.engines import make_engine
    from vocoders.sampling import draw_noise

    options = {"threads": threads} if with_threads else {}
    engine = make_engine(engine_name, model, "cpu", dtype="float32", **options)
    steps = mel.shape[-1] * model.hop_length
    noise = draw_noise(1, steps, model.noise_per_step, seed=0)
    vocode_fn(model, engine, mel[..., :1], noise[:, : model.hop_length])()  # one frame: compile, first touches
    run = vocode_fn(model, engine, mel, noise)
    times = best_of(run, args.repeats, args.budget)
    return entry(steps, times, engine=engine.name, dtype=engine.dtype, engine_threads=options.get("threads"))


def time_hifigan(generator: HiFiGANGenerator, mel: torch.Tensor, args) -> dict:
    with torch.inference_mode():
        generator(mel[..., : min(mel.shape[-1], 8)])  # first touches

        def run():
            return generator(mel)

        times = best_of(run, args.repeats, args.budget)
    return entry(mel.shape[-1] * generator.hop_length, times, engine="pytorch (torch.inference_mode)")


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def machine() -> dict:
    from vocoders.bench import _machine

    info = _machine(torch.device("cpu"))
    info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def compare(args) -> dict:
    started = time.time()
    record: dict = {
        "what": "mel in, waveform out, one stream on the CPU: our engines, the plain loop, HiFi-GAN V1 and V3",
        "machine": machine(),
        "notes": args.notes,
        "settings": {
            "threads": args.threads,
            "seconds": args.seconds,
            "reference_seconds": args.reference_seconds,
            "repeats": args.repeats,
            "budget_seconds_per_system": args.budget,
            "tiny": args.tiny,
            "sample_rate": SAMPLE_RATE,
            "timed": "best run; ours: conditioning network + autoregressive loop + decoding; HiFi-GAN: the generator",
        },
    }
    mel, files = speech_mel(args.seconds, args.wav)
    frames = mel.shape[-1]
    record["mel"] = {
        "preset": "hifigan",
        "frames": frames,
        "samples": frames * HOP,
        "seconds": round(frames * HOP / SAMPLE_RATE, 4),
        "from": [os.path.relpath(f, REPO) if f.startswith(str(REPO)) else f for f in files],
    }

    torch.manual_seed(0)
    models = {SPARSE: bench_model("sparse_wavernn", args.tiny), DENSE: bench_model("wavernn", args.tiny)}
    models[WAVENET] = bench_model("wavenet", args.tiny)
    generators = {HIFIGAN_V1: hifigan_v1().eval(), HIFIGAN_V3: hifigan_v3().eval()}
    ref_frames = min(frames, max(1, round(args.reference_seconds * SAMPLE_RATE / HOP)))
    peer_reason = fatchord_status() if not args.skip_pip_check else (
        "fatchord's WaveRNN (github.com/fatchord/WaveRNN) is not on PyPI; not timed (pip check skipped)"
    )  # fmt: skip
    systems = {
        SPARSE: {
            "description": f"Sparse WaveRNN-{models[SPARSE].kwargs['hidden_size']} (recipe=sparse_wavernn), random "
            "weights pruned to 95% in 16x1 blocks (vocoders.bench's build_bench_model)",
            "engine": "sparse-cpu",
            "model_kwargs": models[SPARSE].kwargs,
            "parameters": parameters(models[SPARSE]),
            "sparsity": {k: models[SPARSE].sparsity.get(k) for k in ("block", "targets", "current", "density")},
        },
        DENSE: {
            "description": f"dense WaveRNN-{models[DENSE].kwargs['hidden_size']} (recipe=wavernn), random weights",
            "engine": "cpu",
            "model_kwargs": models[DENSE].kwargs,
            "parameters": parameters(models[DENSE]),
        },
        WAVENET: {
            "description": "WaveNet of recipe=wavenet ({layers} layers, {residual_channels}/{gate_channels}/"
            "{skip_channels} channels), random weights".format(**models[WAVENET].kwargs),
            "engine": "cpu",
            "model_kwargs": models[WAVENET].kwargs,
            "parameters": parameters(models[WAVENET]),
        },
        REFERENCE: {
            "description": "the reference engine (plain PyTorch loop per sample) on the dense WaveRNN, first "
            f"{ref_frames} frames ({ref_frames * HOP / SAMPLE_RATE:.3f} s), scaled to samples/s",
            "engine": "reference",
            "parameters": parameters(models[DENSE]),
        },
        HIFIGAN_V1: {
            "description": "HiFi-GAN V1 generator (Kong et al. 2020), random weights, no weight norm",
            "engine": "pytorch",
            "parameters": parameters(generators[HIFIGAN_V1]),
        },
        HIFIGAN_V3: {
            "description": "HiFi-GAN V3 generator (Kong et al. 2020), random weights, no weight norm",
            "engine": "pytorch",
            "parameters": parameters(generators[HIFIGAN_V3]),
        },
        PEER_WAVERNN: {"description": "fatchord's WaveRNN", "not_measured": peer_reason},
    }
    record["systems"] = systems
    record["not_measured"] = {PEER_WAVERNN: peer_reason}

    results = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        timings = {
            SPARSE: (time_ours, models[SPARSE], "sparse-cpu", mel, threads, args),
            DENSE: (time_ours, models[DENSE], "cpu", mel, threads, args),
            WAVENET: (time_ours, models[WAVENET], "cpu", mel, threads, args),
            REFERENCE: (time_ours, models[DENSE], "reference", mel[..., :ref_frames], threads, args, False),
            HIFIGAN_V1: (time_hifigan, generators[HIFIGAN_V1], mel, args),
            HIFIGAN_V3: (time_hifigan, generators[HIFIGAN_V3], mel, args),
        }
        row = {}
        for name, (timing, *inputs) in timings.items():
            row[name] = timing(*inputs)
            runs = row[name]["runs_seconds"]
            print(
                f"compare_vocoders: {threads} thread(s) {name}: {row[name]['samples_per_second']:,.0f} samples/s "
                f"({len(runs)} runs, {sum(runs):.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        row[PEER_WAVERNN] = {"samples_per_second": None, "real_time_factor": None, "not_measured": peer_reason}
        sparse = row[SPARSE]["samples_per_second"]
        results[str(threads)] = {
            "threads": threads,
            "torch_threads": torch.get_num_threads(),
            "systems": row,
            "sparse_wavernn_896_over_hifigan_v1": round(sparse / row[HIFIGAN_V1]["samples_per_second"], 3),
            "sparse_wavernn_896_over_hifigan_v3": round(sparse / row[HIFIGAN_V3]["samples_per_second"], 3),
            "sparse_wavernn_896_over_reference": round(sparse / row[REFERENCE]["samples_per_second"], 1),
        }
        record["results"] = results
        if args.output and threads != args.threads[-1]:  # what is measured so far survives a kill
            write_json(args.output, {**record, "complete": False})
    record["complete"] = True
    record["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    record["wall_seconds"] = round(time.time() - started, 1)
    return record


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to measure (e.g. 1 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio of the mel every system vocodes")
    parser.add_argument("--reference-seconds", type=float, default=0.5, help="audio the reference loop generates")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per system (best kept)")
    parser.add_argument("--budget", type=float, default=45.0, help="no further runs of a system past this many s")
    parser.add_argument("--wav", type=Path, nargs="+", help="speech to build the mel from (default: shipped sample)")
    parser.add_argument("--tiny", action="store_true", help="our models at their debug=tiny sizes (smoke tests)")
    parser.add_argument("--skip-pip-check", action="store_true", help="do not ask pip about fatchord's WaveRNN")
    parser.add_argument("--notes", default=None, help="what else was running on the machine")
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if min(args.threads) < 1 or args.repeats < 1 or args.seconds <= 0 or args.reference_seconds <= 0:
        parser.error("--threads and --repeats must be >= 1, --seconds and --reference-seconds > 0")
    return args


def write_json(path: Path, record: dict) -> None:
    """Write `record` to `path` atomically (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    record = compare(args)
    if args.output:
        write_json(args.output, record)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
