"""A batch of streams split into contiguous shares, one native call (and Python thread) per share.

The compiled loops release the GIL, so threads run the shares in parallel; each call gets raw
addresses of its first row in every batch-major tensor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


def row_address(tensor: torch.Tensor | None, first: int) -> int:
    """Address of row `first` of a batch-major tensor (0 for an absent one, which the C loops read as NULL)."""
    if tensor is None:
        return 0
    return tensor.data_ptr() + first * tensor.stride(0) * tensor.element_size()


def run_in_shares(
    batch: int, workers: int, share: Callable[[int, int], None], stop: threading.Event | None = None
) -> None:
    """Run share(first, last) over at most `workers` contiguous slices of `batch` streams.

    With one share it runs on the calling thread. When one share fails, `stop` (if given) is set so the
    others can return early; the first failure is raised.
    """
    workers = max(1, min(batch, workers))
    if workers == 1:
        share(0, batch)
        return
    bounds = [round(i * batch / workers) for i in range(workers + 1)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(share, bounds[i], bounds[i + 1]) for i in range(workers)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            if stop is not None:
                stop.set()
            raise
