"""The GPU check: what mindgap does on CUDA, run in one go on a freshly lent GPU machine (bench/gpu_check.sh).

A randomly initialised Llama (~0.86B parameters, built from a config around the embedded model's
tokenizer: no model download) goes through every GPU path that needs no vLLM:

  sampler       the hf sampler in bf16: generated tokens per second
  mc_scoring    MC scores of a tiny model on CUDA (fp32 and bf16) against the same on CPU in fp32
  sft_lora      the SFT stage (load, train, merge, save) in bf16: tokens/s and MFU of the training loop
  sft_full        against the GPU's bf16 peak (~790 TFLOP/s on an H200, --peak_tflops)
  zero2, zero3  the SFT stage under DeepSpeed ZeRO-2 and ZeRO-3 on one GPU (accelerate launch of
                tests/scripts/distill_2proc.py): it trains, saves once, and frees the model after
  study_<rule>  a 1-round study (recipes/iterate.py) on the hf backend with each update rule
                (trainer/update: sft, dpo, ...): its stage times, the gpu_mb it records, and the
                rule's own stats (loss, steps, bf16)

Every check is timed and caught: one that fails records its error and the rest still run. The JSON is
rewritten after every check, so a run cut short keeps what it finished. `--cpu` runs the same checks
on CPU with small sizes (the test suite does), so a GPU run meets no surprise but CUDA's.

    python bench/gpu_check.py [--cpu] [--out FILE] [--only name,name] [--skip name,name]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trainer.update import RULES  # noqa: E402  (after ROOT is on the path)

STUDIES = tuple(f"study_{rule}" for rule in RULES)  # a 1-round study with each update rule
CHECKS = ("sampler", "mc_scoring", "sft_lora", "sft_full", "zero2", "zero3", *STUDIES)
# (hidden, layers, heads, kv heads, MLP width): ~0.86B parameters with SmolLM2's 49k vocabulary on a
# GPU; a few million on CPU, where the check only proves the paths run
SIZES = {"gpu": (2048, 16, 16, 8, 5632), "cpu": (64, 2, 2, 2, 128)}
TINY = (128, 2, 2, 2, 256)  # the test suite's tiny model: MC scores compared across devices
PEAK_TFLOPS = 790.0  # measured bf16 matmul peak of the lent H200 (KINDS.md)


class Check:
    """The results file: one entry per check, written again after every one."""

    def __init__(self, path: Path, cpu: bool):
        self.path = path
        self.data = {"machine": machine(cpu), "checks": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.data["commit"] = _commit()

    @contextlib.contextmanager
    def run(self, name: str):
        entry = self.data["checks"].setdefault(name, {})
        start = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            yield entry
            entry["ok"] = True
        except Exception as e:  # noqa: BLE001 (one failed check must not lose the others)
            entry["ok"] = False
            entry["error"] = f"{type(e).__name__}: {e}"[-2000:]
            traceback.print_exc()
        finally:
            entry["seconds"] = round(time.perf_counter() - start, 1)
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    entry["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                    torch.cuda.reset_peak_memory_stats()
            gc.collect()
            print(
                f"[gpu_check] {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s", flush=True
            )
            self.write()

    def write(self) -> None:
        self.data["wall_seconds"] = round(time.perf_counter() - START, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


START = time.perf_counter()


def _commit() -> str | None:
    """The checkout's commit, where the tree travelled with its .git (a device call sends none)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def machine(cpu: bool) -> dict:
    import importlib.metadata as md

    import torch

    out = {
        "mode": "cpu" if cpu else "gpu",
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "versions": {},
    }
    for name in ("transformers", "trl", "peft", "accelerate", "deepspeed", "datasets", "reasoning-gym"):
        with contextlib.suppress(md.PackageNotFoundError):
            out["versions"][name] = md.version(name)
    return out


