"""Generation prompts: a chat turn for instruct models, plain few-shot text for base models.

chat:     the tokenizer's chat template over one user turn: the question, a blank line, and the task's
          answer instruction (`Answer: <answer>` on the last line); few-shot examples are not used.
fewshot:  the instruction, then `n_shots` worked examples from `shots`, then the question:

    Give your final answer on the last line, in the form "Answer: <number>".

    Question: Calculate 12 + 30.
    Answer: 42

    Question: Calculate 51 + 17.

The prompt ends after the question line, so the model writes `Answer: ...` itself and extraction reads
the same marker in both styles; text after a new `Question:` line is dropped by the extractor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from eval.tasks import PROMPT_STYLES

if TYPE_CHECKING:
    from eval.tasks import Problem, Task


def resolve_prompt_style(style: str, tokenizer: Any) -> str:
    """'auto' → 'chat' when the tokenizer has a chat template, else 'fewshot'; checks 'chat' is possible."""
    has_template = bool(getattr(tokenizer, "chat_template", None)) if tokenizer is not None else False
    if style == "auto":
        return "chat" if has_template else "fewshot"
    if style == "chat":
        if not has_template:
            raise UserError(
                "task.prompt_style: 'chat' needs a tokenizer with a chat template and this model's has "
                "none (a base model); use prompt_style fewshot or auto"
            )
        return "chat"
    if style == "fewshot":
        return "fewshot"
    raise UserError(f"task.prompt_style: unknown value '{style}'; choose one of {', '.join(PROMPT_STYLES)}")


def build_prompt(
    task: Task, problem: Problem, tokenizer: Any, style: str, n_shots: int = 0, shots: Sequence[Problem] = ()
) -> str:
    """The full prompt text for `problem` (chat template applied; feed it without adding special tokens).

    `shots` are candidate examples (usually the train split); the first `n_shots` of them that are not
    `problem` itself are used in the fewshot style.
    """
    style = resolve_prompt_style(style, tokenizer)
    if style == "chat":
        content = f"{problem.question.strip()}\n\n{task.format_instruction()}"
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    examples = [s for s in shots if s.id != problem.id and s.question != problem.question][: max(n_shots, 0)]
    parts = [task.format_instruction()]
    parts += [f"Question: {s.question.strip()}\n{task.reference_completion(s)}" for s in examples]
    parts.append(f"Question: {problem.question.strip()}\n")
    return "\n\n".join(parts)
