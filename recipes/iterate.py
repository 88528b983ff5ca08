"""Self-improvement through the generation-verification gap, round after round.

    accelerate launch recipes/iterate.py                        # the quickstart: 3 rounds on CPU
    accelerate launch --config_file launch/cpu_2proc.yaml recipes/iterate.py --config recipes/configs/x.yaml

Each round samples the train prompts from the current checkpoint, lets the model verify its own
samples, keeps what the filter passes, distills it with TRL SFT, and evaluates the new model on
held-out prompts. Output: runs/<study>/ (see README). Re-running the same command resumes.
"""

from __future__ import annotations

from pathlib import Path

from trainer.config import IterateConfig, load_config
from trainer.errors import exit_on_user_error
from trainer.loop import run_study

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quickstart.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[dict]:
    cfg = load_config(IterateConfig, argv, default_config=str(DEFAULT_CONFIG))
    return run_study(cfg)


if __name__ == "__main__":
    main()
