"""`python -m vocoders.train recipe=NAME [overrides]`: the Hydra entry point around `training.train`.

With no overrides it trains the default recipe on the small speech sample shipped with the package
and vocodes a held-out utterance. Also:
    python -m vocoders.train -m model.hidden_size=512,896        a sweep; each run in its own directory
    torchrun --nproc_per_node=N -m vocoders.train recipe=...     data-parallel on N processes
    python -m vocoders.train -m hydra/launcher=slurm ...         on SLURM (hydra-submitit-launcher)
"""

from __future__ import annotations

import atexit
import logging
import shutil
import sys
import tempfile

import hydra
from omegaconf import DictConfig, open_dict

from .distributed import launched_rank


@hydra.main(version_base="1.3", config_path="pkg://vocoders.conf", config_name="train")
def run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .training import train

    hydra_cfg = HydraConfig.get()
    rank = launched_rank()
    if rank > 0:  # rank 0 speaks for the run; the others only warn
        for handler in list(logging.getLogger().handlers):
            if isinstance(handler, logging.FileHandler):
                logging.getLogger().removeHandler(handler)
        logging.getLogger("vocoders").setLevel(logging.WARNING)
    else:
        logging.getLogger("vocoders").setLevel(logging.INFO)
    if hydra_cfg.mode == RunMode.MULTIRUN:  # each job of a sweep trains in its own folder
        user_set = any(o.split("=", 1)[0].lstrip("+~") == "run_dir" for o in hydra_cfg.overrides.task)
        with open_dict(cfg):  # <hydra.sweep.dir>/<job number>, or <run_dir>/<job number> when given
            cfg.run_dir = f"{cfg.run_dir}/{hydra_cfg.job.num}" if user_set else hydra_cfg.runtime.output_dir
    result = train(cfg)
    if rank > 0 or result.weights_sha256:
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
        line = f"rank {rank}: trained to step {result.step}{resumed}; weights sha256 {result.weights_sha256}\n"
        sys.stdout.write(line)  # one write, so the ranks' lines do not interleave
        sys.stdout.flush()
    if rank > 0:
        return
    print(f"trained {result.step} steps; run directory: {result.run_dir}")
    if result.metrics:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        print(f"validation: {parts}")
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    if result.validation_audio:
        print(f"vocoded held-out utterance: {result.validation_audio}")


def main() -> None:
    """Run Hydra; under torchrun, ranks above 0 keep Hydra's own outputs in a throw-away folder."""
    if launched_rank() > 0:
        scratch = tempfile.mkdtemp(prefix=f"vocoders-rank{launched_rank()}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        # Later overrides win: rank 0's run directory is broadcast to every rank inside `train`.
        sys.argv += [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null"]
    run()


if __name__ == "__main__":
    main()
