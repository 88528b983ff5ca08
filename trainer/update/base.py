"""The UpdateRule interface: how a round's verified and selected samples train the next checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import pandas as pd

    from trainer.filters import FilterConfig
    from trainer.verifiers.base import VerifierConfig


class UpdateRule:
    """One way of learning from a round's samples. It is built from its options (its section of
    `update`), the first verifier (whose scores decide) and that verifier's filter, and turns the
    round's selected rows (generation rows with `kept`, `correct`, `score_<id>`, `finish_reason`, ...)
    into its own training data, then trains the next checkpoint on them from the previous one.

    The loop calls, in this order: `training_data` (to record what the round trains on, and to stop
    where that is nothing: `nothing_to_train` says why), `train` (on every rank under a launcher; it
    writes the checkpoint on the main process) and `record` (the round's train metrics from the
    stats `train` returned, which the loop also writes to `<round>/<name>.json`).
    """

    name: ClassVar[str]  # the rule's name in `update.name`, and its options' key `update.<name>`
    stage: ClassVar[str]  # the stage's name on the console and in a round's `seconds`
    options: ClassVar[type]  # the dataclass of its options
    # An online rule generates its own rollouts while it trains (grpo): the loop still samples,
    # verifies and selects the train prompts at the round's start (what the round records, and the
    # rows `train` gets), and gives the rule its `context` (trainer/update/grpo.py OnlineContext).
    online: ClassVar[bool] = False

    def __init__(self, opts, verifier: VerifierConfig, filt: FilterConfig, key: str):
        self.opts = opts  # the rule's options (its dataclass)
        self.verifier = verifier  # the verifier whose scores and kept set the rule reads
        self.filter = filt  # that verifier's filter
        self.key = key  # how errors name the options: update.<name>

    @classmethod
    def check(cls, opts, verifier: VerifierConfig, filt: FilterConfig, key: str) -> None:
        """Config-time checks across sections (a filter that could never give the rule data); a
        UserError names the key to change."""

    @classmethod
    def check_study(cls, opts, study, key: str) -> None:
        """Config-time checks against the rest of the study config (`study`: an IterateConfig)."""

    def needs_judge(self) -> bool:
        """Whether `train` scores with the study's verifiers on the round's starting checkpoint (the
        loop then keeps their engines awake while it trains)."""
        return False

    def training_data(self, rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
        """What the rule trains on from the round's selected rows (drawn with `seed` where it draws),
        and the counts the round records about it."""
        raise NotImplementedError

    def nothing_to_train(self, rows: pd.DataFrame, counts: dict) -> str:
        """Why the round has nothing to train on (its training data is empty), and what would change it."""
        raise NotImplementedError

    def train(
        self, rows: pd.DataFrame, prev: Path, out: Path, seed: int, callbacks: list | None = None
    ) -> tuple[Path, dict]:
        """Train `prev` on the rule's training data from `rows` into the checkpoint `out` (a plain HF
        checkpoint, written on the main process); return it and the run's stats. Call on every rank."""
        raise NotImplementedError

    def record(self, stats: dict) -> dict:
        """The round's train metrics from the stats of `train`."""
        raise NotImplementedError
