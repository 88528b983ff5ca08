"""Distillation: supervised fine-tuning on the kept (prompt, completion) pairs with TRL's SFTTrainer.

    stats = distill(kept[["prompt", "completion"]], prev_checkpoint, round_dir / "checkpoint", opts, seed)

The same call works in one plain process and on every rank under `accelerate launch` (DDP, or DeepSpeed
ZeRO-2/3 from the accelerate config or `opts.deepspeed`). The rows go to TRL in its prompt-completion
format: prompts are already rendered (chat template included) and are only tokenized, the loss covers
the completion tokens alone, and every completion ends with the tokenizer's EOS text so the model
learns to stop (TRL appends EOS only where it is missing, so it is never doubled). LoRA adapters are
merged into the weights before saving, so `output_dir` is always a plain Hugging Face checkpoint
(bf16 safetensors, config, tokenizer) that the next round's sampler loads. Only the main process
writes it, atomically; nothing else is left on disk.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Problems, knob
from core.errors import UserError
from trainer.memory import return_freed_heap
from trainer.training import (
    SET_BY_MINDGAP,
    TrainingOptions,
    check_options,
    check_trl_fields,
    drop_final_eos,
    environ,
    launch_env,
    load_tokenizer,
    lora_config,
    numel,
    release,
    save_checkpoint,
    single_bos,
    trainer_settings,
    weights_checksum,
)

if TYPE_CHECKING:
    import pandas as pd

# SFTConfig fields mindgap sets itself (from the keys below, or because the loop needs them so);
# `sft.trl` may pass any other field of TRL's SFTConfig through.
_SET_BY_MINDGAP = SET_BY_MINDGAP | {"packing", "completion_only_loss"}


@dataclass
class SFTOptions(TrainingOptions):
    """How the kept samples are distilled into the next checkpoint (TRL SFT)."""

    learning_rate: float = knob(1e-4, "peak learning rate")
    epochs: float = knob(1.0, "passes over the kept samples")
    batch_size: int = knob(8, "samples per device and step")
    grad_accum: int = knob(1, "gradient accumulation steps")
    max_length: int = knob(512, "tokens of prompt + completion; longer rows are truncated at the end")
    packing: bool = knob(False, "pack rows into max_length sequences (TRL's BFD packing, padding-free)")
    train_on_truncated: bool = knob(
        False, "also distill samples cut off at sampling.max_tokens (no EOS added)"
    )
    trl: dict = knob(
        factory=dict,
        help="any other field of TRL's SFTConfig, passed through (e.g. {lr_scheduler_type: cosine, max_grad_norm: 1.0})",
    )

    def validate(self, key: str) -> None:
        problems = Problems()
        check_options(self, key, problems)
        with problems.check():
            check_sft_trl_fields(self.trl, f"{key}.trl")
        problems.raise_any()


def check_sft_trl_fields(extra: dict, key: str) -> None:
    """`extra` names only fields of TRL's SFTConfig that mindgap does not set itself."""
    from trl import SFTConfig

    check_trl_fields(extra, key, SFTConfig, _SET_BY_MINDGAP, "sft")


def distill(
    rows: pd.DataFrame,
    base_model_dir: Path,
    output_dir: Path,
    opts: SFTOptions,
    seed: int,
    report_to: str = "none",
    callbacks: list | None = None,
    key: str = "sft",
) -> dict:
    """Fine-tune `base_model_dir` on `rows` (columns prompt, completion); write the result to `output_dir`.

    Call it on every rank when launched with accelerate; all ranks return the same stats (timings
    aside): train_loss (mean over the run), loss_history (one value per optimizer step), steps,
    samples, train_tokens (prompt + completion tokens processed, all ranks), seconds,
    tokens_per_second, trainable_params, and weights_checksum (this rank's trained weights; equal on
    all ranks when they stayed in sync; None under ZeRO-3). `key` is how errors name the options.
    """
    import torch

    if rows is None or len(rows) == 0:
        raise ValueError("distill: no rows to train on")
    output_dir = Path(output_dir)
    scratch = Path(tempfile.mkdtemp(prefix="mindgap-sft-"))  # the Trainer's output_dir; nothing lands there
    try:
        with environ(**launch_env(opts, key)):
            return _train_and_save(
                rows, base_model_dir, output_dir, opts, seed, scratch, report_to, callbacks, key
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return_freed_heap()


def _train_and_save(
    rows,
    base_model_dir,
    output_dir: Path,
    opts: SFTOptions,
    seed: int,
    scratch: Path,
    report_to: str,
    callbacks,
    key: str,
) -> dict:
    clock = time.perf_counter()
    trainer = build_trainer(
        rows, base_model_dir, opts, seed, scratch, report_to=report_to, callbacks=callbacks, key=key
    )
    build_seconds = time.perf_counter() - clock  # load the model, wrap it, tokenize the rows
    trainable = sum(numel(p) for p in trainer.model.parameters() if p.requires_grad)
    samples = len(trainer.train_dataset)
    prepared_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])

    clock = time.perf_counter()
    result = trainer.train()  # never evaluate() first: it marks the model prepared and disables DDP
    seconds = time.perf_counter() - clock

    history = trainer.state.log_history
    tokens = next((int(h["num_tokens"]) for h in reversed(history) if "num_tokens" in h), None)
    if tokens is None:  # TRL logs the tokens it trained on; else the prepared rows times the epochs
        tokens = int(prepared_tokens * (trainer.state.epoch or 1))
    stats = {
        "train_loss": float(result.training_loss),
        "loss_history": [float(h["loss"]) for h in history if "loss" in h],
        "steps": int(trainer.state.global_step),
        "samples": samples,
        "train_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None,
        "trainable_params": int(trainable),
        "method": opts.method,
        "world_size": int(trainer.accelerator.num_processes),
        "weights_checksum": weights_checksum(trainer),
        "bf16": bool(trainer.args.bf16),
    }
    clock = time.perf_counter()
    try:
        save_checkpoint(trainer, output_dir, trainer.processing_class, lora=opts.method == "lora")
    finally:
        release(trainer)
    # the fixed costs of a round's SFT around its training loop
    stats["stage_seconds"] = {"build": round(build_seconds, 3), "save": round(time.perf_counter() - clock, 3)}
    return stats