def build_model(tokenizer_dir: Path, size: tuple, out: Path, seed: int = 0) -> tuple[Path, int]:
    """A randomly initialised bf16 Llama of `size` around the tokenizer in `tokenizer_dir`, saved to
    `out`; its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, mlp = size
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out, n


def chat(tok, questions: list[str]) -> list[str]:
    return [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]


def arith_rows(tok, n: int, words: int):
    """SFT rows as the loop hands them over: chat prompts and worked-answer completions."""
    import pandas as pd

    questions = [f"What is {i % 89 + 10} + {i % 67 + 10}?" for i in range(n)]
    steps = " ".join(["Add the tens, then the units, and carry where needed."] * max(1, words // 10))
    completions = [f"{steps} The answer is {i % 89 + i % 67 + 20}." for i in range(n)]
    return pd.DataFrame({"prompt": chat(tok, questions), "completion": completions})


def sft_flops(model_dir: Path, rows, method: str, epochs: float) -> float:
    """FLOPs of the training loop: 2·N per token and pass over the N body weights (forward, the
    activation gradients, and for full fine-tuning the weight gradients: 4·N or 6·N per token), plus
    the LM head's 2·H·V per labelled token and pass (bench/bench_distill.py's count)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    body = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tokens = sum(
        len(tok(p + c + tok.eos_token)["input_ids"]) for p, c in zip(rows["prompt"], rows["completion"])
    )
    labelled = sum(len(tok(c + tok.eos_token)["input_ids"]) for c in rows["completion"])
    passes = 2 if method == "lora" else 3
    return epochs * (
        2 * passes * body * tokens + 2 * passes * config.hidden_size * config.vocab_size * labelled
    )


# ---------------------------------------------------------------- the checks


def check_sampler(entry: dict, model_dir: Path, tok, cpu: bool) -> None:
    from trainer.samplers.base import EngineConfig
    from trainer.samplers.hf import HFSampler

    prompts, n, tokens = (4, 2, 8) if cpu else (64, 4, 128)
    questions = [f"Write a short story about the number {i}." for i in range(prompts)]
    sampler = HFSampler(model_dir, EngineConfig(backend="hf", dtype="bfloat16", batch_size=prompts), seed=0)
    try:
        sampler.generate(chat(tok, questions[:2]), n=1, temperature=0.7, top_p=1.0, max_tokens=4, seed=0)
        start = time.perf_counter()
        out = sampler.generate(
            chat(tok, questions), n=n, temperature=0.7, top_p=1.0, max_tokens=tokens, seed=0
        )
        seconds = time.perf_counter() - start
    finally:
        sampler.close()
    generated = sum(c.n_tokens for row in out for c in row)
    entry.update(
        prompts=prompts,
        n=n,
        max_tokens=tokens,
        generated_tokens=generated,
        seconds_generate=round(seconds, 2),
    )
    entry["tokens_per_second"] = round(generated / seconds, 1)
    entry["dtype"] = str(sampler.model.dtype) if getattr(sampler, "model", None) is not None else "bfloat16"


def check_mc_scoring(entry: dict, tiny_dir: Path, tok) -> None:
    """The same MC scores from the hf sampler on the accelerator (fp32, bf16) and on CPU in fp32."""
    import torch

    from trainer.samplers.base import EngineConfig
    from trainer.samplers.hf import HFSampler

    prompts = chat(tok, [f"Is {i} + {i} = {2 * i}? Answer Correct or Incorrect." for i in range(8)])
    verdicts = [["Correct", "Incorrect"]] * len(prompts)

    def scores(dtype: str, device: str) -> list[list[float]]:
        sampler = HFSampler(tiny_dir, EngineConfig(backend="hf", dtype=dtype, batch_size=8), seed=0)
        sampler.model.to(device)
        sampler.device = device
        try:
            return sampler.score(prompts, verdicts)
        finally:
            sampler.close()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = scores("float32", "cpu")
    for dtype in ("float32", "bfloat16"):
        got = scores(dtype, device)
        entry[f"max_abs_diff_{dtype}_{device}_vs_fp32_cpu"] = max(
            abs(a - b) for ra, rb in zip(got, reference) for a, b in zip(ra, rb)
        )
    entry["fp32_agrees"] = entry[f"max_abs_diff_float32_{device}_vs_fp32_cpu"] < 1e-3
    if not entry["fp32_agrees"]:
        raise AssertionError(f"fp32 MC scores on {device} differ from CPU's by more than 1e-3")


