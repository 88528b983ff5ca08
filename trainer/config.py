"""Configuration: dataclasses loaded from YAML, overridable from the command line, validated on load.

    python recipes/measure_gap.py --config recipes/configs/gap_quickstart.yaml \
        --sampling.n 8 --task countdown --output_dir runs/x

An override is `--key value` or `--key=value` with a dotted key; values are parsed as YAML scalars
(`--verifiers [mc,oracle]` works too). Unknown keys and values of the wrong type are UserErrors that
name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from eval.saturation import SaturationConfig
from trainer.distill import SFTOptions
from trainer.errors import UserError
from trainer.models import DEFAULT_MODEL

C = TypeVar("C")


# ---------------------------------------------------------------- sections shared by recipes


@dataclass
class TaskConfig:
    """Which problems, how many, and how they are prompted."""

    name: str = "basic_arithmetic"  # a registered task (eval/tasks.py) or `file`
    train_size: int = 64  # problems in the train split (the loop samples these)
    test_size: int = 32  # problems in the held-out test split (gap and evaluation)
    shots_size: int = 8  # problems set aside as worked examples (few-shot and verifier prompts)
    seed: int | None = None  # data seed; defaults to the study seed
    prompt_style: str = "auto"  # chat | fewshot | auto (chat when the tokenizer has a template)
    n_shots: int = 4  # few-shot examples for base models
    options: dict = field(default_factory=dict)  # passed to the task's generator (reasoning-gym config)
    path: str | None = None  # for `file`: a .jsonl or .parquet file
    fields: dict = field(default_factory=dict)  # for `file`: {"question": col, "answer": col}
    checker: str = "auto"  # auto | exact | math (math-verify) | task (the task's own scorer)

    def validate(self, key: str) -> None:
        _one_of(f"{key}.prompt_style", self.prompt_style, ("chat", "fewshot", "auto"))
        _one_of(f"{key}.checker", self.checker, ("auto", "exact", "math", "task"))
        _positive(f"{key}.test_size", self.test_size)
        if self.train_size < 0:
            raise UserError(f"{key}.train_size: must be >= 0, got {self.train_size}")
        if self.shots_size < 0:
            raise UserError(f"{key}.shots_size: must be >= 0, got {self.shots_size}")


@dataclass
class SamplingConfig:
    """How generations are sampled."""

    n: int = 4  # samples per prompt
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 128

    def validate(self, key: str) -> None:
        _positive(f"{key}.n", self.n)
        _positive(f"{key}.max_tokens", self.max_tokens)
        if self.temperature < 0:
            raise UserError(f"{key}.temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"{key}.top_p: must be in (0, 1], got {self.top_p}")


@dataclass
class EngineConfig:
    """The inference backend that samples and scores."""

    backend: str = "auto"  # vllm | hf | auto (vllm where installed)
    dtype: str = "auto"  # auto (bf16; fp32 on CPUs without native bf16, where it is 4-6x faster) | bfloat16 | float16 | float32
    max_model_len: int = 1024
    batch_size: int = 32  # hf: prompts per generate() call
    gpu_memory_utilization: float = 0.35  # vllm on GPU: leaves room for SFT beside the engine
    enforce_eager: bool = True  # vllm: skip graph capture/compile (start-up dominates small studies)
    kv_cache_gb: float = 2.0  # vllm on CPU: VLLM_CPU_KVCACHE_SPACE
    sleep_during_training: bool = True  # vllm on GPU: free KV cache and weights while SFT runs

    def validate(self, key: str) -> None:
        _one_of(f"{key}.backend", self.backend, ("auto", "vllm", "hf"))
        _one_of(f"{key}.dtype", self.dtype, ("auto", "bfloat16", "float16", "float32"))
        _positive(f"{key}.max_model_len", self.max_model_len)
        _positive(f"{key}.batch_size", self.batch_size)


@dataclass
class VerifierConfig:
    """One verification strategy. `name` picks it; the other keys are its options."""

    name: str = "mc"  # mc | oracle (more in trainer/verifiers)
    id: str | None = None  # column suffix; defaults to name (set it to use one strategy twice)
    model: str | None = None  # cross-verification: a different model verifies (own engine)
    template: str | None = None  # prompt template file; defaults to the strategy's own
    n_shots: int = 0  # worked verification examples, from the task's shots split (or options.examples)
    options: dict = field(default_factory=dict)  # strategy-specific knobs

    @property
    def column(self) -> str:
        return f"score_{self.id or self.name}"

    def validate(self, key: str) -> None:
        from trainer.verifiers import VERIFIERS

        _one_of(f"{key}.name", self.name, tuple(VERIFIERS))


@dataclass
class FilterConfig:
    """Which generations a verifier's scores keep."""

    name: str = "quantile"  # quantile (per prompt) | threshold (global) | tournament | random (the control)
    q: float = 0.5  # quantile: keep the top max(1, floor((1 - q) * n)) of each prompt's n samples
    tau: float = 0.5  # threshold: keep scores >= tau
    reference: str = "quantile"  # random: keep as many per prompt as this filter would (same q / tau)

    def validate(self, key: str) -> None:
        from trainer.filters import FILTERS, REFERENCES

        _one_of(f"{key}.name", self.name, tuple(FILTERS))
        _one_of(f"{key}.reference", self.reference, tuple(REFERENCES))
        if not 0 <= self.q <= 1:
            raise UserError(f"{key}.q: must be in [0, 1], got {self.q}")


