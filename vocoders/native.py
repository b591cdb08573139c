"""Access to the compiled extension `vocoders._native` (C kernels built at `pip install` time).

The extension is optional: installing without a C compiler skips it, and the engines that need it
report themselves unavailable (so `engine=auto` falls back to the reference engine).
`VOCODERS_NATIVE=0` in the environment hides it, to test or compare the fallback.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def native_status() -> tuple[ModuleType | None, str | None]:
    """(the extension module, None) when it can be used, else (None, why not)."""
    if os.environ.get("VOCODERS_NATIVE", "1") == "0":
        return None, "disabled by VOCODERS_NATIVE=0"
    try:
        module = importlib.import_module("vocoders._native")
    except ImportError as exc:
        return None, (
            f"the compiled extension vocoders._native is not built ({exc}); reinstall with a C compiler "
            "present: pip install -e ."
        )
    return module, None


def load_native() -> ModuleType | None:
    """The extension module, or None when it is absent or disabled."""
    return native_status()[0]
