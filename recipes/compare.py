"""A controlled comparison: one self-improvement study under several conditions, then one report.

    accelerate launch -q --config_file launch/one_process.yaml recipes/compare.py \
        --config recipes/configs/compare_quickstart.yaml [--study.rounds 2 ...]
    python recipes/compare.py --help

Each condition is the base study (`base:` a study config file, then `study:` overrides, then the
condition's own `overrides:`) run to `<output_dir>/<condition>/` exactly as recipes/iterate.py runs
it, so each is resumable on its own; the same command resumes the whole comparison. All conditions
share the task, seed and evaluation sampling, so they are evaluated on the same held-out prompts
(round 0's held-out samples are made once per replicate and shared: docs/guide.md), and
`<output_dir>/comparison.md` sets each beside the `control` (the random filter at matched budget
by default) with intervals over prompts and training seeds (`replicates`) and Holm-corrected
verdicts: accuracy and gap by round, pass@k curves, diversity. The work is
`trainer.loop.run_comparison`.
"""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.errors import exit_on_user_error
from trainer.config import CompareConfig
from trainer.loop import run_comparison

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "compare_quickstart.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    cfg = load_config(CompareConfig, argv, default_config=str(DEFAULT_CONFIG))
    return run_comparison(cfg)


if __name__ == "__main__":
    main()
