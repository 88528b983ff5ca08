"""The SFT loss computed where it is learned: TRL's SFTTrainer with a compact LM head.

In the prompt-completion format only the completion's tokens carry loss, yet on a CPU TRL's fused LM
head projects every position through the vocabulary (it keeps only the labelled rows on Triton
devices), and it also computes each token's entropy and whether it is the top-1 guess over the whole
vocabulary, for two logged metrics. `DistillTrainer` projects the labelled positions alone and
computes their log-probabilities only: the same loss on the same batches (tests/test_distill.py
checks 1e-4 against TRL's own), without the work the loss never reads.

    trainer = DistillTrainer(model=..., args=SFTConfig(...), train_dataset=..., peft_config=...)
"""

from __future__ import annotations

import types

import torch
from trl import SFTTrainer
from trl.trainer.utils import FusedCausalLMOutput


def add_compact_lm_head(model, outputs: tuple[str, ...] = ()) -> None:
    """Give `model` (a causal LM) a forward that, called with `fused_lm_head=True` and `labels`, runs
    the backbone and projects only the positions whose next-token label is not -100, returning their
    log-probabilities (scattered back to the label shape) and the mean loss. Without the flag the
    forward is the one it had. `outputs` adds per-token fields of TRL's fused head that a trainer
    logs, on the same positions and without gradient: `entropy`, `mean_logits` (over the vocabulary),
    `is_top1` (the label is the arg-max)."""
    original = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    scale = getattr(text_config, "logit_scale", None) or 1.0

    def forward(self, *args, fused_lm_head: bool = False, labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            if labels is not None:
                kwargs["labels"] = labels
            return original(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        target = labels[:, 1:]
        mask = target != -100
        head = self.get_output_embeddings()
        logits = head(hidden[mask].to(head.weight.device))
        if scale != 1.0:
            logits = logits * scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        every = torch.log_softmax(logits.float(), dim=-1)
        picked = every.gather(1, target[mask].unsqueeze(1)).squeeze(1)
        log_probs = picked.new_zeros(mask.shape).masked_scatter(mask, picked)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        extra = {}
        if outputs:
            with torch.no_grad():
                fields = {
                    "entropy": lambda: -(every.exp() * every).sum(-1),
                    "mean_logits": lambda: logits.float().mean(-1),
                    "is_top1": lambda: logits.argmax(-1) == target[mask],
                }
                for name in outputs:
                    value = fields[name]()
                    extra[name] = value.new_zeros(mask.shape).masked_scatter(mask, value)
        return FusedCausalLMOutput(loss=-picked.sum() / count, log_probs=log_probs, label_mask=mask, **extra)

    model.forward = types.MethodType(forward, model)


class DistillTrainer(SFTTrainer):
    """TRL's SFTTrainer whose loss projects the completion positions alone and computes nothing else
    over the vocabulary (no per-step entropy or token accuracy; TRL's token count is kept)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from peft import PeftModel

        base = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        add_compact_lm_head(base)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -outputs.log_probs.sum() / torch.as_tensor(count).clamp(min=1)
        # as Trainer.compute_loss: num_items_in_batch counts every rank's tokens, and DDP averages
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if model.training:
            mask = inputs.get("attention_mask")
            local = mask.sum() if mask is not None else torch.tensor(inputs["position_ids"].size(1))
            self._total_train_tokens += (
                self.accelerator.gather_for_metrics(local).sum().item() // self._tp_size
            )
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
