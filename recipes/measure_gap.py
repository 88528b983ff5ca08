"""Measure the generation-verification gap of a model on a task.

    python recipes/measure_gap.py --config recipes/configs/gap_quickstart.yaml [--key value ...]
    python recipes/measure_gap.py --help                   # every key, its type, default and help

Samples the held-out prompts, lets each configured verifier score every sample, filters, and writes
generations.parquet, verification.parquet, metrics.json (every number with its bootstrap CI) and
gap_table.md into --output_dir, then prints the gap table (the columns that fit a terminal; every
column in gap_table.md). While it runs, the terminal shows the stage and its progress; the
libraries' own output goes to <output_dir>/logs/run.log (`--verbose`: to the terminal). Re-running the same command reuses the finished stages.
The work is `trainer.measure.measure_gap`; the definitions are docs/definitions.md.
"""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.errors import exit_on_user_error
from eval.gap import GAP_CONSOLE, confidence_label, fmt_ci, gap_table, print_table
from trainer.config import GapConfig
from trainer.measure import measure_gap

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "gap_quickstart.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(GapConfig, argv, default_config=str(DEFAULT_CONFIG))
    metrics = measure_gap(cfg)
    level = confidence_label(metrics)
    print_table(gap_table(metrics, f"{cfg.model} on {cfg.task.name}: gap ({level} CI)", GAP_CONSOLE))
    pk = ", ".join(f"pass@{k} {fmt_ci(v, signed=False)}" for k, v in metrics["pass_at_k"].items())
    maj = fmt_ci(metrics["maj_at_k"], signed=False)
    print(f"{pk}; maj@{metrics['n_samples_per_prompt']} {maj} ({level} CIs)")
    out = cfg.output_dir
    print(f"wrote metrics.json and gap_table.md (every column: pooled AUROC, unparseable, tokens) to {out}")
    return metrics


if __name__ == "__main__":
    main()
