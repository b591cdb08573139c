"""Single-stream WaveNet sampling speed on one CPU thread: ours against r9y9's `wavenet_vocoder`.

    python tools/compare_wavenet.py                 # 24 layers / 4 cycles / kernel 3, 64-128-64, 80 mels
    python tools/compare_wavenet.py --frames 32 --peer-frames 16 --checkpoint run/last.safetensors

`wavenet_vocoder` (PyPI) is the most used WaveNet vocoder; its `incremental_forward` is a Python
loop of PyTorch ops per sample. It is installed only for this comparison, into a throwaway virtual
environment (a temporary folder unless --venv names one) that sees this environment's torch, numpy
and scipy through a .pth file; the project never depends on it. This script then re-runs itself
inside that environment, where one process builds both models with the same architecture (layers,
cycles, kernel size, residual / gate / skip channels, 80-bin mel conditioning) and copies our
random weights into the peer where the layers correspond, and times generation of the same mel,
the two in turn (ours over several rounds, each with the machine's rates measured afresh; the
fastest run and the highest floor are kept). It prints one JSON object: samples/s of each engine
and weight dtype, the peer's, the ratios, each dtype's floor (`vocoders.perf.speed_floor`: weight
bytes over the measured read bandwidth of a buffer of that size, or FLOPs over the measured
single-thread matrix rate, whichever is slower), and the effect of reduced-precision weights on teacher-forced logits.

The two models are not the same function: the peer conditions through transposed convolutions on
the mel and scales skips differently; the per-sample work of the autoregressive loop is the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PEER = "wavenet_vocoder==0.1.1"
ARCH = dict(layers=24, cycles=4, kernel_size=3, residual_channels=64, gate_channels=128, skip_channels=64)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="mel frames our engines generate (x 256 samples)")
    parser.add_argument("--peer-frames", type=int, default=12, help="frames the peer and our reference loop generate")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each fast engine per round (best kept)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of timing and floor measurement (best kept)")
    parser.add_argument("--checkpoint", type=Path, help="a trained wavenet checkpoint of this architecture (logits)")
    parser.add_argument("--venv", type=Path, help="where to build the throwaway environment (default: a temp dir)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- outer: the throwaway environment ------------------------------------------------------------


def run_in_peer_env(args) -> int:
    root = args.venv or Path(tempfile.mkdtemp(prefix="vocoders-peer-wavenet-"))
    try:
        python = root / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        # This environment's packages (torch, numpy, scipy, vocoders) join sys.path; the peer goes on top.
        Path(site, "_vocoders_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n" + str(_repo()) + "\n")
        installed = subprocess.run([str(python), "-c", "import wavenet_vocoder"], capture_output=True)
        if installed.returncode != 0:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", PEER],
                check=True,
            )
        inner = [str(python), str(Path(__file__).resolve()), "--inner", *sys.argv[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
        return subprocess.run(inner, env=env).returncode
    finally:
        if args.venv is None:
            shutil.rmtree(root, ignore_errors=True)


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


# ---- inner: both models in one process --------------------------------------------------------


def build_ours(checkpoint):
    import torch

    from vocoders.checkpoint import model_from_checkpoint, read_checkpoint
    from vocoders.models import WaveNet

    if checkpoint:
        model = model_from_checkpoint(read_checkpoint(checkpoint))
        wanted = {**ARCH}
        found = {k: model.kwargs[k] for k in wanted}
        if found != wanted:
            raise SystemExit(f"{checkpoint}: architecture {found} is not the compared one {wanted}")
        return model.eval()
    torch.manual_seed(0)
    return WaveNet(**ARCH, cond_channels=80, cond_blocks=1).eval()


def build_peer(ours):
    """r9y9's WaveNet of the same size, our weights copied in where the layers correspond."""
    import torch
    from wavenet_vocoder import WaveNet as PeerWaveNet

    peer = PeerWaveNet(
        out_channels=256, layers=ARCH["layers"], stacks=ARCH["cycles"], residual_channels=ARCH["residual_channels"],
        gate_channels=ARCH["gate_channels"], skip_out_channels=ARCH["skip_channels"], kernel_size=ARCH["kernel_size"],
        dropout=0.0, cin_channels=80, gin_channels=-1, weight_normalization=True,
        upsample_conditional_features=True, upsample_scales=[4, 4, 4, 4], freq_axis_kernel_size=3,
        scalar_input=False,
    )  # fmt: skip
    peer.make_generation_fast_()  # what its synthesis script does: drop weight normalisation
    R, G = ours.residual_channels, ours.gate_channels
    with torch.no_grad():
        peer.first_conv.weight.copy_(ours.embedding.weight.t().unsqueeze(-1))
        peer.first_conv.bias.zero_()
        for layer, block in enumerate(peer.conv_layers):
            block.conv.weight.copy_(ours.dilated_weight[layer])
            block.conv.bias.copy_(ours.dilated_bias[layer])
            if ours.cond_channels == 80:
                block.conv1x1c.weight.copy_(ours.cond_weight[layer * G : (layer + 1) * G].unsqueeze(-1))
            block.conv1x1_out.weight.copy_(ours.out_weight[layer, :R].unsqueeze(-1))
            block.conv1x1_out.bias.copy_(ours.out_bias[layer, :R])
            block.conv1x1_skip.weight.copy_(ours.out_weight[layer, R:].unsqueeze(-1))
            block.conv1x1_skip.bias.copy_(ours.out_bias[layer, R:])
        peer.last_conv_layers[1].weight.copy_(ours.head1.weight.unsqueeze(-1))
        peer.last_conv_layers[1].bias.copy_(ours.head1.bias)
        peer.last_conv_layers[3].weight.copy_(ours.head2.weight.unsqueeze(-1))
        peer.last_conv_layers[3].bias.copy_(ours.head2.bias)
    return peer.eval()


