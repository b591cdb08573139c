"""Hydra multirun over recipes (each job in its own run directory) and the SLURM launcher config."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vocoders.checkpoint import read_checkpoint
from vocoders.features import MelConfig


def expand_sweep(*arguments):
    """The job override lists Hydra's basic sweeper makes of `arguments` (cartesian product)."""
    jobs = [[]]
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        jobs = [job + [f"{key}={value}"] for job in jobs for value in values]
    return jobs


def test_a_small_sweep_composes_job_by_job():
    jobs = expand_sweep("recipe=wavernn", "model.hidden_size=512,896", "optim.lr=1e-4,3e-4")
    assert len(jobs) == 4
    seen = set()
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        for job in jobs:
            cfg = compose(config_name="train", overrides=job, return_hydra_config=True)
            assert cfg.name == "wavernn" and OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"
            model = instantiate(cfg.model, mel=MelConfig.from_dict(dict(cfg.audio)).to_dict(), _convert_="all")
            seen.add((model.hidden_size, cfg.optim.lr))
    assert seen == {(512, 1e-4), (512, 3e-4), (896, 1e-4), (896, 3e-4)}


def multirun(tmp_path, *overrides):
    command = [sys.executable, "-m", "vocoders.train", "-m", "debug=tiny", "model.hidden_size=16,32"]
    command += ["trainer.max_steps=1", f"data.cache_dir={tmp_path / 'cache'}", *overrides]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_multirun_trains_each_job_in_its_own_directory(tmp_path):
    multirun(tmp_path, "hydra.sweep.dir=sweep")
    for job, hidden in ((0, 16), (1, 32)):
        run = tmp_path / "sweep" / str(job)
        checkpoint = read_checkpoint(run / "checkpoints" / "last.safetensors")
        assert checkpoint.model_kwargs["hidden_size"] == hidden and checkpoint.step == 1
        assert f"run_dir: {run}\n" in (run / "config.yaml").read_text()
        assert (run / "train.log").is_file() and (run / "samples").is_dir()
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "sweep"]


@pytest.mark.slow
def test_multirun_with_an_explicit_run_dir_numbers_the_jobs_inside_it(tmp_path):
    multirun(tmp_path, "hydra.sweep.dir=sweep", "run_dir=mine")
    for job, hidden in ((0, 16), (1, 32)):
        checkpoint = read_checkpoint(tmp_path / "mine" / str(job) / "checkpoints" / "last.safetensors")
        assert checkpoint.model_kwargs["hidden_size"] == hidden


def test_slurm_launcher_config_composes():
    """Composed, not run: there is no SLURM here. Needs the `slurm` extra (part of `dev`)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'vocoders[slurm]'")
    from submitit import SlurmExecutor

    overrides = ["hydra/launcher=slurm", "recipe=wavernn", "hydra.launcher.nodes=2", "hydra.launcher.partition=gpu"]
    with initialize_config_module(config_module="vocoders.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher_cfg.nodes, launcher_cfg.tasks_per_node, launcher_cfg.gpus_per_node) == (2, 8, 8)
    assert launcher_cfg.partition == "gpu" and launcher_cfg.max_num_timeout > 0 and cfg.name == "wavernn"
    launcher = instantiate(launcher_cfg)
    # Every setting is one submitit's SLURM executor knows (the plugin prefixes the SLURM-only ones).
    known = set(SlurmExecutor._valid_parameters()) | set(SlurmExecutor._equivalence_dict())
    assert set(launcher.params) - {"submitit_folder", "max_num_timeout"} <= known
