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

import contextlib
import gc
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Problems, knob
from core.errors import UserError
from trainer.memory import return_freed_heap
from trainer.samplers.base import cpu_auto_dtype, cuda_bf16

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("full", "lora")
_TRUE = ("true", "yes", "on", "1", "bf16")
_FALSE = ("false", "no", "off", "0", "fp32")


# SFTConfig fields mindgap sets itself (from the keys above, or because the loop needs them so);
# `sft.trl` may pass any other field of TRL's SFTConfig through.
_SET_BY_MINDGAP = {
    "output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "num_train_epochs", "warmup_steps", "weight_decay", "max_length", "packing", "completion_only_loss",
    "gradient_checkpointing", "bf16", "fp16", "use_cpu", "ddp_backend", "seed", "data_seed",
    "logging_strategy", "logging_steps", "save_strategy", "eval_strategy", "report_to",
    "dataloader_num_workers", "dataloader_pin_memory", "deepspeed",
}  # fmt: skip


@dataclass
class SFTOptions:
    """How the kept samples are distilled into the next checkpoint (TRL SFT)."""

    method: str = knob("lora", "full | lora (LoRA is merged into the weights before saving)")
    learning_rate: float = knob(1e-4, "peak learning rate")
    epochs: float = knob(1.0, "passes over the kept samples")
    batch_size: int = knob(8, "samples per device and step")
    grad_accum: int = knob(1, "gradient accumulation steps")
    max_length: int = knob(512, "tokens of prompt + completion; longer rows are truncated at the end")
    lora_r: int = knob(16, "LoRA rank")
    lora_alpha: int = knob(32, "LoRA alpha (the update is scaled by alpha / r)")
    lora_dropout: float = knob(0.0, "LoRA dropout")
    lora_target: str = knob(
        "all-linear", "PEFT target_modules: all-linear, or a comma-separated list of names"
    )
    gradient_checkpointing: bool = knob(False, "recompute activations in backward (less memory, more time)")
    warmup_ratio: float = knob(0.0, "fraction of the steps with a linear warm-up")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    packing: bool = knob(False, "pack rows into max_length sequences (TRL's BFD packing, padding-free)")
    train_on_truncated: bool = knob(
        False, "also distill samples cut off at sampling.max_tokens (no EOS added)"
    )
    bf16: Any = knob(
        "auto",
        "auto | true | false; auto: bf16 on GPUs that support it and on CPUs where engine.dtype auto is "
        "bf16 (native bf16: AVX512-BF16 or AMX; MINDGAP_CPU_DTYPE forces it), else fp32",
    )
    deepspeed: str | None = knob(
        None, "a DeepSpeed JSON (launch/ds_zero*.json); else accelerate's config decides"
    )
    trl: dict = knob(
        factory=dict,
        help="any other field of TRL's SFTConfig, passed through (e.g. {lr_scheduler_type: cosine, max_grad_norm: 1.0})",
    )

    def validate(self, key: str) -> None:
        problems = Problems()
        if self.method not in METHODS:
            problems.add(f"{key}.method: unknown value '{self.method}'; choose one of {', '.join(METHODS)}")
        for name in ("learning_rate", "epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) <= 0:
                problems.add(f"{key}.{name}: must be > 0, got {getattr(self, name)}")
        if self.method == "lora":
            for name in ("lora_r", "lora_alpha"):
                if getattr(self, name) <= 0:
                    problems.add(f"{key}.{name}: must be > 0, got {getattr(self, name)}")
            if not self.lora_target.strip():
                problems.add(f"{key}.lora_target: empty; use all-linear or module names like q_proj,v_proj")
        if not 0 <= self.lora_dropout < 1:
            problems.add(f"{key}.lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            problems.add(f"{key}.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            problems.add(f"{key}.weight_decay: must be >= 0, got {self.weight_decay}")
        if _parse_bf16(self.bf16) == "invalid":
            problems.add(f"{key}.bf16: unknown value {self.bf16!r}; choose auto, true or false")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            problems.add(
                f"{key}.deepspeed: file {self.deepspeed} does not exist; pass a DeepSpeed JSON such "
                f"as launch/ds_zero2.json, or leave it unset"
            )
        with problems.check():
            check_trl_fields(self.trl, f"{key}.trl")
        problems.raise_any()

    def use_bf16(self) -> bool:
        """Whether SFT runs in bf16 (autocast; the weights that train keep fp32 masters). `auto`: on a
        GPU where it computes bf16 (`cuda_bf16`, not merely a GPU); on a CPU where `engine.dtype: auto`
        resolves to bf16 (native bf16, or MINDGAP_CPU_DTYPE)."""
        value = _parse_bf16(self.bf16)
        if value != "auto":
            return bool(value)
        import torch

        if torch.cuda.is_available():
            return cuda_bf16()
        # On a CPU with native bf16 the SFT stage ran 1.45x faster in bf16 and learned the same
        # (bench/README.md, sft_dtype); where bf16 is emulated it is several times slower.
        return cpu_auto_dtype() == "bfloat16"


def check_trl_fields(extra: dict, key: str) -> None:
    """`extra` names only fields of TRL's SFTConfig that mindgap does not set itself."""
    import dataclasses

    from trl import SFTConfig

    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    for name in extra:
        if name in _SET_BY_MINDGAP:
            raise UserError(f"{key}.{name}: set by mindgap (use the sft key of the same meaning instead)")
        if name not in fields:
            import difflib

            close = difflib.get_close_matches(name, sorted(fields - _SET_BY_MINDGAP), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UserError(f"{key}.{name}: TRL's SFTConfig has no field '{name}'{hint}")


def _parse_bf16(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return "invalid"


def distill(
    rows: pd.DataFrame,
    base_model_dir: Path,
    output_dir: Path,
    opts: SFTOptions,
    seed: int,
    report_to: str = "none",
    callbacks: list | None = None,
) -> dict:
    """Fine-tune `base_model_dir` on `rows` (columns prompt, completion); write the result to `output_dir`.

    Call it on every rank when launched with accelerate; all ranks return the same stats (timings
    aside): train_loss (mean over the run), loss_history (one value per optimizer step), steps,
    samples, train_tokens (prompt + completion tokens processed, all ranks), seconds,
    tokens_per_second, trainable_params, and weights_checksum (this rank's trained weights; equal on
    all ranks when they stayed in sync; None under ZeRO-3).
    """
    import torch

    if rows is None or len(rows) == 0:
        raise ValueError("distill: no rows to train on")
    output_dir = Path(output_dir)
    scratch = Path(tempfile.mkdtemp(prefix="mindgap-sft-"))  # the Trainer's output_dir; nothing lands there
    try:
        with _environ(**_launch_env(opts)):
            return _train_and_save(
                rows, base_model_dir, output_dir, opts, seed, scratch, report_to, callbacks
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
) -> dict:
    clock = time.perf_counter()
    trainer = build_trainer(
        rows, base_model_dir, opts, seed, scratch, report_to=report_to, callbacks=callbacks
    )
    build_seconds = time.perf_counter() - clock  # load the model, wrap it, tokenize the rows
    trainable = sum(_numel(p) for p in trainer.model.parameters() if p.requires_grad)
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
        "weights_checksum": _checksum(trainer),
        "bf16": bool(trainer.args.bf16),
    }
    clock = time.perf_counter()
    try:
        _save(trainer, output_dir, trainer.processing_class, lora=opts.method == "lora")
    finally:
        release(trainer)
    # the fixed costs of a round's SFT around its training loop
    stats["stage_seconds"] = {"build": round(build_seconds, 3), "save": round(time.perf_counter() - clock, 3)}
    return stats


def release(trainer) -> None:
    """Drop what the trainer and its accelerator hold (model, optimizer, scheduler; the DeepSpeed
    engine is destroyed): without it a DeepSpeed engine outlives its round and GPU memory grows round
    after round (transformers#28178)."""
    trainer.accelerator.free_memory()
    for name in ("model", "model_wrapped", "deepspeed", "optimizer", "lr_scheduler"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    _drop_deepspeed_module_references()


def _drop_deepspeed_module_references() -> None:
    """Two module-level references that DeepSpeed ZeRO-3 (0.19) keeps to the model it trained, which
    through its parameters keep the optimizer and its fp32 partitions alive after the engine is
    destroyed: the top module, pushed onto `parameter_offload.FWD_MODULE_STACK` when the hooks are set
    up and never popped, and the class-level `functools.lru_cache` of
    `PartitionedParameterCoordinator.__params_to_release`, keyed by the coordinator and submodules.
    No forward runs between stages, so both are empty by rights."""
    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    if offload is not None and isinstance(getattr(offload, "FWD_MODULE_STACK", None), list):
        offload.FWD_MODULE_STACK.clear()
    coordinator = sys.modules.get("deepspeed.runtime.zero.partitioned_param_coordinator")
    if coordinator is not None:
        cls = getattr(coordinator, "PartitionedParameterCoordinator", None)
        fn = getattr(cls, "_PartitionedParameterCoordinator__params_to_release", None)
        for cell in getattr(fn, "__closure__", None) or ():  # NVTX wrapper around the lru_cache
            with contextlib.suppress(ValueError):
                if hasattr(cell.cell_contents, "cache_clear"):
                    cell.cell_contents.cache_clear()


def build_trainer(
    rows: pd.DataFrame,
    base_model_dir: Path,
    opts: SFTOptions,
    seed: int,
    work_dir: Path,
    report_to: str = "none",
    callbacks: list | None = None,
):
    """The SFTTrainer that `distill` runs, ready to train (for `distill`, and for inspecting its batches).

    `work_dir` becomes the Trainer's output_dir; with saving off nothing is written there.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from trainer.sft_trainer import DistillTrainer

    missing = {"prompt", "completion"} - set(rows.columns)
    if missing:
        raise ValueError(f"distill: rows lack the column(s) {sorted(missing)}")
    base_model_dir = Path(base_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.eos_token is None:
        raise UserError(
            f"model: the tokenizer in {base_model_dir} has no EOS token, so a completion cannot mark "
            "its end; use a model whose tokenizer defines one"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = Dataset.from_dict(_prepare_rows(rows, tokenizer))
    if opts.packing and "length" in _finish_reasons(rows):
        raise UserError(
            "sft.packing: packed rows cannot keep truncated samples apart; turn off sft.packing or "
            "sft.train_on_truncated"
        )

    cuda = torch.cuda.is_available()
    bf16 = opts.use_bf16()
    lora = opts.method == "lora"
    with _environ(**_launch_env(opts)):
        deepspeed_on = _env_true("ACCELERATE_USE_DEEPSPEED")
        # On CPU, DDP needs use_cpu=True (a gloo process group). DeepSpeed needs use_cpu=False (with it
        # accelerate ignores DeepSpeed) plus ddp_backend="gloo": without a backend accelerate counts one
        # process while DeepSpeed counts them all, and DeepSpeed's batch-size check fails.
        use_cpu = not cuda and not deepspeed_on
        ddp_backend = "gloo" if (deepspeed_on and not cuda) else None
        settings = dict(
            output_dir=str(work_dir),
            per_device_train_batch_size=opts.batch_size,
            gradient_accumulation_steps=opts.grad_accum,
            learning_rate=opts.learning_rate,
            num_train_epochs=opts.epochs,
            lr_scheduler_type="linear",
            warmup_steps=opts.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
            weight_decay=opts.weight_decay,
            max_length=opts.max_length,
            packing=opts.packing,
            completion_only_loss=True,  # the format implies it; explicit so it never silently changes
            gradient_checkpointing=opts.gradient_checkpointing,  # TRL defaults it on
            bf16=bf16,  # TRL defaults it on, which fails on CPU
            fp16=False,
            use_cpu=use_cpu,
            ddp_backend=ddp_backend,
            seed=seed,
            data_seed=seed,
            logging_strategy="steps",
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to=report_to,
            ddp_find_unused_parameters=False,
            dataloader_num_workers=0,
            dataloader_pin_memory=cuda,
            disable_tqdm=False,
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
            peft_config=_lora_config(opts) if lora else None,
            callbacks=callbacks,
        )
    unfinished = {i for i, reason in enumerate(_finish_reasons(rows)) if reason == "length"}
    if unfinished:
        trainer.train_dataset = _drop_final_eos(trainer.train_dataset, unfinished, tokenizer.eos_token_id)
    return trainer


def _finish_reasons(rows: pd.DataFrame) -> list[str]:
    return rows["finish_reason"].tolist() if "finish_reason" in rows else ["stop"] * len(rows)


def _drop_final_eos(dataset, rows: set[int], eos_id: int):
    """The tokenized dataset without the EOS that TRL appends to every completion, on `rows` (samples
    cut off at the token budget: they did not end there)."""

    def strip(example: dict, idx: int) -> dict:
        if idx in rows and example["input_ids"] and example["input_ids"][-1] == eos_id:
            n = len(example["input_ids"])
            for key, value in example.items():
                if isinstance(value, list) and len(value) == n:
                    example[key] = value[:-1]
        return example

    return dataset.map(strip, with_indices=True, desc="Dropping the EOS of truncated samples")


# ---------------------------------------------------------------- data


def _prepare_rows(rows: pd.DataFrame, tokenizer) -> dict[str, list[str]]:
    """Plain-string prompt/completion columns, each finished completion ending in exactly one EOS.

    A row whose `finish_reason` (where the column is given) is "length" was cut off, not finished: it
    gets no EOS (nor does TRL's appended one survive: `_drop_final_eos`), so the model does not learn
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
    bos = tokenizer.bos_token
    if bos and prompts[0].startswith(bos):
        ids = tokenizer(prompts[0])["input_ids"]
        if len(ids) >= 2 and ids[0] == ids[1] == tokenizer.bos_token_id:
            prompts = [p[len(bos) :] if p.startswith(bos) else p for p in prompts]
    return {"prompt": prompts, "completion": completions}


# ---------------------------------------------------------------- model


def _lora_config(opts: SFTOptions):
    from peft import LoraConfig

    target = opts.lora_target.strip()
    targets: str | list[str] = (
        target if target == "all-linear" else [t.strip() for t in target.split(",") if t.strip()]
    )
    return LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _numel(p) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions leave p.numel() == 0


def _checksum(trainer) -> float | None:
    """A cheap fingerprint of this rank's trained weights (equal on every rank when DDP kept them in sync).

    None under ZeRO-3, where each rank holds only its shard.
    """
    import torch

    if _zero_stage(trainer) == 3:
        return None
    with torch.no_grad():  # summed in float64 inside the reduction: no copy of the weights
        sums = [p.detach().sum(dtype=torch.float64) for p in trainer.model.parameters() if p.requires_grad]
    return float(torch.stack(sums).sum()) if sums else 0.0


def _zero_stage(trainer) -> int:
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return 0
    plugin = trainer.accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


def _save(trainer, output_dir: Path, tokenizer, lora: bool) -> None:
    """Write the trained model as a bf16 HF checkpoint: main process only, atomically; all ranks wait."""
    import torch

    from core.io import atomic_dir

    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    state = None
    if _zero_stage(trainer) == 3:
        # The weights are partitioned across ranks; every rank takes part in gathering them.
        state = accelerator.get_state_dict(trainer.model_wrapped)
    if accelerator.is_main_process:
        base = model.get_base_model() if lora else model

        def build(tmp: Path) -> None:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a checkpoint is shared like any dir
            if state is None:
                final = model.merge_and_unload() if lora else model
                final = final.to(torch.bfloat16)
                final.config.use_cache = True
                final.save_pretrained(tmp)
            else:
                final = model_from_gathered_state(
                    base.config,
                    state,
                    model.peft_config["default"] if lora else None,
                    generation_config=base.generation_config,
                )
                final.config.use_cache = True
                final.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            for f in tmp.iterdir():  # some writers create files private too
                os.chmod(f, 0o666 & ~_umask())

        atomic_dir(output_dir, build)
    accelerator.wait_for_everyone()


def model_from_gathered_state(config, state: dict, lora_config=None, generation_config=None):
    """A bf16 model on CPU holding `state`, a full state dict gathered from ZeRO-3 shards; with
    `lora_config`, the state is a PeftModel's and its adapters are merged into the weights by PEFT
    itself (`merge_and_unload`, right for every PEFT variant). `generation_config` (the trained model's,
    as loaded from its checkpoint) replaces the one `from_config` derives, which would lose what only
    generation_config.json holds, such as a list of EOS ids that vLLM stops on."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import deepspeed as hf_deepspeed

    # The trainer's DeepSpeed config is still registered, and would make from_config partition this
    # model across ranks (zero.Init) while only the main process is here: hide it meanwhile.
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            if lora_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, lora_config)
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    # assign=True gives tied weights (embeddings and LM head) a tensor each: tie them again first
    (model.get_base_model() if lora_config is not None else model).tie_weights()
    if lora_config is not None:
        model = model.merge_and_unload()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"distill: the gathered ZeRO-3 state dict lacks {missing[:5]}")
    if generation_config is not None:
        import copy

        model.generation_config = copy.deepcopy(generation_config)
    return model.to(torch.bfloat16)


def _launch_env(opts: SFTOptions) -> dict[str, str]:
    """Environment that accelerate and transformers read while the trainer is built and runs.

    `opts.bf16` decides the precision: accelerate's config exports its mixed_precision as
    ACCELERATE_MIXED_PRECISION, which transformers would follow even with bf16=False. `opts.deepspeed`
    is handed over the way `accelerate launch` hands over a DeepSpeed config (passing it as
    TrainingArguments.deepspeed instead sets up no CPU process group, so ZeRO on CPU fails).
    """
    import json

    env = {"ACCELERATE_MIXED_PRECISION": "bf16" if opts.use_bf16() else "no"}
    if opts.deepspeed is not None:
        if "LOCAL_RANK" not in os.environ:
            raise UserError(
                "sft.deepspeed: DeepSpeed needs a distributed launcher; run the recipe with "
                "`accelerate launch --config_file launch/multi_gpu.yaml ...` (or launch/zero2.yaml "
                "and leave sft.deepspeed unset)"
            )
        path = Path(opts.deepspeed).resolve()
        try:
            stage = json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0)
        except (OSError, ValueError) as e:
            raise UserError(f"sft.deepspeed: cannot read {path} as JSON: {e}") from None
        env.update(
            {
                "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(path),
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true" if stage == 3 else "false",
                "ACCELERATE_CONFIG_DS_FIELDS": "",  # settings come from the JSON alone
            }
        )
    return env


@contextlib.contextmanager
def _environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")