def speech_mel(frames: int):
    """A real log-mel [80, frames] from the speech sample shipped with the package."""
    import torch

    from vocoders.audio import read_audio
    from vocoders.features import MelSpectrogram
    from vocoders.training import embedded_sample

    wavs = sorted((embedded_sample().parent / "wavs").glob("*.flac"))
    audio, _ = read_audio(wavs[0], 22050)
    mel = MelSpectrogram()(torch.from_numpy(audio))
    start = max(0, mel.shape[1] // 2 - frames // 2)
    return mel[:, start : start + frames], torch.from_numpy(audio)


def best_time(run, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def logit_effect(model, engines, mel, audio) -> dict:
    """Teacher-forced logits of each reduced-precision engine against the float32 parallel pass.

    draw_agreement: with the same uniform noise per step, the fraction of teacher-forced draws that
    pick the same class from the engine's logits as from the exact ones (free-running sequences agree
    up to the first flip, then follow their own trajectory).
    """
    import torch

    from vocoders.sampling import draw_noise, sample_categorical

    frames = mel.shape[1]
    targets = model.encode(audio[: frames * model.hop_length].unsqueeze(0))
    padded = model.pad_mel(mel.unsqueeze(0))
    with torch.no_grad():
        exact = model.forward_logits(padded, targets)[0].double()
        cond = model.conditioning(padded)
    log_p = torch.log_softmax(exact, -1)
    uniform = draw_noise(1, targets.shape[1], 1, seed=1)[0, :, 0]
    exact_draws = sample_categorical(exact.float(), uniform)
    effect = {}
    for dtype, engine in engines.items():
        logits = engine.forced_logits(cond, targets)[0].double()
        log_q = torch.log_softmax(logits, -1)
        effect[dtype] = {
            "max_abs_logit_difference": float((logits - exact).abs().max()),
            "mean_abs_logit_difference": float((logits - exact).abs().mean()),
            "mean_kl_nats": float((log_p.exp() * (log_p - log_q)).sum(-1).mean()),
            "argmax_agreement": float((logits.argmax(-1) == exact.argmax(-1)).double().mean()),
            "draw_agreement": float((sample_categorical(logits.float(), uniform) == exact_draws).double().mean()),
            "true_class_nll_change_nats": float((log_p.gather(-1, targets.T) - log_q.gather(-1, targets.T)).mean()),
        }
    return effect


def compare(args) -> dict:
    import torch
    import wavenet_vocoder

    from vocoders.engines import make_engine
    from vocoders.engines.cpu.wavenet import WaveNetCPUEngine
    from vocoders.native import native_status
    from vocoders.perf import speed_floor
    from vocoders.sampling import draw_noise

    torch.set_num_threads(1)
    ours = build_ours(args.checkpoint)
    peer = build_peer(ours)
    mel, audio = speech_mel(args.frames)
    padded = ours.pad_mel(mel.unsqueeze(0))
    with torch.no_grad():
        cond = ours.conditioning(padded)
    steps = ours.num_samples(cond)
    noise = draw_noise(1, steps, 1, seed=0)
    short = args.peer_frames + 2 * ours.upsample_context
    short_steps = args.peer_frames * ours.hop_length

    record = {
        "what": "single-stream WaveNet sampling, 1 CPU thread",
        "architecture": {**ARCH, "classes": 256, "n_mels": 80, "receptive_field": ours.receptive_field},
        "machine": {"cpu": _cpu_name(), "python": platform.python_version(), "torch": torch.__version__},
        "peer": {"package": PEER, "version": getattr(wavenet_vocoder, "__version__", "?")},
        "weights": str(args.checkpoint) if args.checkpoint else "random",
        "samples": {"ours": steps, "peer_and_reference": short_steps},
        "engines": {},
    }
    backends = ["native"] if native_status()[0] is not None else []
    backends.append("numba")
    engines = {}
    for backend in backends:
        for dtype in WaveNetCPUEngine.dtypes:
            engine = WaveNetCPUEngine(ours, dtype=dtype, backend=backend)
            engine.generate(cond[:, : 1 + 2 * ours.upsample_context], noise[:, : ours.hop_length])  # compile, touch
            engines[(backend, dtype)] = engine
    # Rounds: each times every engine (best of `repeats`) and measures the machine's rates afresh; the
    # fastest run and the highest floor of all rounds are kept, so noise cannot flatter the fraction.
    speeds = {key: [] for key in engines}
    floors = {key: [] for key in engines}
    for _ in range(args.rounds):
        rates: dict = {}
        for (backend, dtype), engine in engines.items():
            seconds = best_time(lambda engine=engine: engine.generate(cond, noise), args.repeats)
            speeds[(backend, dtype)].append(steps / seconds)
            floors[(backend, dtype)].append(speed_floor(ours.step_cost(), dtype, 1, 1, "cpu", rates))
    for (backend, dtype), engine in engines.items():
        speed = max(speeds[(backend, dtype)])
        floor = max(floors[(backend, dtype)], key=lambda f: f["samples_per_second"])
        record["engines"][f"cpu/{backend}/{dtype}"] = {
            "samples_per_second": round(speed, 1),
            "samples_per_second_each_round": [round(v, 1) for v in speeds[(backend, dtype)]],
            "real_time_factor": round(ours.sample_rate / speed, 4),
            "weight_bytes_per_sample": engine.weight_bytes(),
            "floor_samples_per_second": floor["samples_per_second"],
            "floor_each_round": [f["samples_per_second"] for f in floors[(backend, dtype)]],
            "floor_bound": floor["bound"],
            "read_bandwidth_GBps": floor["read_bandwidth_GBps"],
            "matrix_GFLOPs": floor["matrix_GFLOPs"],
            "fraction_of_floor": round(speed / floor["samples_per_second"], 3),
        }
    float32_engines = {dtype: engines[(backends[0], dtype)] for dtype in WaveNetCPUEngine.dtypes}

    reference = make_engine("reference", ours)
    seconds = best_time(lambda: reference.generate(cond[:, :short], noise[:, :short_steps]), 1)
    record["engines"]["reference"] = {"samples_per_second": round(short_steps / seconds, 1)}

    peer_mel = mel[:, : args.peer_frames].unsqueeze(0)
    with torch.no_grad():
        started = time.perf_counter()
        out = peer.incremental_forward(c=peer_mel, T=short_steps, softmax=True, quantize=True)
        seconds = time.perf_counter() - started
    assert out.shape[-1] == short_steps
    peer_speed = short_steps / seconds
    record["engines"]["peer_incremental_forward"] = {"samples_per_second": round(peer_speed, 1)}
    for entry in record["engines"].values():
        entry["speedup_over_peer"] = round(entry["samples_per_second"] / peer_speed, 1)

    floor = max(floors[(backends[0], "float32")], key=lambda f: f["samples_per_second"])
    record["floor_inputs"] = {
        "flops_per_sample": floor["flops_per_step"],
        "matrix_GFLOPs_1_thread": floor["matrix_GFLOPs"],
        "bandwidth": floor["read_bandwidth_method"],
        "derivation": floor["derivation"],
        "notes": floor["notes"],
    }
    record["reduced_precision_logits"] = logit_effect(ours, float32_engines, mel, audio)
    first = float32_engines["float32"]
    record["float32_samples_equal_reference"] = bool(
        torch.equal(
            first.generate(cond[:, :short], noise[:, :short_steps]),
            reference.generate(cond[:, :short], noise[:, :short_steps]),
        )
    )
    return record


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.inner:
        return run_in_peer_env(args)
    print(json.dumps(compare(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
