"""Every recipe's configuration, in one place: the recipe configs below, built from sections that live
beside the code they configure (imported here so one module names every key):

    TaskConfig        eval/tasks.py              which problems, how many, how prompted
    SamplingConfig    trainer/samplers/base.py   how generations are sampled
    EngineConfig      trainer/samplers/base.py   the inference backend
    VerifierConfig    trainer/verifiers/base.py  one verification strategy (its `options`: the strategy)
    FilterConfig      trainer/filters.py         which samples a verifier's scores keep
    UpdateConfig      trainer/update/__init__.py the update rule and each rule's options:
      SFTOptions      trainer/distill.py           sft: distillation with TRL SFT
      DPOOptions      trainer/update/dpo.py        dpo: preference pairs with TRL DPO
      GRPOOptions     trainer/update/grpo.py       grpo: online RL from the model's own reward (TRL GRPO)
    SaturationConfig  eval/saturation.py         the stopping rules

Every recipe that measures starts from `RecipeConfig`: its seed and its bootstrap settings (`boot`).

`python recipes/<recipe>.py --help` prints every key of a recipe with its type, default and help;
loading, overrides and validation are `core.config`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from core.config import (
    Problems,
    from_dict,
    knob,
    load_config,
    merge,
    one_of,
    read_config,
    rename_old_keys,
    to_dict,
)
from core.errors import UserError
from eval.metrics import CI_METHODS, Bootstrap
from eval.saturation import SaturationConfig
from eval.tasks import TaskConfig
from trainer.distill import SFTOptions
from trainer.filters import FilterConfig
from trainer.models import DEFAULT_MODEL
from trainer.samplers.base import EngineConfig, SamplingConfig
from trainer.update import DPOOptions, UpdateConfig, check_update
from trainer.verifiers.base import VerifierConfig

__all__ = [
    "CompareConfig",
    "ConditionConfig",
    "CrossVerifyConfig",
    "DPOOptions",
    "EngineConfig",
    "FilterConfig",
    "GapConfig",
    "IterateConfig",
    "RecipeConfig",
    "SFTOptions",
    "SamplingConfig",
    "SaturationConfig",
    "ScalingConfig",
    "ScalingModel",
    "TaskConfig",
    "UpdateConfig",
    "VerifierConfig",
    "VerifyComputeConfig",
    "from_dict",
    "load_config",
    "merge",
    "to_dict",
]


@dataclass
class RecipeConfig:
    """The keys every recipe that measures shares: its seed, and how every interval is made."""

    seed: int = knob(0, "seeds the data, the sampling (a study's training too) and every bootstrap")
    bootstrap: int = knob(1000, "bootstrap resamples (over prompts) for every interval; 0: none")
    confidence: float = knob(0.95, "the confidence level of every interval (and of a study's stopping rules)")
    ci_method: str = knob(
        "percentile", "percentile | bca (bias-corrected and accelerated); a scaling fit's slope: percentile"
    )

    @property
    def boot(self) -> Bootstrap:
        """The bootstrap settings, as the interval functions take them (eval/metrics.py)."""
        return Bootstrap(
            n_boot=self.bootstrap, confidence=self.confidence, seed=self.seed, method=self.ci_method
        )

    def validate(self, key: str = "") -> None:
        if not 0 < self.confidence < 1:
            raise UserError(f"confidence: must be in (0, 1), got {self.confidence}")
        one_of("ci_method", self.ci_method, CI_METHODS)
        if self.bootstrap < 0:
            raise UserError(f"bootstrap: must be >= 0 (0: no intervals), got {self.bootstrap}")


@dataclass
class GapConfig(RecipeConfig):
    """recipes/measure_gap.py: the generation-verification gap of one model on one task."""

    model: str = knob(
        DEFAULT_MODEL, "the model: an embedded alias, a local HF model dir, a .gguf file or a hub id"
    )
    task: TaskConfig = knob(factory=TaskConfig, help="")
    sampling: SamplingConfig = knob(factory=SamplingConfig, help="")
    engine: EngineConfig = knob(factory=EngineConfig, help="")
    verifiers: list[VerifierConfig] = knob(
        factory=lambda: [VerifierConfig("mc"), VerifierConfig("oracle")],
        help="the verification strategies, each scored on every sample; the first is the headline",
    )
    filter: FilterConfig = knob(factory=FilterConfig, help="")
    output_dir: str = knob("runs/gap", "where the run's files go; the same command resumes from them")

    def validate(self, key: str = "") -> None:
        problems = Problems()
        with problems.check():
            check_verifiers(self.verifiers, self.task)
        with problems.check():
            check_token_budget(self.engine, {"sampling": self.sampling}, listed(self.verifiers))
        with problems.check():
            super().validate(key)
        problems.raise_any()


@dataclass
class IterateConfig(RecipeConfig):
    """recipes/iterate.py: rounds of sample -> self-verify -> filter -> update (SFT, DPO, GRPO) -> evaluate."""

    model: str = knob(
        DEFAULT_MODEL, "the starting model: an embedded alias, a local HF model dir, a .gguf file or a hub id"
    )
    task: TaskConfig = knob(factory=TaskConfig, help="")
    sampling: SamplingConfig = knob(factory=SamplingConfig, help="")  # train prompts: what is distilled
    eval_sampling: SamplingConfig = knob(factory=SamplingConfig, help="")  # held-out prompts: evaluation
    engine: EngineConfig = knob(factory=EngineConfig, help="")
    verifiers: list[VerifierConfig] = knob(
        factory=lambda: [VerifierConfig("mc")],
        help="the model's self-verification; the first one filters, the others are scored beside it",
    )
    filter: FilterConfig = knob(factory=FilterConfig, help="")
    update: UpdateConfig = knob(factory=UpdateConfig, help="")
    saturation: SaturationConfig = knob(factory=SaturationConfig, help="")
    rounds: int = knob(3, "training rounds after round 0 (which evaluates the starting model)")
    train_seed: int | None = knob(
        None,
        "seeds every round's sampling, the random control's draws and training (and DPO's pairs) in place "
        "of `seed`, which still seeds the data and the intervals (training-seed replicates of a "
        "comparison differ in it)",
    )
    output_dir: str = knob("runs/quickstart", "the study folder; the same command resumes from it")
    report_to: str = knob("wandb", "wandb (offline unless logged in) | none")
    wandb_project: str = knob("mindgap", "the W&B project")
    wandb_group: str | None = knob(None, "the W&B group of the run (recipes/compare.py: one per comparison)")
    run_name: str | None = knob(None, "the W&B run name; defaults to the study folder's name")
    log_samples: int = knob(16, "rows of the W&B table of sample generations per round")

    # Keys renamed since: a config (or a study folder's study.json) written before still loads.
    renamed: ClassVar[dict[str, str]] = {"sft": "update.sft"}

    @property
    def run_seed(self) -> int:
        """The seed of sampling, filtering and training: `train_seed`, else `seed`."""
        return self.seed if self.train_seed is None else self.train_seed

    def validate(self, key: str = "") -> None:
        problems = Problems()
        with problems.check():
            check_verifiers(self.verifiers, self.task)
        with problems.check():
            sampling = {"sampling": self.sampling, "eval_sampling": self.eval_sampling}
            check_token_budget(self.engine, sampling, listed(self.verifiers))
        with problems.check():
            super().validate(key)
        if self.verifiers:
            first = self.verifiers[0]
            with problems.check():
                check_update(self.update, first, first.filter or self.filter, study=self)
        with problems.check():
            one_of("report_to", self.report_to, ("wandb", "none"))
        if self.rounds < 0:
            problems.add(f"rounds: must be >= 0, got {self.rounds}")
        problems.raise_any()


@dataclass
class CrossVerifyConfig(RecipeConfig):
    """recipes/cross_verify.py: a generator × verifier matrix of generation-verification gaps."""

    generators: list[str] = knob(factory=lambda: [DEFAULT_MODEL], help="the models that sample")
    verifier_models: list[str] = knob(factory=lambda: [DEFAULT_MODEL], help="the models that verify")
    verifier: VerifierConfig = knob(factory=lambda: VerifierConfig("mc"), help="")
    task: TaskConfig = knob(factory=TaskConfig, help="")
    sampling: SamplingConfig = knob(factory=SamplingConfig, help="")
    engine: EngineConfig = knob(factory=EngineConfig, help="")
    filter: FilterConfig = knob(factory=FilterConfig, help="")
    output_dir: str = knob("runs/cross_verify", "where the matrix's files go; the same command resumes")

    def validate(self, key: str = "") -> None:
        problems = Problems()
        for name in ("generators", "verifier_models"):
            models = getattr(self, name)
            if not models:
                problems.add(f"{name}: list at least one model, e.g. [{DEFAULT_MODEL}]")
            dup = sorted({m for m in models if models.count(m) > 1})
            if dup:
                problems.add(f"{name}: {dup[0]} appears twice")
        if self.verifier.model is not None:
            problems.add("verifier.model: the verifier models come from `verifier_models`; leave it unset")
        from trainer.verifiers import check_verifier

        with problems.check():
            check_verifier(self.verifier, "verifier")
        with problems.check():
            check_token_budget(self.engine, {"sampling": self.sampling}, {"verifier": self.verifier})
        with problems.check():
            super().validate(key)
        problems.raise_any()


# The strategies that sample several verifications per generation and average them.
SAMPLED_VERDICTS = ("cot_binary", "cot_score")


@dataclass
class VerifyComputeConfig(RecipeConfig):
    """recipes/verify_compute.py: the gap against the number of verifications averaged per generation."""

    model: str = knob(
        DEFAULT_MODEL, "the model: an embedded alias, a local HF model dir, a .gguf file or a hub id"
    )
    task: TaskConfig = knob(factory=TaskConfig, help="")
    sampling: SamplingConfig = knob(factory=SamplingConfig, help="")
    engine: EngineConfig = knob(factory=EngineConfig, help="")
    verifier: VerifierConfig = knob(
        factory=lambda: VerifierConfig("cot_binary", n_shots=2, options={"temperature": 0.7}),
        help="the strategy whose sampled verifications are averaged: cot_binary | cot_score",
    )
    verdicts: int = knob(8, "verifications sampled per generation, once (the verifier's options.samples)")
    ks: list[int] = knob(
        factory=lambda: [1, 2, 4, 8],
        help="verifications averaged per generation: the first k of the sampled ones, for each k",
    )
    filters: list[FilterConfig] = knob(
        factory=lambda: [FilterConfig("threshold", tau=0.5), FilterConfig("quantile", q=0.5)],
        help="each k is filtered by each of these (the scores are the same; only the kept sets differ)",
    )
    output_dir: str = knob("runs/verify_compute", "where the run's files go; the same command resumes")

    @property
    def sampled_verifier(self) -> VerifierConfig:
        """The verifier as it runs: `verdicts` samples per generation."""
        import dataclasses

        return dataclasses.replace(self.verifier, options={**self.verifier.options, "samples": self.verdicts})

    def validate(self, key: str = "") -> None:
        problems = Problems()
        if self.verifier.name not in SAMPLED_VERDICTS:
            problems.add(
                f"verifier.name: '{self.verifier.name}' gives one score per generation; choose a strategy "
                f"that samples verdicts: {', '.join(SAMPLED_VERDICTS)}"
            )
        if "samples" in self.verifier.options:
            problems.add("verifier.options.samples: set by `verdicts` (how many are sampled); remove it")
        if self.verdicts < 1:
            problems.add(f"verdicts: must be >= 1, got {self.verdicts}")
        if not self.ks:
            problems.add("ks: list at least one number of verifications, e.g. [1, 2, 4, 8]")
        elif sorted(set(self.ks)) != list(self.ks) or not all(1 <= k <= self.verdicts for k in self.ks):
            problems.add(
                f"ks: must rise strictly, each between 1 and verdicts ({self.verdicts}), got {list(self.ks)}"
            )
        if not self.filters:
            problems.add("filters: list at least one filter, e.g. [{name: threshold, tau: 0.5}]")
        labels = [f.label for f in self.filters]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                problems.add(f"filters.{i}: the same filter as an earlier one ({label})")
            if self.filters[i].name == "random":
                problems.add(
                    f"filters.{i}.name: the random control draws no scores; use threshold or quantile"
                )
        if not problems.messages:
            from trainer.verifiers import check_verifier

            with problems.check():
                check_verifier(self.sampled_verifier, "verifier")
            if self.verifier.n_shots > self.task.shots_size and not self.verifier.options.get("examples"):
                problems.add(
                    f"verifier.n_shots: {self.verifier.n_shots} worked examples need as many problems set "
                    f"aside, but task.shots_size is {self.task.shots_size}; raise task.shots_size"
                )
        with problems.check():
            check_token_budget(self.engine, {"sampling": self.sampling}, {"verifier": self.sampled_verifier})
        with problems.check():
            super().validate(key)
        problems.raise_any()


@dataclass
class ScalingModel:
    """One model of a scaling study: what to load, what to call it, how many tokens it was trained on."""

    model: str = knob("", "an embedded alias, a local HF model dir, a .gguf file or a hub id")
    pretraining_tokens: float = knob(
        0.0, "tokens the model was pretrained on (from its model card), e.g. 2.0e+12"
    )
    name: str = knob("", "the model's name in the table, plot and folder; defaults to the model reference")
    n_params: float | None = knob(None, "parameters; null: counted from the checkpoint's safetensors")

    def validate(self, key: str) -> None:
        if not self.model:
            raise UserError(f"{key}.model: name the model (an alias, a model dir, a .gguf file or a hub id)")
        if not self.pretraining_tokens or self.pretraining_tokens <= 0:
            raise UserError(
                f"{key}.pretraining_tokens: give the tokens {self.model} was pretrained on (> 0; its model "
                "card says), e.g. 2.0e+12"
            )
        if self.n_params is not None and self.n_params <= 0:
            raise UserError(f"{key}.n_params: must be > 0, or null to count them, got {self.n_params}")
        if "/" in self.name or self.name.startswith("."):
            raise UserError(f"{key}.name: '{self.name}' is a folder name: no '/', no leading '.'")


@dataclass
class ScalingConfig(RecipeConfig):
    """recipes/scaling.py: the gap of several models on one task and verifier, against pretraining compute."""

    models: list[ScalingModel] = knob(
        factory=list, help="the models: {model, pretraining_tokens, name, n_params} each"
    )
    verifier: VerifierConfig = knob(factory=lambda: VerifierConfig("mc"), help="")
    task: TaskConfig = knob(factory=TaskConfig, help="")
    sampling: SamplingConfig = knob(factory=SamplingConfig, help="")
    engine: EngineConfig = knob(factory=EngineConfig, help="")
    filter: FilterConfig = knob(factory=FilterConfig, help="")
    count_embeddings: bool = knob(
        True, "N counts the embedding parameters too (false: non-embedding parameters, as Kaplan et al.)"
    )
    oracle: bool = knob(
        True, "score the oracle beside the verifier in each model's run: its ceiling, in its metrics.json"
    )
    output_dir: str = knob("runs/scaling", "a folder per model (a measure_gap run) and the fit; resumes")

    def labels(self) -> list[str]:
        """Each model's name (its reference where no name is given)."""
        return [m.name or m.model for m in self.models]

    def validate(self, key: str = "") -> None:
        problems = Problems()
        if not self.models:
            problems.add(
                "models: list at least one model, e.g. [{model: smollm2-135m-instruct, pretraining_tokens: 2.0e+12}]"
            )
        names = self.labels()
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.add(f"models: '{dup[0]}' appears twice; give each model its own `name`")
        if self.verifier.model is not None:
            problems.add("verifier.model: each model verifies its own samples; leave it unset")
        from trainer.verifiers import check_verifier

        with problems.check():
            check_verifier(self.verifier, "verifier")
        with problems.check():
            check_token_budget(self.engine, {"sampling": self.sampling}, {"verifier": self.verifier})
        with problems.check():
            super().validate(key)
        problems.raise_any()


