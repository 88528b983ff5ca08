"""Generation prompts: a chat turn for instruct models, plain few-shot text for base models.

chat:     the tokenizer's chat template over one user turn: the question, a blank line, and the task's
          answer instruction (`Answer: <answer>` on the last line); few-shot examples are not used.
fewshot:  the instruction, then `n_shots` worked examples from `shots`, then the question:

    Give your final answer on the last line, in the form "Answer: <number>".

    Question: Calculate 12 + 30.
    Answer: 42

    Question: Calculate 51 + 17.

The prompt ends after the question line, so the model writes `Answer: ...` itself and extraction reads
the same marker in both styles. A base model goes on with a new `Question:` after answering: sampling
stops there (`stop_strings`), and the extractor drops such text wherever it is left.

Plain-text prompts (fewshot, and base models' verifier prompts) start with the BOS token where the
tokenizer puts one before text itself (`text_start`: Gemma's does, SmolLM2's does not): prompts are
encoded without special tokens, as chat templates write their own.
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


# Where a base model's completion ends: it starts the next example of the few-shot pattern.
FEWSHOT_STOP = "\nQuestion:"


def stop_strings(style: str) -> list[str]:
    """Strings that end a completion sampled from a prompt of `style` (resolved: chat | fewshot)."""
    return [FEWSHOT_STOP] if style == "fewshot" else []


def text_start(tokenizer: Any) -> str:
    """The BOS token's text where `tokenizer` puts it before plain text by itself, else ''."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or not bos or bos_id is None:
        return ""
    return bos if tokenizer("x")["input_ids"][:1] == [bos_id] else ""


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
    return text_start(tokenizer) + "\n\n".join(parts)
