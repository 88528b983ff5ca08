"""What every update rule's training shares: precision, the launch environment, LoRA, the trained
weights' fingerprint, saving a plain checkpoint, and letting go of the trainer.

An update rule (trainer/update/) runs a TRL trainer on every rank under `accelerate launch` (DDP, or
DeepSpeed ZeRO-2/3 from the accelerate config or the rule's `deepspeed` option) and leaves one plain
Hugging Face checkpoint (bf16 safetensors, config, generation config, tokenizer; LoRA merged into the
weights) that the next round's sampler loads: `save_checkpoint` writes it on the main process,
atomically, and `release` drops what the trainer held. The options these read (`method`, `bf16`,
`deepspeed`, the `lora_*` keys) are named the same in every rule.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Problems, knob
from core.errors import UserError
from trainer.samplers.base import cpu_auto_dtype, cuda_bf16

METHODS = ("full", "lora")
_TRUE = ("true", "yes", "on", "1", "bf16")
_FALSE = ("false", "no", "off", "0", "fp32")

# TrainingArguments fields mindgap sets itself in every rule (from the rule's keys, or because the
# loop needs them so); a rule's `trl` option may pass any other field of its TRL config through.
SET_BY_MINDGAP = {
    "output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "num_train_epochs", "warmup_steps", "weight_decay", "max_length", "gradient_checkpointing", "bf16",
    "fp16", "use_cpu", "ddp_backend", "seed", "data_seed", "logging_strategy", "logging_steps",
    "save_strategy", "eval_strategy", "report_to", "dataloader_num_workers", "dataloader_pin_memory",
    "deepspeed",
}  # fmt: skip


# ---------------------------------------------------------------- options


@dataclass
class TrainingOptions:
    """The keys every update rule's options share (SFTOptions, DPOOptions, GRPOOptions add their own)."""

    method: str = knob("lora", "full | lora (LoRA is merged into the weights before saving)")
    lora_r: int = knob(16, "LoRA rank")
    lora_alpha: int = knob(32, "LoRA alpha (the update is scaled by alpha / r)")
    lora_dropout: float = knob(0.0, "LoRA dropout")
    lora_target: str = knob(
        "all-linear", "PEFT target_modules: all-linear, or a comma-separated list of names"
    )
    gradient_checkpointing: bool = knob(False, "recompute activations in backward (less memory, more time)")
    warmup_ratio: float = knob(0.0, "fraction of the steps with a linear warm-up")
    weight_decay: float = knob(0.0, "AdamW weight decay")
    bf16: Any = knob(
        "auto",
        "auto | true | false; auto: bf16 on GPUs that support it and on CPUs where engine.dtype auto is "
        "bf16 (native bf16: AVX512-BF16 or AMX; MINDGAP_CPU_DTYPE forces it), else fp32",
    )
    deepspeed: str | None = knob(
        None, "a DeepSpeed JSON (launch/ds_zero*.json); else accelerate's config decides"
    )

    def use_bf16(self) -> bool:
        """Whether the rule trains in bf16 (`use_bf16`: auto follows the GPU, or on a CPU
        `engine.dtype: auto`)."""
        return use_bf16(self.bf16)


def check_options(opts, key: str, problems: Problems) -> None:
    """The checks of the keys every rule's options share (method, learning rate, epochs, batch size,
    LoRA, warm-up, weight decay, bf16, deepspeed), each mistake added to `problems`."""
    if opts.method not in METHODS:
        problems.add(f"{key}.method: unknown value '{opts.method}'; choose one of {', '.join(METHODS)}")
    for name in ("learning_rate", "epochs", "batch_size", "grad_accum", "max_length"):
        if hasattr(opts, name) and getattr(opts, name) <= 0:  # a rule without epochs counts steps
            problems.add(f"{key}.{name}: must be > 0, got {getattr(opts, name)}")
    if opts.method == "lora":
        for name in ("lora_r", "lora_alpha"):
            if getattr(opts, name) <= 0:
                problems.add(f"{key}.{name}: must be > 0, got {getattr(opts, name)}")
        if not opts.lora_target.strip():
            problems.add(f"{key}.lora_target: empty; use all-linear or module names like q_proj,v_proj")
    if not 0 <= opts.lora_dropout < 1:
        problems.add(f"{key}.lora_dropout: must be in [0, 1), got {opts.lora_dropout}")
    if not 0 <= opts.warmup_ratio < 1:
        problems.add(f"{key}.warmup_ratio: must be in [0, 1), got {opts.warmup_ratio}")
    if opts.weight_decay < 0:
        problems.add(f"{key}.weight_decay: must be >= 0, got {opts.weight_decay}")
    if parse_bf16(opts.bf16) == "invalid":
        problems.add(f"{key}.bf16: unknown value {opts.bf16!r}; choose auto, true or false")
    if opts.deepspeed is not None and not Path(opts.deepspeed).is_file():
        problems.add(
            f"{key}.deepspeed: file {opts.deepspeed} does not exist; pass a DeepSpeed JSON such "
            f"as launch/ds_zero2.json, or leave it unset"
        )


