"""`python -m vocoders.train recipe=NAME [overrides]`: the Hydra entry point around `training.train`.

With no overrides it trains the default recipe on the small speech sample shipped with the package
and vocodes a held-out utterance.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://vocoders.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from .training import train

    logging.getLogger("vocoders").setLevel(logging.INFO)
    result = train(cfg)
    print(f"trained {result.step} steps; run directory: {result.run_dir}")
    if result.metrics:
        parts = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        print(f"validation: {parts}")
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    if result.validation_audio:
        print(f"vocoded held-out utterance: {result.validation_audio}")


if __name__ == "__main__":
    main()
