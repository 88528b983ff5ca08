"""Verification strategies by name. Each scores rows; a filter turns scores into kept rows.

mc          P("Correct") vs P("Incorrect") from next-token log-probabilities (one prefill)
cot_binary  reason, then a verdict: 1 / 0
cot_score   reason, then a score from 1 to 10 (rescaled to [0, 1])
tournament  single-elimination pairwise comparisons among a prompt's generations
ensemble    mean / product / all-must-pass of other verifiers' scores
oracle      the task's checker: the ceiling and the control

Each strategy's module registers it in `registry.VERIFIERS`; importing the package imports them all.
"""

from __future__ import annotations

from trainer.verifiers import cot, ensemble, mc, oracle, tournament  # noqa: F401  (each registers its strategies)
from trainer.verifiers.base import Verifier, VerifierConfig, VerifierResult, VerifyContext
from trainer.verifiers.registry import VERIFIERS, check_verifier, make_verifier, register, validate_verifiers

__all__ = [
    "VERIFIERS",
    "Verifier",
    "VerifierConfig",
    "VerifierResult",
    "VerifyContext",
    "check_verifier",
    "make_verifier",
    "register",
    "validate_verifiers",
]
