"""`python -m vocoders.bench`: the config composes with the training tree and the JSON is complete and sane.

No timing is asserted here: speed lives in the benchmark's output, not in tests.
"""

import json
import math
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from vocoders.bench import run_benchmark, run_cli
from vocoders.checkpoint import read_checkpoint
from vocoders.models import WaveRNN
from vocoders.models.base import StepCost
from vocoders.native import load_native
from vocoders.perf import read_bandwidth, speed_floor

REQUIRED = (
    "model model_kwargs engine device threads batch dtype samples seconds samples_per_second realtime_factor "
    "reference_samples_per_second floor_samples_per_second"
).split()


def bench_config(*overrides):
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        return compose(config_name="benchmark", overrides=["debug=tiny", "bench.device=cpu", *overrides])


def test_benchmark_config_takes_training_overrides():
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=["recipe=wavernn", "model.hidden_size=896", "bench.batch=4"])
    assert cfg.model.hidden_size == 896 and cfg.name == "wavernn" and cfg.audio.n_mels == 80
    assert cfg.bench.batch == 4 and cfg.bench.engine == "auto" and cfg.bench.dtype == "float32"


@pytest.mark.parametrize(("engine", "batch", "threads"), [("auto", 1, 1), ("reference", 2, 2)])
def test_json_record_is_complete_and_consistent(engine, batch, threads):
    cfg = bench_config(
        f"bench.engine={engine}", f"bench.batch={batch}", f"bench.threads={threads}", "bench.seconds=0.03"
    )
    record = run_benchmark(cfg)
    assert set(REQUIRED) <= set(record)
    json.dumps(record)  # plain JSON values only
    assert record["model"] == "wavernn" and record["model_kwargs"]["hidden_size"] == 32
    assert record["batch"] == batch and record["threads"] == threads and record["device"] == "cpu"
    steps = round(0.03 * 22050 / 256) * 256
    assert record["samples"] == batch * steps
    assert math.isclose(record["samples_per_second"], record["samples"] / record["seconds"], rel_tol=0.01)
    assert math.isclose(
        record["realtime_factor"], record["seconds"] / (record["samples"] / record["sample_rate"]), rel_tol=0.01
    )
    assert record["reference_samples_per_second"] > 0 and record["floor_samples_per_second"] > 0
    assert record["reference_agreement"] == 1.0  # float32 engines reproduce the reference's samples
    floor = record["floor"]
    assert floor["weight_bytes_per_step"] == WaveRNN(**record["model_kwargs"]).step_cost().weight_bytes()
    assert floor["read_bandwidth_GBps"] > 0 and floor["matrix_GFLOPs"] > 0 and floor["bound"] in ("memory", "compute")
    if engine == "auto":
        assert record["engine"] == "cpu" or record["machine"]["native_isa"] is None


def test_wavenet_record_names_the_compiled_engine_and_its_floor():
    """`model=wavenet`: auto picks the compiled cpu engine, which reproduces the reference; the floor counts
    the WaveNet step's weights."""
    from vocoders.models import WaveNet

    record = run_benchmark(bench_config("model=wavenet", "bench.seconds=0.03", "bench.dtype=int8"))
    assert record["model"] == "wavenet" and record["engine"] == "cpu" and record["dtype"] == "int8"
    assert record["samples"] == round(0.03 * 22050 / 256) * 256 and record["floor_samples_per_second"] > 0
    model = WaveNet(**record["model_kwargs"])
    assert record["floor"]["weight_bytes_per_step"] == model.step_cost().weight_bytes("int8")
    assert record["floor"]["weight_bytes_per_step"] < model.step_cost().weight_bytes("float32")
    assert 0.0 < record["reference_agreement"] <= 1.0


@pytest.mark.skipif(load_native() is None, reason="vocoders._native is not built")
def test_subscale_recipe_runs_on_the_cpu_engine():
    """`recipe=subscale_wavernn`: B samples per step in the floor, the reference's samples reproduced."""
    record = run_benchmark(bench_config("recipe=subscale_wavernn", "bench.seconds=0.03", "bench.threads=1"))
    assert record["model"] == "subscale_wavernn" and record["engine"] == "cpu"
    assert record["floor"]["samples_per_step"] == record["model_kwargs"]["subscale"] == 4
    assert record["plain_model"] == "wavernn" and record["plain_engine"] == "cpu" and record["plain_samples"] > 0
    assert record["speedup_over_plain"] == pytest.approx(
        record["samples_per_second"] / record["plain_samples_per_second"], rel=0.02
    )
    assert record["reference_agreement"] == 1.0 and record["samples"] == round(0.03 * 22050 / 256) * 256


