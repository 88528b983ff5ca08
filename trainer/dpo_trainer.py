"""The DPO loss computed where it is learned: TRL's DPOTrainer with a compact LM head.

A preference batch holds each pair's chosen and rejected sequence, and the loss reads the summed
log-probabilities of their completion tokens only, yet on a CPU TRL's fused LM head projects every
position through the vocabulary (it keeps only the labelled rows on Triton devices). `PreferenceTrainer`
gives the policy, and the reference model where there is one, the compact head of
`trainer.sft_trainer`: the labelled positions alone are projected, and the per-token entropy, mean
logit and top-1 flag that TRL logs are computed on those same positions. The loss, its gradients and
TRL's metrics are those of `DPOTrainer` (tests/test_update.py checks the loss against TRL's own).

    trainer = PreferenceTrainer(model=..., args=DPOConfig(...), train_dataset=..., peft_config=...)
"""

from __future__ import annotations

from trl import DPOTrainer

from trainer.sft_trainer import add_compact_lm_head

# The per-token fields of the fused head that DPOTrainer's loss reads for its logged metrics.
LOGGED = ("entropy", "mean_logits", "is_top1")


class PreferenceTrainer(DPOTrainer):
    """TRL's DPOTrainer whose LM head projects the completion positions alone."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from peft import PeftModel

        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        add_compact_lm_head(base, outputs=LOGGED)
        if self.ref_model is not None:  # full fine-tuning: a frozen copy (possibly inside DeepSpeed)
            add_compact_lm_head(self.accelerator.unwrap_model(self.ref_model))