def check_sft(
    entry: dict, model_dir: Path, tok, method: str, cpu: bool, peak_tflops: float, work: Path
) -> None:
    import torch

    from trainer.distill import SFTOptions, distill

    n_rows, batch = (16, 4) if cpu else (1024, 16)
    rows = arith_rows(tok, n_rows, words=20 if cpu else 60)
    opts = SFTOptions(
        method=method,
        learning_rate=1e-4,
        epochs=1.0,
        batch_size=batch,
        max_length=512,
        bf16=not cpu,
    )
    stats = distill(rows, model_dir, work / f"{method}_checkpoint", opts, seed=0)
    flops = sft_flops(model_dir, rows, method, opts.epochs)
    achieved = flops / stats["seconds"] / 1e12
    entry.update(
        rows=n_rows,
        batch_size=batch,
        bf16=stats["bf16"],
        steps=stats["steps"],
        train_tokens=stats["train_tokens"],
        train_seconds=stats["seconds"],
        stage_seconds=stats.get("stage_seconds"),
        tokens_per_second=stats["tokens_per_second"],
        trainable_params=stats["trainable_params"],
        loss_first_last=[stats["loss_history"][0], stats["loss_history"][-1]]
        if stats["loss_history"]
        else None,
        achieved_tflops=float(f"{achieved:.4g}"),
    )
    if torch.cuda.is_available():
        entry["mfu"] = round(achieved / peak_tflops, 4)
        entry["peak_tflops"] = peak_tflops
    if not (work / f"{method}_checkpoint" / "config.json").exists():
        raise AssertionError("no checkpoint written")


