"""The Verifier interface and the context verifiers are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import knob
from core.errors import UserError
from trainer.filters import FilterConfig
from trainer.samplers.base import Sampler

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class VerifierConfig:
    """One verification strategy. `name` picks it; `options` holds its own knobs (each strategy's
    docstring lists them)."""

    name: str = knob("mc", "mc | cot_binary | cot_score | tournament | ensemble | oracle")
    id: str | None = knob(
        None, "the verifier's column suffix (score_<id>); defaults to name; set it to use one strategy twice"
    )
    model: str | None = knob(None, "cross-verification: another model verifies (its own engine)")
    template: str | None = knob(
        None, "prompt template file; defaults to the strategy's own in trainer/verifiers/templates"
    )
    n_shots: int = knob(0, "worked verification examples, from the task's shots split (or options.examples)")
    filter: FilterConfig | None = knob(None, "this verifier's own filter (default: the study's `filter`)")
    options: dict = knob(factory=dict, help="strategy-specific knobs, checked by the strategy")

    @property
    def column(self) -> str:
        return f"score_{self.id or self.name}"


@dataclass
class VerifierResult:
    scores: np.ndarray  # one per row; NaN = abstained (unparseable verification)
    tokens: int = 0  # tokens the verifier processed (prompt + generated), for compute-matched comparisons
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # strategy-specific diagnostics
    # Strategies that sample several verifications per row (cot_binary, cot_score): rows × samples,
    # each sampled verification's own score (NaN: abstained) and the tokens it cost (its prompt + the
    # tokens it generated), in sampling order, so any first-k subset can be rescored without the model.
    verdicts: np.ndarray | None = None
    verdict_tokens: np.ndarray | None = None


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
    """Scores generation rows (columns `question`, `completion`, `correct`, ...) without changing them.

    A strategy lists the `options` it takes in `option_names` and reads them in `read_options`; any
    other option is a UserError naming `verifiers.<i>.options.<name>`, at config time
    (`check_options`) as at run time.
    """

    needs_model = True
    option_names: tuple[str, ...] = ()

    def __init__(self, cfg: VerifierConfig, ctx: VerifyContext, key: str | None = None):
        from trainer.verifiers.parsing import Options

        self.cfg = cfg
        self.ctx = ctx
        self.key = key or f"verifiers.{cfg.id or cfg.name}"
        self.read_options(Options(cfg.options, self.key, self.option_names))

    def read_options(self, opts) -> None:
        """Read the strategy's options (`opts` is a checked `parsing.Options`)."""

    @classmethod
    def check_options(cls, cfg: VerifierConfig, key: str, earlier_ids: tuple[str, ...] = ()) -> None:
        """Validate `cfg.options` (and the template) at config time; a UserError names the key."""
        cls(cfg, VerifyContext(None, None, "chat", None), key)

    @property
    def column(self) -> str:
        return self.cfg.column

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        raise NotImplementedError

    # -- prompting helpers shared by model-based verifiers

    def template(self, default: str) -> str:
        path = Path(self.cfg.template) if self.cfg.template else TEMPLATES / default
        if not path.is_file():
            raise UserError(f"{self.key}.template: file {path} does not exist")
        text = path.read_text()
        if "{question}" not in text or "{completion}" not in text:
            raise UserError(f"{self.key}.template: {path} must contain {{question}} and {{completion}}")
        return text

    def count_tokens(self, texts: list[str]) -> int:
        return int(self.token_counts(texts).sum())

    def token_counts(self, texts: list[str]) -> np.ndarray:
        """The tokens of each text, as the verifier's model reads it (no special tokens added)."""
        enc = self.ctx.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.array([len(ids) for ids in enc], dtype=int)
