"""The oracle: ground truth from the task checker. The ceiling of any verifier, and the control."""

from __future__ import annotations

import pandas as pd

from trainer.verifiers.base import Verifier, VerifierResult
from trainer.verifiers.registry import register


@register("oracle")
class OracleVerifier(Verifier):
    needs_model = False

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        return VerifierResult(scores=rows["correct"].to_numpy(dtype=float), tokens=0)
