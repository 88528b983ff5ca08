"""The generation-verification gap against verification compute: k sampled verdicts averaged.

    python recipes/verify_compute.py --config recipes/configs/verify_compute.yaml [--key value ...]
    python recipes/verify_compute.py --help

Samples the held-out prompts once, lets the verifier sample `verdicts` chain-of-thought verifications
of every sample once, and scores each sample under each k in `ks` by the mean of its first k verdicts
(a Monte Carlo estimate of P("Correct"): CoT's answer to multiple choice's probability), then filters
under each of `filters`. The k's are nested subsets of the same verdicts on the same samples, so
their differences are paired. Writes compute_table.md / compute_table.json (per filter and k: gap and
relative gap, AUROC pooled and per prompt, kept precision, verification tokens, each with a CI, and
the paired difference from the first k) and plots/verify_compute.png; verification.parquet keeps
every verdict (`verdicts_<id>`, with its token cost in `verdict_tokens_<id>`), so changing `ks` or
`filters` re-reads them without the model. The work is `trainer.measure.verify_compute`.
"""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.errors import exit_on_user_error
from eval.gap import COMPUTE_CONSOLE, compute_table, fmt_ci, print_table
from trainer.config import VerifyComputeConfig
from trainer.measure import verify_compute

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "verify_compute.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[dict]:
    cfg = load_config(VerifyComputeConfig, argv, default_config=str(DEFAULT_CONFIG))
    records = verify_compute(cfg)
    level = f"{cfg.confidence * 100:g}%"
    print_table(
        compute_table(
            records,
            f"{cfg.verifier.name}: gap against verifications per sample ({level} CI)",
            COMPUTE_CONSOLE,
        )
    )
    for filt in dict.fromkeys(r["filter"] for r in records):
        mine = [r for r in records if r["filter"] == filt and r["k"] is not None]
        first, last = mine[0], mine[-1]
        if last is first:
            continue
        diff = last[f"gap_vs_{first['verifier']}"]
        if diff["ci_low"] is not None and diff["ci_low"] > 0:
            verdict = "more verification raises the gap"
        elif diff["ci_high"] is not None and diff["ci_high"] < 0:
            verdict = "more verification lowers the gap"
        else:
            verdict = "the data cannot tell them apart"
        print(
            f"filter {filt}, k={last['k']} against k={first['k']}: gap {fmt_ci(diff)} ({level} CI, paired): "
            f"{verdict}"
        )
    out = cfg.output_dir
    print(
        f"wrote {out}/compute_table.md (every column), {out}/compute_table.json and {out}/plots/verify_compute.png"
    )
    return records


if __name__ == "__main__":
    main()
