"""Single-file safetensors checkpoints and the training-state side file.

An inference checkpoint is one `.safetensors` file: the model's tensors plus JSON metadata under
the key "vocoders" (format, package version, model name and kwargs, MelConfig, step, and whatever
the trainer adds, such as sparsity). Reading one never unpickles anything.

Extra tensor groups live beside the weights under a prefix (for example "ema." for averaged
weights or "mask." for pruning masks) so one file carries everything inference needs.

Optimizer and scheduler state go to a side file `<name>.state.pt`, written with torch.save and read
with `weights_only=True` (tensors and plain containers only; no code can run).

All writes are atomic: a temporary file in the same folder, fsync, then a rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FORMAT = "vocoders-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "vocoders"


@dataclass
class Checkpoint:
    """What a checkpoint file holds. tensors: name -> tensor (CPU); meta: the JSON metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path | None = None
    extras: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.meta["model"]

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return self.meta.get("model_kwargs", {})

    @property
    def mel(self) -> dict[str, Any]:
        return self.meta["mel"]

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path), fsync it, then rename it over `path`. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoint_metadata(model, step: int, **extra: Any) -> dict[str, Any]:
    """The JSON metadata describing `model` (a VocoderModel)."""
    from . import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": model.name,
        "model_kwargs": model.kwargs,
        "mel": model.mel_config.to_dict(),
        "step": int(step),
    }
    meta.update(extra)
    return meta


def total_steps(meta: dict[str, Any], steps_before: Callable[[dict[str, Any]], int] | None = None) -> int:
    """Training steps behind a checkpoint's weights (its metadata `meta`): the total it records (a
    shipped model, whose step is that total), else its step plus the steps behind its init_from
    source, `steps_before(source record)` (default: the total the record carries, else its step)."""
    if meta.get("total_steps"):
        return int(meta["total_steps"])
    source = meta.get("init_from") or {}
    before = steps_before(source) if steps_before else int(source.get("total_steps", source.get("step", 0)))
    return int(meta.get("step", 0)) + before


def save_checkpoint(
    path: str | os.PathLike,
    model,
    step: int,
    extras: dict[str, dict[str, torch.Tensor]] | None = None,
    **meta: Any,
) -> Path:
    """Write model weights (+ prefixed extra tensor groups) and metadata atomically."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    for prefix, group in (extras or {}).items():
        for name, t in group.items():
            tensors[f"{prefix}.{name}"] = t.detach().to("cpu").contiguous()
    metadata = {METADATA_KEY: json.dumps(checkpoint_metadata(model, step, **meta))}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_checkpoint(path: str | os.PathLike, extra_prefixes: tuple[str, ...] = ("ema", "mask")) -> Checkpoint:
    """Read a checkpoint without unpickling. Raises CheckpointError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw_meta = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({str(exc).splitlines()[0]})") from None
    if METADATA_KEY not in raw_meta:
        raise CheckpointError(
            f"{path}: a safetensors file, but not a vocoders checkpoint (no '{METADATA_KEY}' metadata)"
        )
    try:
        meta = json.loads(raw_meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata does not describe a vocoders checkpoint")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format_version']} is newer than this package reads ({FORMAT_VERSION})"
        )
    for key in ("model", "mel"):
        if key not in meta:
            raise CheckpointError(f"{path}: checkpoint metadata lacks '{key}'")
    extras: dict[str, dict[str, torch.Tensor]] = {}
    weights: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        prefix = name.split(".", 1)[0]
        if prefix in extra_prefixes and "." in name:
            extras.setdefault(prefix, {})[name.split(".", 1)[1]] = t
        else:
            weights[name] = t
    return Checkpoint(tensors=weights, meta=meta, path=path, extras=extras)


def add_settings_argument(parser) -> None:
    """The `--set NAME=VALUE` option of the CLIs (read it with `parse_settings(args.settings)`)."""
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar="NAME=VALUE",
        help="change a setting of generation from the checkpoint's (a model kwarg), e.g. --set voiced_temperature=0.7",
    )


def parse_settings(items: list[str] | None) -> dict[str, Any]:
    """CLI `--set NAME=VALUE` items -> {NAME: VALUE}, each value read as JSON (0.7, 2, true) or else kept as text."""
    settings: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(
                f"--set {item!r}: expected NAME=VALUE with a model setting's name, e.g. voiced_temperature=0.7"
            )
        try:
            settings[name] = json.loads(text)
        except json.JSONDecodeError:
            settings[name] = text
    return settings


def model_from_checkpoint(checkpoint: Checkpoint, use_ema: bool = True, settings: dict[str, Any] | None = None):
    """Rebuild the model a checkpoint describes and load its weights (EMA weights when present).

    settings: model kwargs that replace the checkpoint's (settings of generation such as LPCNet's
        `voiced_temperature` or `sampling_floor`); the weights must still fit the model they build.
    """
    from .models import build_model

    where = checkpoint.path or "checkpoint"
    kwargs = {**checkpoint.model_kwargs, **(settings or {})}
    try:
        model = build_model(checkpoint.model_name, checkpoint.mel, kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot build model {checkpoint.model_name!r} ({exc})") from None
    weights = checkpoint.extras["ema"] if use_ema and "ema" in checkpoint.extras else checkpoint.tensors
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{where}: weights do not fit model {checkpoint.model_name!r} ({exc})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit model {checkpoint.model_name!r} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    if hasattr(model, "load_extras"):
        model.load_extras(checkpoint)
    return model


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Optimizer/scheduler/RNG state for resuming; atomic."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training-state side file with weights_only=True (no code can run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable training state ({str(exc).splitlines()[0]})") from None
