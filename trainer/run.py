"""Set-up shared by the recipes: seeding, and turning a task config into rendered prompts."""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (transformers' set_seed)."""
    from transformers import set_seed

    set_seed(seed)


def prepare_prompts(
    task_cfg, model_dir: Path, split: str, seed: int, fits: tuple[str, int, int] | None = None
):
    """Build the task and render the prompts of `split` in the model's style.

    Returns (task, problems, prompts, shots): shots are the `shots` split's problems, the worked
    examples of few-shot and verifier prompts, which are never sampled or verified themselves.
    `fits` = (the budget's key, max_tokens, engine.max_model_len): every prompt is checked to leave
    room for max_tokens in the engine's context, before any engine starts.
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
    if fits is not None:
        check_prompt_lengths(task, problems, prompts, tokenizer, *fits)
    return task, problems, prompts, shots


def check_prompt_lengths(task, problems, prompts, tokenizer, key: str, max_tokens: int, limit: int) -> None:
    """Every prompt plus `max_tokens` generated tokens fits the engine's context (`limit` tokens), as
    the engine would find only once started; a prompt that does not is named by its file and line
    (or its task and id)."""
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    for problem, n in zip(problems, lengths):
        if n + max_tokens > limit:
            raise UserError(
                f"{task.where(problem)}: its prompt is {n} tokens, and with {key} {max_tokens} it does "
                f"not fit engine.max_model_len ({limit}); shorten the question, or raise engine.max_model_len"
            )


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
