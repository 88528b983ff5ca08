"""Process-group helpers for running a study under `accelerate launch` / torchrun, or alone.

Ranks come from the launcher's environment (RANK, WORLD_SIZE); the process group is the one accelerate
sets up, gloo on CPU and nccl on GPUs. With one process every helper is a no-op.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def init(cpu: bool) -> None:
    """Start the process group once (accelerate's PartialState), gloo when `cpu`."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    PartialState(cpu=cpu)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def shard(items: list[T]) -> list[T]:
    """This rank's share of `items` (strided, so every rank gets a similar mix)."""
    return items[rank() :: world_size()]


def gather(items: list[Any]) -> list[Any]:
    """Every rank's `items` concatenated in rank order, on every rank."""
    if world_size() == 1:
        return list(items)
    import torch.distributed as dist

    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]
