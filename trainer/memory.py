"""Process memory: what a round records about it, and giving freed heap memory back to the OS."""

from __future__ import annotations

import contextlib
import sys


def gpu_mb() -> float | None:
    """Memory in use on this process's GPU by every process on it (a vLLM engine's too), in MB; None
    without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return round((total - free) / 2**20, 1)


def rss_mb() -> float:
    """Resident memory of this process and its children (engine workers), in MB."""
    import psutil

    proc = psutil.Process()
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return round(total / 2**20, 1)


def return_freed_heap() -> None:
    """Give the heap pages this process freed back to the OS. glibc keeps freed memory for reuse, so
    without this a study's resident memory grows round after round (SFT in the recipe's process, weight
    swaps in the vLLM worker), which on a CPU takes RAM from the engine beside it."""
    import ctypes

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)
