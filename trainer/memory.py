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


def rss_by_process(pid: int | None = None) -> dict[str, float]:
    """Resident memory in MB of process `pid` (this one by default) and of each of its descendants
    (engine workers), keyed `name:pid`; empty when `pid` is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out[f"{p.name()}:{p.pid}"] = p.memory_info().rss / 2**20
    return out


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of process `pid` (this one by default) and its descendants together, in MB."""
    return round(sum(rss_by_process(pid).values()), 1)


def return_freed_heap() -> None:
    """Give the heap pages this process freed back to the OS. glibc keeps freed memory for reuse, so
    without this a study's resident memory grows round after round (SFT in the recipe's process, weight
    swaps in the vLLM worker), which on a CPU takes RAM from the engine beside it."""
    import ctypes

    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def forget_import_tracebacks() -> int:
    """Drop the tracebacks of exceptions that modules keep as globals; return how many.

    vLLM keeps the ImportError of an optional package (torchcodec) in a module global. Its traceback
    holds every frame of the call that first imported vLLM, and with them what those frames held until
    the process ends: when TRL's GRPOTrainer is what imports it, the trained model. The exceptions and
    their messages stay; only their frames go."""
    dropped = 0
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            # type(), not isinstance: isinstance reads __class__, which deprecated aliases warn on
            if issubclass(type(value), BaseException) and value.__traceback__ is not None:
                value.__traceback__ = None
                dropped += 1
    return dropped
