"""Set-up shared by the recipes: seeding, and turning a task config into rendered prompts."""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (transformers' set_seed)."""
    from transformers import set_seed

    set_seed(seed)


def prepare_prompts(task_cfg, model_dir: Path, split: str, seed: int):
    """Build the task and render the prompts of `split` in the model's style.

    Returns (task, problems, prompts, shots): shots are the `shots` split's problems, the worked
    examples of few-shot and verifier prompts, which are never sampled or verified themselves.
    """
    from transformers import AutoTokenizer

    from eval.prompts import build_prompt, resolve_prompt_style
    from eval.tasks import build_task

    task = build_task(task_cfg, seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    style = resolve_prompt_style(task_cfg.prompt_style, tokenizer)
    problems = task.problems(split)
    if not problems:
        raise UserError(f"task.{split}_size: the {split} split has no prompts to sample")
    shots = task.problems("shots")
    fewshot = shots[: task_cfg.n_shots] if style == "fewshot" else []
    if len(fewshot) < (task_cfg.n_shots if style == "fewshot" else 0):
        raise UserError(
            f"task.shots_size: {task_cfg.n_shots} few-shot examples (task.n_shots) need as many "
            f"problems set aside, but the shots split holds {len(shots)}; raise task.shots_size"
        )
    prompts = [build_prompt(task, p, tokenizer, style, task_cfg.n_shots, fewshot) for p in problems]
    return task, problems, prompts, shots


# Engine keys that may change between a run and its resume: where the vLLM server is and how it is
# reached (a resubmitted job may start it elsewhere), and how much GPU memory the engine may take.
ENGINE_RESUMABLE = (
    "engine.server_url",
    "engine.server_port",
    "engine.server_gpus",
    "engine.server_timeout",
    "engine.concurrency",
    "engine.retries",
    "engine.gpu_memory_utilization",
)


def check_resume(
    out: Path,
    saved: Path,
    now: dict,
    may_change: tuple[str, ...],
    key: str | None = None,
    defaults: dict | None = None,
    upgrade=None,
) -> dict | None:
    """On a resumed run (`saved` exists), refuse to go on when the config saved there (under `key`, if
    given) differs from `now` in a key outside `may_change` (top-level names, or dotted ones such as
    `engine.server_url` for one key of a section), then clear what a killed run left half-written in
    `out`. Returns the content of `saved`, or None on a new run.

    `defaults` (the config class's defaults, as a dict) fills keys the saved config lacks: a run made
    before a key existed resumes as long as the key keeps its default. `upgrade` (a function of the
    saved config) first moves keys renamed since to their new place."""
    from core.io import read_json, remove_interrupted_writes

    if out.exists() and not out.is_dir():
        raise UserError(
            f"output_dir: {out} is a file, not a folder; pass the path of a folder (created if missing)"
        )
    if not saved.exists():
        return None
    content = read_json(saved)
    before = content[key] if key else content
    if upgrade is not None:
        before = upgrade(before)
    if defaults is not None:
        before = fill_missing(before, defaults)
    changed = [k for k in now if k not in may_change and _differs(k, before.get(k), now[k], may_change)]
    if changed:
        raise UserError(
            f"output_dir: {out} holds an earlier run with a different '{changed[0]}'; pass a new "
            "--output_dir to start another, or restore the old value to resume"
        )
    from accelerate import PartialState

    if PartialState().is_main_process:  # the process that writes artifacts, before it writes any
        remove_interrupted_writes(out)  # a killed run's half-written temp files
    return content


def fill_missing(saved, defaults):
    """`saved` with every key of `defaults` it lacks added, at any depth (list items of mappings are
    filled from the defaults' first item)."""
    if isinstance(saved, dict) and isinstance(defaults, dict):
        return {
            **{k: v for k, v in defaults.items() if k not in saved},
            **{k: fill_missing(v, defaults[k]) if k in defaults else v for k, v in saved.items()},
        }
    if isinstance(saved, list) and isinstance(defaults, list) and defaults and isinstance(defaults[0], dict):
        return [fill_missing(item, defaults[0]) if isinstance(item, dict) else item for item in saved]
    return saved


def _differs(key: str, before, now, may_change: tuple[str, ...]) -> bool:
    """Whether section `key` changed in a way that matters: its keys named `key.<name>` in
    `may_change` left out."""
    if before == now:
        return False
    free = {m.split(".", 1)[1] for m in may_change if m.startswith(key + ".")}
    if not free or not isinstance(before, dict) or not isinstance(now, dict):
        return True
    return {k: v for k, v in before.items() if k not in free} != {
        k: v for k, v in now.items() if k not in free
    }
