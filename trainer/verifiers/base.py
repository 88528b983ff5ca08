"""The Verifier interface and the context verifiers are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.config import VerifierConfig
from trainer.errors import UserError
from trainer.samplers.base import Sampler

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class VerifierResult:
    scores: np.ndarray  # one per row; NaN = abstained (unparseable verification)
    tokens: int = 0  # tokens the verifier processed (prompt + generated), for compute-matched comparisons
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # strategy-specific diagnostics


@dataclass
class VerifyContext:
    """What a verifier may use: the model that verifies, how to prompt it, and the task."""

    sampler: Sampler | None  # None for verifiers that need no model (oracle)
    tokenizer: object | None
    prompt_style: str  # chat | fewshot
    task: object  # eval.tasks.Task
    shots: list = field(default_factory=list)  # train problems available as few-shot examples
    seed: int = 0


class Verifier:
    """Scores generation rows (columns `question`, `completion`, `correct`, ...) without changing them."""

    needs_model = True

    def __init__(self, cfg: VerifierConfig, ctx: VerifyContext):
        self.cfg = cfg
        self.ctx = ctx

    @property
    def column(self) -> str:
        return self.cfg.column

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        raise NotImplementedError

    # -- prompting helpers shared by model-based verifiers

    def template(self, default: str) -> str:
        path = Path(self.cfg.template) if self.cfg.template else TEMPLATES / default
        if not path.is_file():
            raise UserError(f"verifiers.{self.cfg.id or self.cfg.name}.template: file {path} does not exist")
        text = path.read_text()
        if "{question}" not in text or "{completion}" not in text:
            raise UserError(
                f"verifiers.{self.cfg.id or self.cfg.name}.template: {path} must contain "
                "{question} and {completion}"
            )
        return text

    def render(self, user_text: str, fewshot_prefix: str = "") -> str:
        """A verification prompt in the model's style: its chat template, or plain few-shot text."""
        if self.ctx.prompt_style == "chat":
            messages = [{"role": "user", "content": fewshot_prefix + user_text}]
            return self.ctx.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return fewshot_prefix + user_text

    def count_tokens(self, texts: list[str]) -> int:
        enc = self.ctx.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return int(sum(len(ids) for ids in enc))
