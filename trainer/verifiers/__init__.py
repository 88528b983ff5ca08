"""Verification strategies by name. Each scores rows; a filter turns scores into kept rows.

mc          P("Correct") vs P("Incorrect") from next-token log-probabilities (one prefill)
cot_binary  reason, then a verdict: 1 / 0
cot_score   reason, then a score from 1 to 10 (rescaled to [0, 1])
tournament  single-elimination pairwise comparisons among a prompt's generations
ensemble    mean / product / all-must-pass of other verifiers' scores
oracle      the task's checker: the ceiling and the control
"""

from __future__ import annotations

from core.config import one_of
from trainer.verifiers.base import Verifier, VerifierConfig, VerifierResult, VerifyContext
from trainer.verifiers.cot import CoTBinaryVerifier, CoTScoreVerifier
from trainer.verifiers.ensemble import EnsembleVerifier
from trainer.verifiers.mc import MCVerifier
from trainer.verifiers.oracle import OracleVerifier
from trainer.verifiers.tournament import TournamentVerifier

VERIFIERS: dict[str, type[Verifier]] = {
    "mc": MCVerifier,
    "cot_binary": CoTBinaryVerifier,
    "cot_score": CoTScoreVerifier,
    "tournament": TournamentVerifier,
    "ensemble": EnsembleVerifier,
    "oracle": OracleVerifier,
}


def make_verifier(cfg: VerifierConfig, ctx: VerifyContext, key: str | None = None) -> Verifier:
    """The verifier `cfg` names, built on `ctx`; `key` (`verifiers.2`) is what its errors name."""
    return VERIFIERS[cfg.name](cfg, ctx, key)


def check_verifier(cfg: VerifierConfig, key: str, earlier_ids: tuple[str, ...] = ()) -> None:
    """Validate one verifier's name, options and template (a UserError names `key.options.<option>`)."""
    one_of(f"{key}.name", cfg.name, tuple(VERIFIERS))
    VERIFIERS[cfg.name].check_options(cfg, key, earlier_ids)


def validate_verifiers(cfgs: list[VerifierConfig], key: str = "verifiers") -> None:
    """Validate every verifier's options at config time, before any model is loaded; every verifier's
    mistakes are reported together."""
    from core.config import Problems

    problems = Problems()
    ids: list[str] = []
    for i, cfg in enumerate(cfgs):
        with problems.check():
            check_verifier(cfg, f"{key}.{i}", tuple(ids))
        ids.append(cfg.id or cfg.name)
    problems.raise_any()


__all__ = [
    "VERIFIERS",
    "Verifier",
    "VerifierConfig",
    "VerifierResult",
    "VerifyContext",
    "check_verifier",
    "make_verifier",
    "validate_verifiers",
]