def check_trl_fields(extra: dict, key: str, config_cls, set_by_mindgap: set[str], rule: str) -> None:
    """`extra` names only fields of TRL's `config_cls` that mindgap does not set itself."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config_cls)}
    for name in extra:
        if name in set_by_mindgap:
            raise UserError(f"{key}.{name}: set by mindgap (use the {rule} key of the same meaning instead)")
        if name not in fields:
            import difflib

            close = difflib.get_close_matches(name, sorted(fields - set_by_mindgap), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UserError(f"{key}.{name}: TRL's {config_cls.__name__} has no field '{name}'{hint}")


def parse_bf16(value: Any) -> bool | str:
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


def use_bf16(value: Any) -> bool:
    """Whether training runs in bf16 (autocast; the weights that train keep fp32 masters). `auto`: on
    a GPU where it computes bf16 (`cuda_bf16`, not merely a GPU); on a CPU where `engine.dtype: auto`
    resolves to bf16 (native bf16, or MINDGAP_CPU_DTYPE)."""
    value = parse_bf16(value)
    if value != "auto":
        return bool(value)
    import torch

    if torch.cuda.is_available():
        return cuda_bf16()
    # On a CPU with native bf16 the SFT stage ran 1.45x faster in bf16 and learned the same
    # (bench/README.md, sft_dtype); where bf16 is emulated it is several times slower.
    return cpu_auto_dtype() == "bfloat16"


def trainer_settings(opts, work_dir: Path, seed: int, report_to: str) -> dict:
    """The TrainingArguments every rule sets the same way (the rule adds its own), read under the
    rule's `launch_env`: the device, process group, precision, schedule, logging and no saving. A rule
    whose options have no `epochs` or `max_length` (GRPO counts steps) sets neither."""
    import torch

    cuda = torch.cuda.is_available()
    deepspeed_on = env_true("ACCELERATE_USE_DEEPSPEED")
    # On CPU, DDP needs use_cpu=True (a gloo process group). DeepSpeed needs use_cpu=False (with it
    # accelerate ignores DeepSpeed) plus ddp_backend="gloo": without a backend accelerate counts one
    # process while DeepSpeed counts them all, and DeepSpeed's batch-size check fails.
    settings = dict(
        output_dir=str(work_dir),
        per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        learning_rate=opts.learning_rate,
        num_train_epochs=getattr(opts, "epochs", 1.0),
        lr_scheduler_type="linear",
        warmup_steps=opts.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=opts.weight_decay,
        max_length=getattr(opts, "max_length", None),
        gradient_checkpointing=opts.gradient_checkpointing,  # TRL defaults it on
        bf16=use_bf16(opts.bf16),  # TRL defaults it on, which fails on CPU
        fp16=False,
        use_cpu=not cuda and not deepspeed_on,
        ddp_backend="gloo" if (deepspeed_on and not cuda) else None,
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
    if settings["max_length"] is None:
        del settings["max_length"]
    return settings


def lora_config(opts):
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


def drop_final_eos(dataset, rows: set[int], eos_id: int, columns: tuple[str, ...] | None = None):
    """The tokenized dataset without the EOS that TRL appends to every completion, on `rows` (samples
    cut off at the token budget: they did not end there). `columns`: the token-id lists to strip (each
    with the list-valued columns of its length); default `input_ids`."""

    def strip(example: dict, idx: int) -> dict:
        if idx not in rows:
            return example
        for ids_key in columns or ("input_ids",):
            ids = example[ids_key]
            if ids and ids[-1] == eos_id:
                n = len(ids)
                for key, value in example.items():
                    same = key == ids_key or (columns is None and isinstance(value, list) and len(value) == n)
                    if same:
                        example[key] = value[:-1]
        return example

    return dataset.map(strip, with_indices=True, desc="Dropping the EOS of truncated samples")


def single_bos(prompts: list[str], tokenizer) -> list[str]:
    """`prompts` (rendered, chat template included) without their BOS text where the tokenizer adds a
    BOS itself, so the model sees one (TRL tokenizes a string prompt with the special tokens)."""
    bos = tokenizer.bos_token
    if bos and prompts and prompts[0].startswith(bos):
        ids = tokenizer(prompts[0])["input_ids"]
        if len(ids) >= 2 and ids[0] == ids[1] == tokenizer.bos_token_id:
            return [p[len(bos) :] if p.startswith(bos) else p for p in prompts]
    return prompts


def load_tokenizer(model_dir: Path):
    """The model's tokenizer, with its EOS (which marks where a completion ends) as pad if it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.eos_token is None:
        raise UserError(
            f"model: the tokenizer in {model_dir} has no EOS token, so a completion cannot mark "
            "its end; use a model whose tokenizer defines one"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------- the trained model


def numel(p) -> int:
    return int(getattr(p, "ds_numel", 0) or p.numel())  # ZeRO-3 partitions leave p.numel() == 0


def weights_checksum(trainer) -> float | None:
    """A cheap fingerprint of this rank's trained weights (equal on every rank when DDP kept them in sync).

    None under ZeRO-3, where each rank holds only its shard.
    """
    import torch

    if zero_stage(trainer) == 3:
        return None
    with torch.no_grad():  # summed in float64 inside the reduction: no copy of the weights
        sums = [p.detach().sum(dtype=torch.float64) for p in trainer.model.parameters() if p.requires_grad]
    return float(torch.stack(sums).sum()) if sums else 0.0


def zero_stage(trainer) -> int:
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return 0
    plugin = trainer.accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage) if plugin is not None else 0


