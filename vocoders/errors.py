"""The errors the package raises at its boundaries, in one module that imports nothing of the package.

Each is a ValueError whose message names the file (or source) and what is wrong, so a CLI can print
it on one line. Models, checkpoints, data and inference all import from here, which keeps the
import graph free of circles (models never import checkpoint.py to raise a checkpoint error).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names the file and the reason."""


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


class ManifestError(ValueError):
    """A dataset path or manifest that cannot be used at all (as opposed to one bad file)."""


class MelError(ValueError):
    """A mel that does not fit the checkpoint's contract; the message names the source and the problem."""


__all__ = ["AudioError", "CheckpointError", "ManifestError", "MelError"]