def build_trainer(
    rows: pd.DataFrame,
    base_model_dir: Path,
    opts: SFTOptions,
    seed: int,
    work_dir: Path,
    report_to: str = "none",
    callbacks: list | None = None,
    key: str = "sft",
):
    """The SFTTrainer that `distill` runs, ready to train (for `distill`, and for inspecting its batches).

    `work_dir` becomes the Trainer's output_dir; with saving off nothing is written there.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from trainer.sft_trainer import DistillTrainer

    missing = {"prompt", "completion"} - set(rows.columns)
    if missing:
        raise ValueError(f"distill: rows lack the column(s) {sorted(missing)}")
    base_model_dir = Path(base_model_dir)
    tokenizer = load_tokenizer(base_model_dir)
    data = Dataset.from_dict(_prepare_rows(rows, tokenizer))
    if opts.packing and "length" in _finish_reasons(rows):
        raise UserError(
            f"{key}.packing: packed rows cannot keep truncated samples apart; turn off {key}.packing or "
            f"{key}.train_on_truncated"
        )

    bf16 = opts.use_bf16()
    lora = opts.method == "lora"
    with environ(**launch_env(opts, key)):
        settings = dict(
            trainer_settings(opts, work_dir, seed, report_to),
            packing=opts.packing,
            completion_only_loss=True,  # the format implies it; explicit so it never silently changes
        )
        args = SFTConfig(**{**settings, **opts.trl})  # sft.trl: TRL's other fields (and these defaults)
        # After the config: under ZeRO-3 its DeepSpeed settings make from_pretrained load the weights
        # partitioned across ranks. Frozen LoRA base weights can stay bf16; weights that train keep
        # fp32 masters (with bf16 autocast).
        load_dtype = torch.bfloat16 if (lora and bf16) else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=load_dtype)
        trainer = DistillTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora_config(opts) if lora else None,
            callbacks=callbacks,
        )
    unfinished = {i for i, reason in enumerate(_finish_reasons(rows)) if reason == "length"}
    if unfinished:
        trainer.train_dataset = drop_final_eos(trainer.train_dataset, unfinished, tokenizer.eos_token_id)
    return trainer


def _finish_reasons(rows: pd.DataFrame) -> list[str]:
    return rows["finish_reason"].tolist() if "finish_reason" in rows else ["stop"] * len(rows)


# ---------------------------------------------------------------- data


def _prepare_rows(rows: pd.DataFrame, tokenizer) -> dict[str, list[str]]:
    """Plain-string prompt/completion columns, each finished completion ending in exactly one EOS.

    A row whose `finish_reason` (where the column is given) is "length" was cut off, not finished: it
    gets no EOS (nor does TRL's appended one survive: `drop_final_eos`), so the model does not learn
    to stop where a token budget ran out. TRL tokenizes a
    string prompt with the tokenizer's special tokens; where that adds a BOS and the rendered prompt
    already starts with the BOS text, the text one is dropped so the model sees one.
    """
    eos = tokenizer.eos_token
    finished = [reason != "length" for reason in _finish_reasons(rows)]
    prompts, completions = [], []
    for i, (prompt, completion) in enumerate(zip(rows["prompt"], rows["completion"])):
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError(
                f"distill: row {i}: prompt and completion must be strings, got "
                f"{type(prompt).__name__} and {type(completion).__name__}"
            )
        if finished[i] and not completion.endswith(eos):
            completion += eos
        prompts.append(prompt)
        completions.append(completion)
    return {"prompt": single_bos(prompts, tokenizer), "completion": completions}
