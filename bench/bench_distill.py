"""Distillation: mindgap's SFT stage against a plain TRL SFTTrainer script on the same kept data.

Both load SmolLM2-135M-Instruct, fine-tune it on the same (prompt, completion) rows with the same
hyper-parameters (TRL prompt-completion format, loss on completions only), merge LoRA where used and
save a bf16 checkpoint: the whole stage, load to save. "mindgap" is `trainer.distill.distill`;
"plain" is the script a user would write with TRL alone (`plain_trl` below). Full fine-tuning and
LoRA, alternating, repeated; figures are medians. Then the padding that batches carry: the share of
pad tokens in the batches mindgap's trainer builds, without and with packing (TRL's BFD packing,
padding-free), and the packed run's speed.

    .venv/bin/python bench/bench_distill.py [--rows 32] [--repeats 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import Result, command_line, interleave, median, quickstart_task, spread

# The quickstart's SFT settings (recipes/configs/quickstart.yaml): its kept set, its epochs.
HYPER = dict(learning_rate=2e-4, epochs=2.0, batch_size=8, max_length=512, lora_r=16, lora_alpha=32)


def kept_rows(n: int, seed: int = 0):
    """Kept samples as the loop would hand them over: rendered prompts and worked-answer completions of
    the length SmolLM2 writes on this task (~40 tokens), of varied length."""
    import random

    import pandas as pd

    _, _, problems, prompts, _ = quickstart_task(n, seed=seed)
    rng = random.Random(seed)
    completions = []
    for p in problems:
        steps = " ".join(f"Step {k + 1}: keep adding the digits carefully." for k in range(rng.randint(0, 4)))
        completions.append(
            f"To solve {p.question.rstrip('.')}, add the two numbers. {steps}\nAnswer: {p.answer}"
        )
    return pd.DataFrame({"prompt": prompts[:n], "completion": completions[:n]})


def plain_trl(rows, base: Path, out: Path, method: str, seed: int, packing: bool = False) -> dict:
    """A plain TRL script: SFTTrainer on the rows, merge LoRA, save bf16. What mindgap's stage wraps."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_dict({"prompt": list(rows["prompt"]), "completion": list(rows["completion"])})
    work = tempfile.mkdtemp(prefix="plain-sft-")
    args = SFTConfig(
        output_dir=work,
        per_device_train_batch_size=HYPER["batch_size"],
        learning_rate=HYPER["learning_rate"],
        num_train_epochs=HYPER["epochs"],
        lr_scheduler_type="linear",
        max_length=HYPER["max_length"],
        packing=packing,
        completion_only_loss=True,
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
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
    start = time.perf_counter()
    loss = trainer.train().training_loss
    train_s = time.perf_counter() - start
    tokens = next(int(h["num_tokens"]) for h in reversed(trainer.state.log_history) if "num_tokens" in h)
    final = trainer.model.merge_and_unload() if method == "lora" else trainer.model
    final.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    shutil.rmtree(work, ignore_errors=True)
    return {"train_seconds": train_s, "train_tokens": tokens, "loss": loss}


def padding_share(rows, base: Path, packing: bool) -> dict:
    """Pad tokens / all token slots over one epoch of the batches mindgap's trainer builds."""
    from trainer.distill import SFTOptions, build_trainer

    opts = SFTOptions(method="lora", packing=packing, **_opts())
    work = Path(tempfile.mkdtemp(prefix="pad-"))
    try:
        trainer = build_trainer(rows, base, opts, seed=0, work_dir=work)
        real = slots = 0
        for batch in trainer.get_train_dataloader():
            ids = batch["input_ids"]
            slots += ids.numel()
            if "attention_mask" in batch:
                real += int(batch["attention_mask"].sum())
            else:  # padding-free: one flattened row, no pad slots
                real += ids.numel()
        return {"pad_share": 1 - real / slots, "token_slots": slots, "real_tokens": real}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _opts() -> dict:
    return {
        "learning_rate": HYPER["learning_rate"],
        "epochs": HYPER["epochs"],
        "batch_size": HYPER["batch_size"],
        "max_length": HYPER["max_length"],
        "lora_r": HYPER["lora_r"],
        "lora_alpha": HYPER["lora_alpha"],
    }


def model_flops(base: Path, rows, method: str) -> dict:
    """FLOPs per epoch of the rows: 2·N per token and pass over the body's N weights (forward 1 pass,
    backward 1 more for activation gradients, and for full fine-tuning 1 more for the weight
    gradients: 4·N (LoRA) or 6·N (full) per token), and the LM head's 2·H·V per labelled token and
    pass (frozen under LoRA). Attention's score products (sequences of ~120 tokens) are left out."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.distill import SFTOptions, build_trainer

    config = AutoConfig.from_pretrained(base)
    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    embed = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embed  # tied LM head: counted once, as embed
    hidden, vocab = config.hidden_size, config.vocab_size
    work = Path(tempfile.mkdtemp(prefix="flops-"))
    try:
        trainer = build_trainer(rows, base, SFTOptions(method="lora", **_opts()), seed=0, work_dir=work)
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        labelled = sum(sum(x != -100 for x in lab) - 1 for lab in trainer.train_dataset["labels"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passes = 2 if method == "lora" else 3
    per_epoch = 2 * passes * body * tokens + 2 * passes * hidden * vocab * labelled
    return {"body_params": body, "tokens": tokens, "labelled_tokens": labelled, "flops_per_epoch": per_epoch}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=48, help="kept samples (the quickstart keeps 48 a round)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="discarded runs of each variant first")
    ap.add_argument(
        "--skip_batching", action="store_true", help="without the packed and length-grouped LoRA variants"
    )
    args = ap.parse_args()

    from bench_matmul import peak

    from trainer.distill import SFTOptions, distill
    from trainer.models import resolve_model
    from trainer.samplers.base import cpu_has_native_bf16

    res = Result("distillation", "Distillation: mindgap SFT stage vs a plain TRL script", command_line())
    base = resolve_model("smollm2-135m-instruct")
    rows = kept_rows(args.rows)
    scratch = Path(tempfile.mkdtemp(prefix="bench-distill-"))

    def run_mindgap(method: str, bf16: bool = False, **extra):
        def run() -> dict:
            out = scratch / f"mg-{method}-{bf16}-{time.monotonic_ns()}"
            opts = SFTOptions(method=method, bf16=bf16, **{**_opts(), **extra})
            start = time.perf_counter()
            stats = distill(rows, base, out, opts, seed=0)
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
            }

        return run

    def run_plain(method: str):
        def run() -> dict:
            out = scratch / f"plain-{method}-{time.monotonic_ns()}"
            start = time.perf_counter()
            stats = plain_trl(rows, base, out, method, seed=0)
            s = time.perf_counter() - start
            shutil.rmtree(out, ignore_errors=True)
            return {"seconds": s, **stats, "tok_per_s": stats["train_tokens"] / stats["train_seconds"]}

        return run

    runs = {}
    for method in ("lora", "full"):
        variants = {
            f"mindgap_{method}": run_mindgap(method),
            f"mindgap_{method}_bf16": run_mindgap(method, bf16=True),
            f"plain_{method}": run_plain(method),
        }
        if method == "lora" and not args.skip_batching:
            variants["mindgap_lora_packed"] = run_mindgap("lora", packing=True)
            variants["mindgap_lora_by_length"] = run_mindgap(
                "lora", trl={"train_sampling_strategy": "group_by_length"}
            )
        runs.update(interleave(variants, args.repeats, warmup=args.warmup))
    shutil.rmtree(scratch, ignore_errors=True)

    peaks = peak(seconds=1.5)
    peak_of = {"fp32": max(peaks["float32"].values()), "bf16": max(peaks["bfloat16"].values())}
    res.add("matmul peak, fp32", peak_of["fp32"], "GFLOP/s", note="bench_matmul.py, this run")
    res.add("matmul peak, bf16", peak_of["bf16"], "GFLOP/s")
    flops = {m: model_flops(base, rows, m) for m in ("lora", "full")}
    for method in ("lora", "full"):
        mg, pl = runs[f"mindgap_{method}"], runs[f"plain_{method}"]
        res.add(f"{method}: mindgap stage (load, train, merge, save), fp32", median(mg, "seconds"), "s")
        res.add(f"{method}: plain TRL script (same), fp32", median(pl, "seconds"), "s")
        res.add(
            f"{method}: mindgap / plain (speed), fp32",
            median(pl, "seconds") / median(mg, "seconds"),
            "x",
            target=">= 1.3",
        )
        res.add(
            f"{method}: loss, mindgap - plain (same data, fp32)", median(mg, "loss") - median(pl, "loss"), ""
        )
        res.add(f"{method}: training tokens/s, mindgap fp32", median(mg, "tok_per_s"), "tok/s")
        res.add(f"{method}: training tokens/s, plain fp32", median(pl, "tok_per_s"), "tok/s")
        bf = runs[f"mindgap_{method}_bf16"]
        res.add(f"{method}: mindgap stage, bf16", median(bf, "seconds"), "s")
        res.add(
            f"{method}: bf16 / fp32 (speed of the stage)", median(mg, "seconds") / median(bf, "seconds"), "x"
        )
        per_epoch = flops[method]["flops_per_epoch"] * HYPER["epochs"]
        for name, dtype, rr in (("fp32", "fp32", mg), ("bf16", "bf16", bf), ("plain fp32", "fp32", pl)):
            achieved = per_epoch / median(rr, "train_seconds") / 1e9
            res.add(
                f"{method}: MFU of the training loop, {name}",
                achieved / peak_of[dtype],
                "",
                note=f"{achieved:.0f} GFLOP/s",
            )
        res.add(f"{method}: fixed cost, load + wrap + tokenize", median(mg, "build_seconds"), "s")
        res.add(f"{method}: fixed cost, merge + save", median(mg, "save_seconds"), "s")
    if not args.skip_batching:
        packed, by_length = runs["mindgap_lora_packed"], runs["mindgap_lora_by_length"]
        base_tps = median(runs["mindgap_lora"], "tok_per_s")
        res.add("lora + packing: training tokens/s", median(packed, "tok_per_s"), "tok/s")
        res.add("lora: packing speed-up (training tokens/s)", median(packed, "tok_per_s") / base_tps, "x")
        res.add(
            "lora: length-grouped batches speed-up (tokens/s)", median(by_length, "tok_per_s") / base_tps, "x"
        )
    pads = {
        "padded": padding_share(rows, base, packing=False),
        "packed": padding_share(rows, base, packing=True),
    }
    res.add(
        "padding waste, padded batches (sft.packing false)", pads["padded"]["pad_share"], "share of slots"
    )
    res.add("padding waste, packed (sft.packing true)", pads["packed"]["pad_share"], "share of slots")
    res.details = {
        "workload": {"rows": len(rows), **HYPER},
        "bf16_native": cpu_has_native_bf16(),
        "flops": flops,
        "matmul_peak_gflops": peaks,
        "padding": pads,
        "spread_seconds": {k: spread(v, "seconds") for k, v in runs.items()},
        "runs": runs,
    }
    res.write()


if __name__ == "__main__":
    main()
