"""The gap's scaling with pretraining compute (Song et al. 2024's first finding): several models, one task
and verifier, the relative gap fitted against log10(6·N·D).

    python recipes/scaling.py --config recipes/configs/scaling.yaml [--key value ...]
    python recipes/scaling.py --help

Each model's gap is a measure_gap run in <output_dir>/<name>/ (resumable stage by stage), N is counted
from its checkpoint (or given as `n_params`), D is the `pretraining_tokens` of its model card. Writes
scaling.md / scaling.json (the table, the fit, the slope's bootstrap CI over prompts, the verdict) and
plots/scaling.png; re-running resumes, and models may be added. Offline the default runs the two
packaged models, and with two points it says that two points make a line, not a law. The work is
`trainer.measure.scaling`; the fit is `eval.scaling`.
"""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.errors import exit_on_user_error
from eval.gap import fmt_ci, print_table
from eval.scaling import scaling_table
from trainer.config import ScalingConfig
from trainer.measure import scaling

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "scaling.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(ScalingConfig, argv, default_config=str(DEFAULT_CONFIG))
    result = scaling(cfg)
    level = f"{cfg.confidence * 100:g}%"
    print_table(
        scaling_table(result, f"{cfg.verifier.name} on {cfg.task.name}: the gap by model ({level} CI)")
    )
    fit, ci = result["fit"], result["fit"]["slope_ci"]
    print(f"slope per tenfold compute {fmt_ci({'value': fit['slope'], **ci})} ({level} CI)")
    print(result["verdict"])
    out = cfg.output_dir
    print(f"wrote {out}/scaling.md (every column, the fit), {out}/scaling.json and {out}/plots/scaling.png")
    return result


if __name__ == "__main__":
    main()
