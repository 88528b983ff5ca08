"""The DPO stage: mindgap's `dpo` update rule against a plain TRL DPOTrainer script on the same pairs.

Both load SmolLM2-135M-Instruct, train it with DPO on the same (prompt, chosen, rejected) pairs with
the same hyper-parameters (the `update.dpo` defaults: sigmoid loss, beta 0.1, one epoch, 8 pairs a
step in micro-batches of 4; the starting model is the reference), merge LoRA where used and save a
bf16 checkpoint: the whole stage, load to save. "mindgap" is `trainer.update.dpo.preference_train` (TRL's DPOTrainer with
the compact LM head of `trainer.dpo_trainer`); "plain" is the script a user would write with TRL
alone (`plain_trl` below). LoRA and full fine-tuning, alternating, repeated; figures are medians, and
the loss of the two is compared (the same batches, so the same loss up to rounding).

    .venv/bin/python bench/bench_dpo.py [--pairs 96] [--repeats 3] [--warmup 1] [--methods lora,full]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import Result, command_line, interleave, median, quickstart_task, spread

# The DPO rule's defaults (trainer/update/dpo.py DPOOptions), a quickstart round's worth of pairs.
HYPER = dict(
    learning_rate=5e-5,
    epochs=1.0,
    batch_size=4,
    grad_accum=2,
    max_length=512,
    beta=0.1,
    lora_r=16,
    lora_alpha=32,
)


def pairs_of(n: int, per_prompt: int = 2, seed: int = 0):
    """Pairs as the loop would draw them: rendered prompts, a right worked answer (chosen) against a
    wrong one (rejected) of the length SmolLM2 writes on this task (~40 tokens), of varied length."""
    import random

    import pandas as pd

    _, _, problems, prompts, _ = quickstart_task(max(1, -(-n // per_prompt)), seed=seed)
    rng = random.Random(seed)

    def answer(p, value) -> str:
        steps = " ".join(f"Step {k + 1}: keep adding the digits carefully." for k in range(rng.randint(0, 4)))
        return f"To solve {p.question.rstrip('.')}, add the two numbers. {steps}\nAnswer: {value}"

    rows = []
    for p, prompt in zip(problems, prompts):
        for _ in range(per_prompt):
            wrong = int(p.answer) + rng.choice([-10, -1, 1, 10])
            rows.append({"prompt": prompt, "chosen": answer(p, p.answer), "rejected": answer(p, wrong)})
    return pd.DataFrame(rows[:n])


def plain_trl(pairs, base: Path, out: Path, method: str, seed: int) -> dict:
    """A plain TRL script: DPOTrainer on the pairs, merge LoRA, save bf16. What mindgap's stage wraps."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_dict({k: list(pairs[k]) for k in ("prompt", "chosen", "rejected")})
    work = tempfile.mkdtemp(prefix="plain-dpo-")
    args = DPOConfig(
        output_dir=work,
        per_device_train_batch_size=HYPER["batch_size"],
        gradient_accumulation_steps=HYPER["grad_accum"],
        learning_rate=HYPER["learning_rate"],
        num_train_epochs=HYPER["epochs"],
        lr_scheduler_type="linear",
        max_length=HYPER["max_length"],
        beta=HYPER["beta"],
        loss_type=["sigmoid"],
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = None
    if method == "lora":
        peft = LoraConfig(
            r=HYPER["lora_r"],
            lora_alpha=HYPER["lora_alpha"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
    start = time.perf_counter()
    loss = trainer.train().training_loss
    train_s = time.perf_counter() - start
    history = trainer.state.log_history
    tokens = next(int(h["num_tokens"]) for h in reversed(history) if "num_tokens" in h)
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    final = trainer.model.merge_and_unload() if method == "lora" else trainer.model
    final.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "train_seconds": train_s,
        "train_tokens": tokens,
        "loss": loss,
        "margin": sum(margins) / len(margins),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=96, help="pairs (a quickstart round draws ~100-140)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="discarded runs of each variant first")
    ap.add_argument("--methods", default="lora,full")
    args = ap.parse_args()

    from trainer.models import resolve_model
    from trainer.samplers.base import cpu_has_native_bf16
    from trainer.update.dpo import DPOOptions, preference_train

    res = Result("dpo", "The DPO stage: mindgap's dpo rule vs a plain TRL DPOTrainer script", command_line())
    base = resolve_model("smollm2-135m-instruct")
    pairs = pairs_of(args.pairs)
    scratch = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    methods = [m for m in args.methods.split(",") if m]

    def run_mindgap(method: str):
        def run() -> dict:
            out = scratch / f"mg-{method}-{time.monotonic_ns()}"
            opts = DPOOptions(
                method=method,
                bf16=False,
                **{
                    k: HYPER[k]
                    for k in ("learning_rate", "epochs", "batch_size", "grad_accum", "max_length", "beta")
                },
                lora_r=HYPER["lora_r"],
                lora_alpha=HYPER["lora_alpha"],
            )
            start = time.perf_counter()
            stats = preference_train(pairs, base, out, opts, seed=0)
            s = time.perf_counter() - start
            shutil.rmtree(out, ignore_errors=True)
            return {
                "seconds": s,
                "train_seconds": stats["seconds"],
                "build_seconds": stats["stage_seconds"]["build"],
                "save_seconds": stats["stage_seconds"]["save"],
                "train_tokens": stats["train_tokens"],
                "tok_per_s": stats["train_tokens"] / stats["seconds"],
                "loss": stats["train_loss"],
                "margin": stats["reward_margin"],
            }

        return run

    def run_plain(method: str):
        def run() -> dict:
            out = scratch / f"plain-{method}-{time.monotonic_ns()}"
            start = time.perf_counter()
            stats = plain_trl(pairs, base, out, method, seed=0)
            s = time.perf_counter() - start
            shutil.rmtree(out, ignore_errors=True)
            return {"seconds": s, **stats, "tok_per_s": stats["train_tokens"] / stats["train_seconds"]}

        return run

    runs = {}
    for method in methods:
        variants = {f"mindgap_{method}": run_mindgap(method), f"plain_{method}": run_plain(method)}
        runs.update(interleave(variants, args.repeats, warmup=args.warmup))
    shutil.rmtree(scratch, ignore_errors=True)

    for method in methods:
        mg, pl = runs[f"mindgap_{method}"], runs[f"plain_{method}"]
        res.add(f"{method}: mindgap stage (load, train, merge, save), fp32", median(mg, "seconds"), "s")
        res.add(f"{method}: plain TRL script (same), fp32", median(pl, "seconds"), "s")
        res.add(
            f"{method}: mindgap / plain (speed), fp32",
            median(pl, "seconds") / median(mg, "seconds"),
            "x",
            target=">= 1.0",
        )
        res.add(
            f"{method}: loss, mindgap - plain (same pairs, fp32)",
            median(mg, "loss") - median(pl, "loss"),
            "",
            note=f"plain {median(pl, 'loss'):.4f}",
        )
        res.add(
            f"{method}: mean reward margin, mindgap - plain",
            median(mg, "margin") - median(pl, "margin"),
            "",
            note=f"plain {median(pl, 'margin'):.4f}",
        )
        res.add(f"{method}: training tokens/s, mindgap", median(mg, "tok_per_s"), "tok/s")
        res.add(f"{method}: training tokens/s, plain", median(pl, "tok_per_s"), "tok/s")
        res.add(f"{method}: fixed cost, load + wrap + tokenize", median(mg, "build_seconds"), "s")
        res.add(f"{method}: fixed cost, merge + save", median(mg, "save_seconds"), "s")
    res.notes.append(
        "Where the time goes: on a CPU TRL's fused LM head projects every position of the chosen and "
        "rejected sequences through the 49k-token vocabulary (and computes entropy, mean logit and top-1 "
        "over it for its logged metrics); mindgap's head projects the completion positions alone. The "
        "reference pass (adapters off under LoRA, a frozen copy under full fine-tuning) is the same in both."
    )
    res.details = {
        "workload": {"pairs": len(pairs), **HYPER},
        "bf16_native": cpu_has_native_bf16(),
        "spread_seconds": {k: spread(v, "seconds") for k, v in runs.items()},
        "runs": runs,
    }
    res.write()


if __name__ == "__main__":
    main()