def save_checkpoint(trainer, output_dir: Path, tokenizer, lora: bool) -> None:
    """Write the trained model as a bf16 HF checkpoint: main process only, atomically; all ranks wait."""
    import torch

    from core.io import atomic_dir

    accelerator = trainer.accelerator
    model = accelerator.unwrap_model(trainer.model)
    state = None
    if zero_stage(trainer) == 3:
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


def release(trainer) -> None:
    """Drop what the trainer and its accelerator hold (model, optimizer, scheduler; the DeepSpeed
    engine is destroyed): without it a DeepSpeed engine outlives its round and GPU memory grows round
    after round (transformers#28178)."""
    trainer.accelerator.free_memory()
    for name in ("model", "model_wrapped", "deepspeed", "optimizer", "lr_scheduler", "ref_model"):
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


# ---------------------------------------------------------------- the launch


def launch_env(opts, key: str) -> dict[str, str]:
    """Environment that accelerate and transformers read while the trainer is built and runs (`key`:
    the rule's options, as errors name them, e.g. `update.sft`).

    `opts.bf16` decides the precision: accelerate's config exports its mixed_precision as
    ACCELERATE_MIXED_PRECISION, which transformers would follow even with bf16=False. `opts.deepspeed`
    is handed over the way `accelerate launch` hands over a DeepSpeed config (passing it as
    TrainingArguments.deepspeed instead sets up no CPU process group, so ZeRO on CPU fails).
    """
    env = {"ACCELERATE_MIXED_PRECISION": "bf16" if use_bf16(opts.bf16) else "no"}
    if opts.deepspeed is not None:
        if "LOCAL_RANK" not in os.environ:
            raise UserError(
                f"{key}.deepspeed: DeepSpeed needs a distributed launcher; run the recipe with "
                "`accelerate launch --config_file launch/multi_gpu.yaml ...` (or launch/zero2.yaml "
                f"and leave {key}.deepspeed unset)"
            )
        path = Path(opts.deepspeed).resolve()
        try:
            stage = json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0)
        except (OSError, ValueError) as e:
            raise UserError(f"{key}.deepspeed: cannot read {path} as JSON: {e}") from None
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
def environ(**values: str):
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


def env_true(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