# ---------------------------------------------------------------- recipe configs


@dataclass
class GapConfig:
    """recipes/measure_gap.py: the generation-verification gap of one model on one task."""

    model: str = DEFAULT_MODEL
    task: TaskConfig = field(default_factory=TaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    verifiers: list[VerifierConfig] = field(
        default_factory=lambda: [VerifierConfig("mc"), VerifierConfig("oracle")]
    )
    filter: FilterConfig = field(default_factory=FilterConfig)
    seed: int = 0
    output_dir: str = "runs/gap"
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals (over prompts)
    confidence: float = 0.95
    ci_method: str = "percentile"  # percentile | bca (bias-corrected and accelerated)

    def validate(self, key: str = "") -> None:
        from trainer.verifiers import validate_verifiers

        if not self.verifiers:
            raise UserError("verifiers: list at least one verifier, e.g. [mc, oracle]")
        ids = [v.id or v.name for v in self.verifiers]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise UserError(f"verifiers: {sorted(dup)} appear twice; give each an `id`")
        validate_verifiers(self.verifiers)
        check_token_budget(self)
        for i, v in enumerate(self.verifiers):
            if v.n_shots > self.task.shots_size and not v.options.get("examples"):
                raise UserError(
                    f"verifiers.{i}.n_shots: {v.n_shots} worked examples need as many problems set "
                    f"aside, but task.shots_size is {self.task.shots_size}; raise task.shots_size"
                )
        if not 0 < self.confidence < 1:
            raise UserError(f"confidence: must be in (0, 1), got {self.confidence}")
        _one_of("ci_method", self.ci_method, ("percentile", "bca"))
        if self.bootstrap < 0:
            raise UserError(f"bootstrap: must be >= 0 (0: no intervals), got {self.bootstrap}")


@dataclass
class IterateConfig:
    """recipes/iterate.py: rounds of sample -> self-verify -> filter -> distill -> evaluate."""

    model: str = DEFAULT_MODEL
    task: TaskConfig = field(default_factory=TaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # on train prompts, for distillation
    eval_sampling: SamplingConfig = field(default_factory=SamplingConfig)  # on held-out test prompts
    engine: EngineConfig = field(default_factory=EngineConfig)
    verifiers: list[VerifierConfig] = field(
        default_factory=lambda: [VerifierConfig("mc")]
    )  # first one filters
    filter: FilterConfig = field(default_factory=FilterConfig)
    sft: SFTOptions = field(default_factory=SFTOptions)
    saturation: SaturationConfig = field(default_factory=SaturationConfig)
    rounds: int = 3  # training rounds after round 0 (which evaluates the starting model)
    seed: int = 0
    output_dir: str = "runs/quickstart"
    report_to: str = "wandb"  # wandb (offline unless logged in) | none
    wandb_project: str = "mindgap"
    wandb_group: str | None = None  # W&B group of the run (recipes/compare.py: one per comparison)
    run_name: str | None = None
    bootstrap: int = 1000  # bootstrap resamples for confidence intervals (over prompts)
    confidence: float = 0.95
    ci_method: str = "percentile"  # percentile | bca (bias-corrected and accelerated)
    log_samples: int = 16  # rows of the W&B table of sample generations per round

    def validate(self, key: str = "") -> None:
        GapConfig.validate(self)  # type: ignore[arg-type]
        _one_of("report_to", self.report_to, ("wandb", "none"))
        if self.rounds < 0:
            raise UserError(f"rounds: must be >= 0, got {self.rounds}")


def check_token_budget(cfg) -> None:
    """Every generation budget fits the engine's context: engine.max_model_len holds the prompt and
    the generated tokens, so a budget at or above it could never be spent (and would be cut short)."""
    limit = cfg.engine.max_model_len
    budgets = [
        (f"{name}.max_tokens", getattr(cfg, name).max_tokens)
        for name in ("sampling", "eval_sampling")
        if hasattr(cfg, name)
    ]
    verifiers = list(getattr(cfg, "verifiers", []) or [])
    if getattr(cfg, "verifier", None) is not None:
        verifiers.append(cfg.verifier)
    for i, v in enumerate(verifiers):
        if isinstance(v.options.get("max_tokens"), int):
            key = f"verifiers.{i}" if hasattr(cfg, "verifiers") and i < len(cfg.verifiers) else "verifier"
            budgets.append((f"{key}.options.max_tokens", v.options["max_tokens"]))
    for key, budget in budgets:
        if budget >= limit:
            raise UserError(
                f"{key}: {budget} tokens do not fit engine.max_model_len ({limit}), which also holds the "
                f"prompt; lower {key} or raise engine.max_model_len"
            )


# ---------------------------------------------------------------- loading


def load_config(cls: type[C], argv: list[str] | None = None, default_config: str | None = None) -> C:
    """Build `cls` from `--config FILE` (or `default_config`) and `--key value` overrides in `argv`."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, overrides = _split_argv(argv)
    config_path = config_path or default_config
    data: dict = to_dict(cls())  # defaults first, so list entries can be overridden by index
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise UserError(f"--config: file {config_path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"--config: {config_path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(
                f"--config: {config_path} must hold a mapping of keys, not {type(loaded).__name__}"
            )
        merge(data, loaded)
    for key, value in overrides:
        _set_dotted(data, key, value)
    return from_dict(cls, data, source=config_path)


def from_dict(cls: type[C], data: dict, key: str = "", source: str | None = None) -> C:
    """Build dataclass `cls` from a nested dict, checking keys and types, then call validate()."""
    obj = _build(cls, data, key, source)
    _validate_tree(obj, key)
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (for study.json and W&B)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def merge(base: dict, update: dict) -> None:
    """Merge `update` into `base`: mappings recursively, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def _split_argv(argv: list[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    config_path, overrides, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}; overrides look like --key value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UserError(f"--{name}: missing value")
            value = argv[i + 1]
            i += 1
        i += 1
        if name == "config":
            config_path = value
        else:
            try:
                parsed = yaml.safe_load(value) if value != "" else ""
            except yaml.YAMLError:
                parsed = value
            overrides.append((name.replace("-", "_"), parsed))
    return config_path, overrides


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str):  # `task: countdown` then `--task.train_size 8`
            child = {"name": child}
        elif isinstance(child, list) and parts[i + 1].isdigit():  # --verifiers.0.name
            idx = int(parts[i + 1])
            if idx >= len(child):
                raise UserError(f"--{key}: index {idx} is past the {len(child)} entries of {part}")
            item = child[idx]
            child[idx] = item = {"name": item} if isinstance(item, str) else item
            if len(parts) == i + 3:
                item[parts[-1]] = value
                return
            raise UserError(f"--{key}: nesting this deep inside a list is not supported")
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[C], data: Any, key: str, source: str | None) -> C:
    where = f" (in {source})" if source else ""
    if isinstance(data, str) and "name" in {f.name for f in dataclasses.fields(cls)}:
        data = {"name": data}  # shorthand: `task: countdown`, `verifiers: [mc, oracle]`
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{key or 'config'}: expected a mapping{where}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{key}.{unknown[0]}" if key else unknown[0]
        raise UserError(
            f"unknown config key '{name}'{where}; valid keys{' under ' + key if key else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        kwargs[name] = _coerce(hints[name], value, sub, source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, source: str | None) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key, source)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(item_tp, v, f"{key}.{i}", source) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key}: expected a string, got {value!r}")
    return value


def _validate_tree(obj: Any, key: str) -> None:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            sub = f"{key}.{f.name}" if key else f.name
            _validate_tree(getattr(obj, f.name), sub)
        if hasattr(obj, "validate"):
            obj.validate(key)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _validate_tree(v, f"{key}.{i}")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{key}: unknown value '{value}'; choose one of {', '.join(allowed)}")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"{key}: must be > 0, got {value}")