def check_zero(entry: dict, stage: int, model_dir: Path, cpu: bool, work: Path, timeout: float) -> None:
    """tests/scripts/distill_2proc.py under `accelerate launch` with launch/zero<stage>.yaml, one process."""
    out = work / f"zero{stage}"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "launch" / f"zero{stage}.yaml"),
        "--num_processes", "1",
        str(ROOT / "tests" / "scripts" / "distill_2proc.py"),
        str(model_dir), str(out), "full" if stage == 3 else "lora", "1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    results = [
        json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")
    ]
    entry["returncode"] = proc.returncode
    if proc.returncode or not results:
        entry["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"accelerate launch with zero{stage}.yaml exited {proc.returncode}")
    (r,) = results
    entry.update(
        world_size=r["world_size"],
        saves=r["saves"],
        model_freed=r["model_freed"],
        steps=r["stats"]["steps"],
        tokens_per_second=r["stats"]["tokens_per_second"],
        bf16=r["stats"]["bf16"],
        checkpoint=(out / "round_0" / "checkpoint" / "config.json").exists(),
    )
    if not (entry["checkpoint"] and r["saves"] == 1 and r["model_freed"]):
        raise AssertionError(
            f"zero{stage}: checkpoint {entry['checkpoint']}, saves {r['saves']}, freed {r['model_freed']}"
        )


# Each rule's options for the check's study: small batches, and truncated samples trained on (the
# random model seldom ends a sample within the budget).
RULE_ARGS = {
    "sft": ["--update.sft.batch_size", "4", "--update.sft.max_length", "256", "--update.sft.train_on_truncated", "true"],
    "dpo": ["--update.dpo.batch_size", "2", "--update.dpo.max_length", "256", "--update.dpo.train_on_truncated", "true"],
    "grpo": ["--update.grpo.steps", "2"],
}  # fmt: skip


def check_study(entry: dict, rule: str, model_dir: Path, cpu: bool, work: Path, timeout: float) -> None:
    out = work / f"study_{rule}"
    args = [
        "--model", str(model_dir), "--output_dir", str(out), "--rounds", "1", "--report_to", "none",
        "--engine.backend", "hf", "--task.train_size", "8", "--task.test_size", "4",
        "--sampling.n", "4", "--sampling.max_tokens", "16" if cpu else "32",
        "--eval_sampling.n", "2", "--eval_sampling.max_tokens", "16" if cpu else "32",
        "--filter.q", "0.5", "--bootstrap", "100", "--update.name", rule, *RULE_ARGS.get(rule, []),
        "--saturation.relative_gap_below", "null", "--saturation.pass_at_k_drop", "null",
        "--saturation.diversity_drop", "null",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, str(ROOT / "recipes" / "iterate.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    entry["returncode"] = proc.returncode
    if proc.returncode:
        entry["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
        log = out / "logs" / "study.log"
        if log.exists():
            entry["study_log_tail"] = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"recipes/iterate.py --update.name {rule} exited {proc.returncode}")
    m = json.loads((out / "round_001" / "metrics.json").read_text())
    study = json.loads((out / "study.json").read_text())
    stats = json.loads((out / "round_001" / f"{rule}.json").read_text())
    entry.update(
        gpu_mb=m.get("gpu_mb"),
        rss_mb=m.get("rss_mb"),
        stage_seconds=m.get("seconds"),
        engine_dtype=study.get("engine_dtype"),
        train={k: v for k, v in m.get("train", {}).items() if isinstance(v, (int, float, str))},
        rule_stats={k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))},
        bf16=stats.get("bf16"),
    )
    if not cpu and entry["gpu_mb"] is None:
        raise AssertionError("the study recorded no gpu_mb on a GPU")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true", help="small sizes, no GPU needed (the test suite's run)")
    ap.add_argument("--out", default=None, help="the JSON to write (default $OUT/gpu_check.json or runs/)")
    ap.add_argument("--tokenizer", default=None, help="default .whl/tokenizer, else the embedded model's")
    ap.add_argument("--only", default="", help="comma-separated checks to run (default all)")
    ap.add_argument("--skip", default="", help="comma-separated checks to leave out")
    ap.add_argument("--peak_tflops", type=float, default=PEAK_TFLOPS)
    ap.add_argument("--timeout", type=float, default=240, help="seconds for each launched check")
    args = ap.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; run with --cpu to check the CPU paths")
    if args.out:
        path = Path(args.out)
    elif os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_check.json"
    else:
        path = ROOT / "runs" / "gpu_check" / ("gpu_check_cpu.json" if args.cpu else "gpu_check.json")
    wanted = [
        c for c in (args.only.split(",") if args.only else CHECKS) if c and c not in args.skip.split(",")
    ]
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        sys.exit(f"error: unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else ROOT / ".whl" / "tokenizer"
    if not tokenizer_dir.exists():
        from trainer.models import resolve_model

        tokenizer_dir = resolve_model("smollm2-135m-instruct")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    report = Check(path, args.cpu)
    report.data["checks_wanted"] = wanted
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        with report.run("model") as entry:
            model_dir, n = build_model(tokenizer_dir, SIZES["cpu" if args.cpu else "gpu"], work / "model")
            tiny_dir, _ = build_model(tokenizer_dir, TINY, work / "tiny")
            entry.update(params=n, size=SIZES["cpu" if args.cpu else "gpu"])
        for name in wanted:
            with report.run(name) as entry:
                if name == "sampler":
                    check_sampler(entry, model_dir, tok, args.cpu)
                elif name == "mc_scoring":
                    check_mc_scoring(entry, tiny_dir, tok)
                elif name in ("sft_lora", "sft_full"):
                    check_sft(entry, model_dir, tok, name[4:], args.cpu, args.peak_tflops, work)
                elif name in ("zero2", "zero3"):
                    check_zero(entry, int(name[-1]), model_dir, args.cpu, work, args.timeout)
                elif name in STUDIES:
                    check_study(entry, name[len("study_") :], model_dir, args.cpu, work, args.timeout)
    report.data["all_ok"] = all(e.get("ok") for e in report.data["checks"].values())
    report.write()
    print(f"[gpu_check] wrote {path}: {'all ok' if report.data['all_ok'] else 'SOME FAILED'}", flush=True)
    sys.exit(0 if report.data["all_ok"] else 1)


if __name__ == "__main__":
    main()
