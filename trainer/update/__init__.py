"""Update rules by name: how a round's verified and selected samples train the next checkpoint.

sft   supervised fine-tuning on the kept samples (rejection-sampling fine-tuning; TRL SFTTrainer)
dpo   preference pairs of a prompt's kept vs dropped samples (TRL DPOTrainer); with
      `loss_type: [sigmoid, sft]` it is RPO (DPO plus an NLL term on the chosen samples)
grpo  online RL on the train prompts with a reward from the model's own verifier, the group's
      majority answer, the task's checker or a random control (TRL GRPOTrainer)

The `update` section names the rule (`update.name`) and holds each rule's options under the rule's
own key (`update.sft`, `update.dpo`); only the named rule's are read, so a config (or a comparison's
shared keys) may set several rules' options. A study config written before the update section
existed has its SFT options at the top level (`sft:`): they are read as `update.sft`.

Adding a rule: a module here with its options dataclass and an `UpdateRule` subclass
(trainer/update/base.py), an entry in `RULES`, and its options as a field of `UpdateConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import knob, one_of
from trainer.distill import SFTOptions
from trainer.update.base import UpdateRule
from trainer.update.dpo import DPOOptions, DPORule
from trainer.update.grpo import GRPOOptions, GRPORule
from trainer.update.sft import SFTRule

RULES: dict[str, type[UpdateRule]] = {
    "sft": SFTRule,
    "dpo": DPORule,
    "grpo": GRPORule,
}


@dataclass
class UpdateConfig:
    """How the next checkpoint learns from the round's verified and selected samples: a rule and its options."""

    name: str = knob("sft", "the update rule: sft | dpo | grpo (update.<name> holds its options)")
    sft: SFTOptions = knob(factory=SFTOptions, help="")
    dpo: DPOOptions = knob(factory=DPOOptions, help="")
    grpo: GRPOOptions = knob(factory=GRPOOptions, help="")

    @property
    def options(self):
        """The named rule's options."""
        return getattr(self, self.name)

    def validate(self, key: str) -> None:
        one_of(f"{key}.name", self.name, tuple(RULES))


def make_rule(cfg: UpdateConfig, verifier, filt, key: str = "update") -> UpdateRule:
    """The rule `cfg` names, reading `verifier`'s scores and its filter `filt` (the study's first)."""
    return RULES[cfg.name](cfg.options, verifier, filt, f"{key}.{cfg.name}")


def check_update(cfg: UpdateConfig, verifier, filt, key: str = "update", study=None) -> None:
    """Config-time checks of the named rule against the first verifier and its filter, and against
    the rest of the `study` config where given."""
    one_of(f"{key}.name", cfg.name, tuple(RULES))
    RULES[cfg.name].check(cfg.options, verifier, filt, f"{key}.{cfg.name}")
    if study is not None:
        RULES[cfg.name].check_study(cfg.options, study, f"{key}.{cfg.name}")


__all__ = [
    "RULES",
    "DPOOptions",
    "GRPOOptions",
    "SFTOptions",
    "UpdateConfig",
    "UpdateRule",
    "check_update",
    "make_rule",
]