@dataclass
class ConditionConfig:
    """One condition of a comparison: a name (its folder) and the study keys it changes."""

    name: str = knob("", "the condition's name, which is its folder under the comparison's output_dir")
    overrides: dict = knob(factory=dict, help="study keys, as in a study config, that this condition changes")
    control: str | None = knob(
        None, "the condition this one is compared with (null: the comparison's control), e.g. its own rule's"
    )

    def validate(self, key: str) -> None:
        import re

        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserError(f"{key}.name: give each condition a folder name (no '/'), got {self.name!r}")
        if re.search(r"_rep\d+$", self.name):
            raise UserError(f"{key}.name: '{self.name}' ends like a replicate's folder (_rep<r>); rename it")


@dataclass
class CompareConfig:
    """recipes/compare.py: the same study under several conditions, compared with a control."""

    base: str | None = knob(None, "the study config file the conditions start from (relative to this file)")
    study: dict = knob(factory=dict, help="study keys applied to every condition")
    conditions: list[ConditionConfig] = knob(factory=list, help="the conditions, each a study of its own")
    control: str = knob("random", "the condition every other one is compared with")
    replicates: int = knob(
        1,
        "training runs per condition, each with its own train_seed on the same held-out prompts (replicate "
        "r >= 1 in <condition>_rep<r>/); 1: the intervals leave out the variance between training runs",
    )
    output_dir: str = knob("runs/compare", "the comparison's folder: a study folder per condition")

    def validate(self, key: str = "") -> None:
        if self.replicates < 1:
            raise UserError(f"replicates: must be >= 1, got {self.replicates}")
        names = [c.name for c in self.conditions]
        if len(names) < 2:
            raise UserError("conditions: list at least two conditions (e.g. self-verification and random)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"conditions: '{dup[0]}' appears twice; give each condition its own name")
        if self.control not in names:
            raise UserError(f"control: '{self.control}' is not one of the conditions ({', '.join(names)})")
        if self.base is not None and not Path(self.base).is_file():
            raise UserError(f"base: file {self.base} does not exist; name a study config file")
        for i, c in enumerate(self.conditions):
            if c.control is not None and (c.control not in names or c.control == c.name):
                raise UserError(
                    f"conditions.{i}.control: '{c.control}' is not another condition ({', '.join(names)})"
                )

    def controls(self) -> dict[str, str]:
        """Each condition's control, where it is not the comparison's own."""
        return {c.name: c.control for c in self.conditions if c.control is not None}

    def studies(self) -> dict[str, list[IterateConfig]]:
        """Each condition's study configs, one per replicate, validated (a mistake names the
        condition's key). Replicate r runs with train_seed = seed + r (replicate 0 with the study's own
        seeds), so replicate r of every condition starts from the same samples; a comparison runs every
        round of every condition unless a condition sets `saturation.stop` itself."""
        import copy

        base: dict = to_dict(IterateConfig())
        base["saturation"]["stop"] = False  # a rule firing in one condition must not shorten it
        if self.base:
            merge(base, read_config(self.base, cls=IterateConfig))
        try:
            merge(base, rename_old_keys(IterateConfig, copy.deepcopy(self.study)))
            from_dict(IterateConfig, copy.deepcopy(base))
        except UserError as e:
            raise UserError("\n".join(f"study: {line}" for line in str(e).splitlines())) from None
        out = {}
        for i, cond in enumerate(self.conditions):
            data = copy.deepcopy(base)
            for shared in ("output_dir", "task", "seed", "eval_sampling"):
                if shared in cond.overrides:
                    raise UserError(
                        f"conditions.{i}.overrides.{shared}: the conditions must share it (the held-out "
                        "prompts and their sampling are what makes them comparable); set it under study"
                    )
            merge(data, rename_old_keys(IterateConfig, copy.deepcopy(cond.overrides)))
            if "train_seed" in cond.overrides and self.replicates > 1:
                raise UserError(
                    f"conditions.{i}.overrides.train_seed: replicates set each run's train_seed; remove it"
                )
            from eval.compare import replicate_dir

            group = data.get("wandb_group") or Path(self.output_dir).name
            runs = []
            for r in range(self.replicates):
                rep = copy.deepcopy(data)
                folder = replicate_dir(Path(self.output_dir), cond.name, r)
                rep["output_dir"] = str(folder)
                rep["run_name"] = data.get("run_name") or f"{Path(self.output_dir).name}/{folder.name}"
                rep["wandb_group"] = group
                if r > 0:
                    rep["train_seed"] = rep["seed"] + r
                try:
                    runs.append(from_dict(IterateConfig, rep))
                except UserError as e:
                    lines = str(e).splitlines()
                    raise UserError(
                        "\n".join(f"conditions.{i} ({cond.name}): {line}" for line in lines)
                    ) from None
            out[cond.name] = runs
        return out


# ---------------------------------------------------------------- checks across sections


def listed(verifiers: list[VerifierConfig]) -> dict[str, VerifierConfig]:
    """A list of verifiers by their config keys (`verifiers.<i>`)."""
    return {f"verifiers.{i}": v for i, v in enumerate(verifiers)}


def check_verifiers(verifiers: list[VerifierConfig], task: TaskConfig) -> None:
    """The verifiers: at least one, distinct ids, options right, enough worked examples set aside."""
    from trainer.verifiers import validate_verifiers

    if not verifiers:
        raise UserError("verifiers: list at least one verifier, e.g. [mc, oracle]")
    ids = [v.id or v.name for v in verifiers]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise UserError(f"verifiers: {sorted(dup)} appear twice; give each an `id`")
    validate_verifiers(verifiers)
    for i, v in enumerate(verifiers):
        if v.n_shots > task.shots_size and not v.options.get("examples"):
            raise UserError(
                f"verifiers.{i}.n_shots: {v.n_shots} worked examples need as many problems set aside, "
                f"but task.shots_size is {task.shots_size}; raise task.shots_size"
            )


def check_token_budget(
    engine: EngineConfig, sampling: dict[str, SamplingConfig], verifiers: dict[str, VerifierConfig]
) -> None:
    """Every generation budget (of `sampling` and of `verifiers`, each by its config key) fits the
    engine's context: engine.max_model_len holds the prompt and the generated tokens, so a budget at or
    above it could never be spent (and would be cut short)."""
    limit = engine.max_model_len
    budgets = [(f"{key}.max_tokens", s.max_tokens) for key, s in sampling.items()]
    for key, v in verifiers.items():
        if isinstance(v.options.get("max_tokens"), int):
            budgets.append((f"{key}.options.max_tokens", v.options["max_tokens"]))
    for key, budget in budgets:
        if budget >= limit:
            raise UserError(
                f"{key}: {budget} tokens do not fit engine.max_model_len ({limit}), which also holds the "
                f"prompt; lower {key} or raise engine.max_model_len"
            )
