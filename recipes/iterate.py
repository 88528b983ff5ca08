"""Self-improvement through the generation-verification gap, round after round.

    accelerate launch -q --config_file launch/one_process.yaml recipes/iterate.py   # the quickstart
    accelerate launch -q --config_file launch/cpu_2proc.yaml recipes/iterate.py --config recipes/configs/x.yaml
    python recipes/iterate.py --help                      # every key, its type, default and help

Round 0 evaluates the starting model; each later round samples the train prompts from the current
checkpoint, lets the model verify its own samples, keeps what the filter passes, trains the next
checkpoint on it with the update rule (`update.name`: sft distills the kept samples with TRL SFT, dpo
trains TRL DPO on kept-vs-dropped pairs), evaluates the new model on held-out prompts, logs the round
and judges the stopping rules (`trainer.loop.Study.run_round` is that sequence). Output:
runs/<study>/ (docs/guide.md). Re-running the same command resumes.
"""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.errors import exit_on_user_error
from trainer.config import IterateConfig
from trainer.loop import run_study

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quickstart.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[dict]:
    cfg = load_config(IterateConfig, argv, default_config=str(DEFAULT_CONFIG))
    return run_study(cfg)


if __name__ == "__main__":
    main()