@pytest.mark.skipif(load_native() is None, reason="vocoders._native is not built")
def test_reduced_precision_save_and_checkpoint(tmp_path):
    path = tmp_path / "timed.safetensors"
    first = run_benchmark(bench_config("bench.seconds=0.02", "bench.dtype=bfloat16", f"bench.save={path}"))
    assert first["dtype"] == "bfloat16" and first["engine"] == "cpu"
    assert 0.0 < first["reference_agreement"] <= 1.0
    float32_bytes = WaveRNN(**first["model_kwargs"]).step_cost().weight_bytes("float32")
    assert first["floor"]["weight_bytes_per_step"] < float32_bytes
    assert read_checkpoint(path).model_kwargs == first["model_kwargs"]
    again = run_benchmark(bench_config("bench.seconds=0.02", f"bench.checkpoint={path}", "model.hidden_size=64"))
    assert again["checkpoint"] == str(path) and again["model_kwargs"] == first["model_kwargs"]


def test_step_cost_and_floor_arithmetic():
    model = WaveRNN(hidden_size=896)
    cost = model.step_cost()
    assert cost.matrices["gru_weight_hh"] == (2688, 896)
    dense = sum(r * c for r, c in cost.matrices.values())
    assert cost.weight_bytes("float32") == 4 * dense and cost.weight_bytes("bfloat16") == 2 * dense
    assert cost.weight_bytes("int8") == dense + 4 * sum(r for r, _ in cost.matrices.values())
    assert cost.flops > 2 * dense
    with pytest.raises(ValueError, match="unknown weight dtype"):
        cost.weight_bytes("float8")
    toy = StepCost(matrices={"W": (1000, 1000)}, other_flops=0.0)
    rates = {("bandwidth", 4_000_000, 2, "cpu"): (8e9, "given"), "matrix": 1e9}
    floor = speed_floor(toy, "float32", batch=4, threads=2, rates=rates)
    # Each of 2 workers reads 4 MB at 4 GB/s (1 ms) and does 2 streams x 2 MFLOP at 1 GFLOP/s (4 ms).
    assert floor["bound"] == "compute" and floor["samples_per_second"] == pytest.approx(4 / 4e-3)


def test_read_bandwidth_without_the_extension(monkeypatch):
    monkeypatch.setenv("VOCODERS_NATIVE", "0")
    rate, method = read_bandwidth(1 << 16, "cpu", 1, min_seconds=0.001)
    assert rate > 0 and "torch.sum" in method


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="bench.batch"):
        run_benchmark(bench_config("bench.batch=0"))
    with pytest.raises(ValueError, match="unknown engine"):
        run_benchmark(bench_config("bench.engine=warp", "bench.seconds=0.02"))


def test_command_line_prints_json_last(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vocoders.bench", "debug=tiny", "bench.device=cpu", "bench.seconds=0.02"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(REQUIRED) <= set(record)
    assert list(tmp_path.iterdir()) == []  # no run directory, no .hydra folder


def test_bad_checkpoint_is_one_error_line(capsys):
    assert run_cli(bench_config("bench.checkpoint=/nonexistent.safetensors")) == 2
    err = capsys.readouterr().err
    assert "nonexistent.safetensors" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["wavernn", "wavenet"])
def test_stream_chunks_are_timed_and_equal_the_whole_utterance(model):
    if load_native() is None:
        pytest.skip("the compiled extension vocoders._native is not built")
    cfg = bench_config(
        f"model={model}", "bench.engine=cpu", "bench.seconds=0.1", "bench.stream_chunk=[1,4]", "bench.batch=2",
        "bench.stream_repeats=2",
    )  # fmt: skip
    runs = run_benchmark(cfg)["stream"]
    assert [r["chunk_frames"] for r in runs] == [1, 4]
    assert runs[0]["whole_seconds"] == runs[1]["whole_seconds"] and {r["repeats"] for r in runs} == {2}
    for run in runs:
        assert run["equal_to_whole"] is True
        assert run["lookahead_frames"] >= 1 and run["seconds"] > 0 and run["first_audio_ms"] > 0
        assert run["realtime_factor"] > 0 and run["cost_over_whole"] > -1
        assert run["mel_projection"] == 0


def test_projected_streams_are_timed_against_the_projected_whole_utterance():
    cfg = bench_config(
        "model=lpcnet", "bench.engine=cpu", "bench.seconds=0.3", "bench.stream_chunk=4", "bench.stream_repeats=1",
        "bench.stream_mel_projection=2", "bench.reference_seconds=0",
    )  # fmt: skip
    (run,) = run_benchmark(cfg)["stream"]
    assert run["mel_projection"] == 2 and run["equal_to_whole"] is True
    # the network's look-ahead plus the projection's: 2 iterations hold back 1,664 samples, 7 frames
    assert run["lookahead_frames"] == 3 + 7
