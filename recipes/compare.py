"""A controlled comparison: one self-improvement study under several conditions, then one report.

    accelerate launch -q --config_file launch/one_process.yaml recipes/compare.py \
        --config recipes/configs/compare_quickstart.yaml [--study.rounds 2 ...]

Each condition is the base study (`base:` a study config file, then `study:` overrides, then the
condition's own `overrides:`) run to `<output_dir>/<condition>/` exactly as recipes/iterate.py runs
it, so each is resumable on its own; the same command resumes the whole comparison. All conditions
share the task, seed and evaluation sampling, so they are evaluated on the same held-out prompts,
and `<output_dir>/comparison.md` sets each beside the `control` (the random filter at matched budget
by default) with paired bootstrap CIs: accuracy and gap by round, pass@k curves, diversity.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console

from eval.compare import read_history, write_comparison
from trainer.config import IterateConfig, from_dict, load_config, merge, to_dict
from trainer.errors import UserError, exit_on_user_error
from trainer.loop import run_study

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "compare_quickstart.yaml"

console = Console(stderr=True)


@dataclass
class ConditionConfig:
    """One condition: a name (its folder) and the study keys it changes."""

    name: str = ""
    overrides: dict = field(default_factory=dict)  # study keys, as in a study config

    def validate(self, key: str) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UserError(f"{key}.name: give each condition a folder name (no '/'), got {self.name!r}")


@dataclass
class CompareConfig:
    """recipes/compare.py: the same study under several conditions, compared with a control."""

    base: str | None = None  # a study config file (recipes/configs/*.yaml) the conditions start from
    study: dict = field(default_factory=dict)  # study keys applied to every condition
    conditions: list[ConditionConfig] = field(default_factory=list)
    control: str = "random"  # the condition every other one is compared with
    output_dir: str = "runs/compare"

    def validate(self, key: str = "") -> None:
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


def condition_configs(cfg: CompareConfig) -> dict[str, IterateConfig]:
    """Each condition's full study config, validated (a mistake names the condition's key)."""
    base: dict = to_dict(IterateConfig())
    if cfg.base:
        merge(base, yaml.safe_load(Path(cfg.base).read_text()) or {})
    try:
        merge(base, copy.deepcopy(cfg.study))
        from_dict(IterateConfig, copy.deepcopy(base))
    except UserError as e:
        raise UserError(f"study: {e}") from None
    out = {}
    for i, cond in enumerate(cfg.conditions):
        data = copy.deepcopy(base)
        merge(data, copy.deepcopy(cond.overrides))
        for key in ("output_dir", "task", "seed", "eval_sampling"):
            if key in cond.overrides:
                raise UserError(
                    f"conditions.{i}.overrides.{key}: the conditions must share it (the held-out "
                    "prompts and their sampling are what makes them comparable); set it under study"
                )
        data["output_dir"] = str(Path(cfg.output_dir) / cond.name)
        data["run_name"] = data.get("run_name") or f"{Path(cfg.output_dir).name}/{cond.name}"
        data["wandb_group"] = data.get("wandb_group") or Path(cfg.output_dir).name
        try:
            out[cond.name] = from_dict(IterateConfig, data)
        except UserError as e:
            raise UserError(f"conditions.{i} ({cond.name}): {e}") from None
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    cfg = load_config(CompareConfig, argv, default_config=str(DEFAULT_CONFIG))
    studies = condition_configs(cfg)
    out = Path(cfg.output_dir)
    for name, study in studies.items():
        console.print(f"[bold]condition {name}[/] → {study.output_dir}")
        run_study(study)
    histories = {name: read_history(out / name) for name in studies}
    first = next(iter(studies.values()))
    from trainer import dist

    if dist.is_main():
        path = write_comparison(
            out,
            histories,
            cfg.control,
            title=f"mindgap comparison: {first.model} on {first.task.name}",
            n_boot=first.bootstrap,
            confidence=first.confidence,
            seed=first.seed,
        )
        console.print(f"comparison: {path}")
    return histories


if __name__ == "__main__":
    main()
