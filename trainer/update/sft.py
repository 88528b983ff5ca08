"""`sft`: rejection-sampling fine-tuning, supervised fine-tuning on the kept samples.

The training data is the round's kept samples (the first verifier's filter) as (prompt, completion)
rows; a kept sample cut off at `sampling.max_tokens` is left out unless `train_on_truncated` (it
never finished its answer: the model would learn to stop mid-thought where the token budget ran
out). Training is `trainer.distill.distill`: TRL's SFTTrainer, loss on the completion tokens, LoRA
merged before saving.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainer.distill import SFTOptions, distill
from trainer.update.base import UpdateRule


class SFTRule(UpdateRule):
    name = "sft"
    stage = "distill"
    options = SFTOptions

    def training_data(self, rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
        kept = rows[rows["kept"]]
        truncated = rows["finish_reason"] == "length"
        distilled = kept if self.opts.train_on_truncated else kept[~truncated[rows["kept"]]]
        columns = ["prompt", "completion"] + (["finish_reason"] if "finish_reason" in kept else [])
        return distilled[columns], {"distilled": len(distilled)}

    def nothing_to_train(self, rows: pd.DataFrame, counts: dict) -> str:
        kept = int(rows["kept"].sum())
        why = "kept none" if kept == 0 else f"kept only truncated samples ({kept})"
        return (
            f"the filter {why} of the {len(rows)} samples, so there is nothing to distill; "
            "loosen `filter`, change the verifier"
            + ("" if kept == 0 else f", raise sampling.max_tokens or set {self.key}.train_on_truncated")
        )

    def train(
        self, rows: pd.DataFrame, prev: Path, out: Path, seed: int, callbacks: list | None = None
    ) -> tuple[Path, dict]:
        data, _ = self.training_data(rows, seed)
        return out, distill(data, prev, out, self.opts, seed=seed, callbacks=callbacks, key=self.key)

    def record(self, stats: dict) -> dict:
        return {
            "sft_loss": stats.get("train_loss"),
            "sft_steps": stats.get("steps"),
            "sft_tokens": stats.get("train_tokens"),
            "sft_tokens_per_second": stats.get("tokens_per_second"),
        }
