"""Trained checkpoints shipped inside the package, loadable by a short name.

`vocoders.load("cs-male-22k")` finds `vocoders/assets/pretrained/cs-male-22k.safetensors` (package
data, so a plain `pip install .` has it); the model card beside it (`.md`) says what it was trained
on, for how long, and how it scores. Loading never touches the network.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SUFFIX = ".safetensors"


def pretrained_dir() -> Path:
    """The folder of shipped checkpoints inside the installed package."""
    return Path(str(resources.files("vocoders.assets") / "pretrained"))


def available() -> list[str]:
    """Short names of the shipped checkpoints, sorted."""
    folder = pretrained_dir()
    return sorted(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint path for a file path or a shipped model's short name (a path that exists wins)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix == SUFFIX or len(path.parts) > 1:
        return path
    shipped = pretrained_dir() / f"{path.name}{SUFFIX}"
    return shipped if shipped.is_file() else path


def model_card(name: str) -> str:
    """The model card (Markdown) of shipped checkpoint `name`."""
    card = pretrained_dir() / f"{name}.md"
    if not card.is_file():
        raise FileNotFoundError(f"{name}: no shipped model of that name (shipped: {', '.join(available()) or 'none'})")
    return card.read_text(encoding="utf-8")
