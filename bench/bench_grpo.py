"""The GRPO stage: mindgap's `grpo` update rule against a plain TRL GRPOTrainer script with the same reward.

Both load SmolLM2-135M-Instruct and train it with GRPO on the quickstart's train prompts for the same
steps with the same hyper-parameters and the same reward function (`trainer.rewards.verifier_reward`,
the task's checker: no judging model, so the reward costs the same in both), merge LoRA and save a
bf16 checkpoint: the whole stage, load to save. "mindgap" is `trainer.update.grpo.grpo_train` (with
TRL checkpoints inside the round off, as the plain script has none); "plain" is the script a user
would write with TRL alone (`plain_trl` below). Repeated, alternating; figures are medians, and the
per-step loss and reward curves of the two are compared (the same seed: the same rollouts).

    .venv/bin/python bench/bench_grpo.py [--steps 4] [--repeats 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import Result, command_line, interleave, median, quickstart_task, spread

# A short GRPO round at the quickstart's sampling settings (4 prompts x 4 rollouts a step)
HYPER = dict(
    learning_rate=5e-5,
    batch_size=16,  # 4 prompts x 4 rollouts a step
    num_generations=4,
    max_completion_length=96,
    temperature=0.8,
    lora_r=16,
    lora_alpha=32,
)


def plain_trl(data, reward, base: Path, out: Path, steps: int, seed: int) -> dict:
    """A plain TRL script: GRPOTrainer with the reward, merge LoRA, save bf16. What mindgap's stage wraps."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(base)
    work = tempfile.mkdtemp(prefix="plain-grpo-")
    args = GRPOConfig(
        output_dir=work,
        max_steps=steps,
        per_device_train_batch_size=HYPER["batch_size"],
        num_generations=HYPER["num_generations"],
        max_completion_length=HYPER["max_completion_length"],
        temperature=HYPER["temperature"],
        learning_rate=HYPER["learning_rate"],
        lr_scheduler_type="linear",
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
    peft = LoraConfig(
        r=HYPER["lora_r"], lora_alpha=HYPER["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=peft,
    )
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    steps_logged = [h for h in trainer.state.log_history if "loss" in h]
    final = trainer.model.merge_and_unload()
    final.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "train_seconds": train_s,
        "loss_history": [float(h["loss"]) for h in steps_logged],
        "reward_history": [float(h["reward"]) for h in steps_logged],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4, help="GRPO steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="discarded runs of each variant first")
    args = ap.parse_args()

    import pandas as pd
    from datasets import Dataset

    from trainer.rewards import verifier_reward
    from trainer.samplers.base import cpu_has_native_bf16
    from trainer.training import load_tokenizer, single_bos
    from trainer.update.grpo import GRPOOptions, Rollouts, grpo_train

    res = Result(
        "grpo", "The GRPO stage: mindgap's grpo rule vs a plain TRL GRPOTrainer script", command_line()
    )
    prompts_n = args.steps * HYPER["batch_size"] // HYPER["num_generations"]
    base, task, problems, prompts, _ = quickstart_task(prompts_n)
    tok = load_tokenizer(base)
    eos = {tok.eos_token_id, tok.pad_token_id}
    table = pd.DataFrame({"prompt_id": [str(p.id) for p in problems], "prompt": prompts})
    data = Dataset.from_dict(
        {"prompt": single_bos(list(prompts), tok), "prompt_id": list(table["prompt_id"])}
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-grpo-"))

    def run_mindgap() -> dict:
        out = scratch / f"mg-{time.monotonic_ns()}"
        opts = GRPOOptions(
            reward="majority",
            steps=args.steps,
            learning_rate=HYPER["learning_rate"],
            batch_size=HYPER["batch_size"],
            lora_r=HYPER["lora_r"],
            lora_alpha=HYPER["lora_alpha"],
            save_steps=0,
            bf16=False,
        )
        rollouts = Rollouts(
            HYPER["num_generations"], HYPER["max_completion_length"], HYPER["temperature"], 1.0
        )
        reward = verifier_reward("majority", task, problems, eos_ids=eos)
        start = time.perf_counter()
        stats = grpo_train(table, base, out, opts, rollouts, reward, 0, steps_dir=scratch / "steps")
        s = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        return {
            "seconds": s,
            "train_seconds": stats["seconds"],
            "build_seconds": stats["stage_seconds"]["build"],
            "save_seconds": stats["stage_seconds"]["save"],
            "loss_history": stats["loss_history"],
            "reward_history": stats["reward_trl_history"],
            "tokens_generated": stats["tokens_generated"],
        }

    def run_plain() -> dict:
        out = scratch / f"plain-{time.monotonic_ns()}"
        reward = verifier_reward("majority", task, problems, eos_ids=eos)
        start = time.perf_counter()
        stats = plain_trl(data, reward, base, out, args.steps, seed=0)
        s = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        return {"seconds": s, **stats}

    runs = interleave({"mindgap": run_mindgap, "plain": run_plain}, args.repeats, warmup=args.warmup)
    shutil.rmtree(scratch, ignore_errors=True)

    mg, pl = runs["mindgap"], runs["plain"]
    res.add("mindgap stage (load, train, merge, save), fp32, LoRA", median(mg, "seconds"), "s")
    res.add("plain TRL script (same), fp32, LoRA", median(pl, "seconds"), "s")
    res.add("mindgap / plain (speed)", median(pl, "seconds") / median(mg, "seconds"), "x", target=">= 1.0")
    diffs = [max(abs(a - b) for a, b in zip(m["loss_history"], p["loss_history"])) for m, p in zip(mg, pl)]
    res.add(
        "loss curve: largest per-step difference, mindgap - plain",
        max(diffs),
        "",
        note="same seed and rollouts",
    )
    reward_diffs = [
        max(abs(a - b) for a, b in zip(m["reward_history"], p["reward_history"])) for m, p in zip(mg, pl)
    ]
    res.add("reward curve: largest per-step difference", max(reward_diffs), "")
    res.add("fixed cost, load + wrap", median(mg, "build_seconds"), "s")
    res.add("fixed cost, merge + save", median(mg, "save_seconds"), "s")
    res.details = {
        "workload": {"steps": args.steps, "prompts": prompts_n, **HYPER, "reward": "majority"},
        "bf16_native": cpu_has_native_bf16(),
        "spread_seconds": {k: spread(v, "seconds") for k, v in runs.items()},
        "runs": runs,
    }
    res.write()


if __name__ == "__main__":
    main()
