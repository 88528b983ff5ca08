"""Cross-verification: the gap of every generator model verified by every verifier model.

    python recipes/cross_verify.py --config recipes/configs/cross_verify.yaml [--key value ...]
    python recipes/cross_verify.py --help

Each generator samples once (<output_dir>/<generator>/generations.parquet); each verifier model then
scores every generator's samples with one strategy (`verifier:`), so the diagonal is
self-verification and the rest is cross-verification. One model is loaded at a time. Writes
gap_table.md / gap_table.json (gap, relative gap, AUROC, precision with CIs, tokens per pair) and
plots/cross_verify_gap.png; re-running resumes, and models may be added to either list. The work is
`trainer.measure.cross_verify`.
"""

from __future__ import annotations

from pathlib import Path

from core.config import load_config
from core.errors import exit_on_user_error
from eval.gap import MATRIX_CONSOLE, matrix_table, print_table
from trainer.config import CrossVerifyConfig
from trainer.measure import cross_verify

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "cross_verify.yaml"


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[dict]:
    cfg = load_config(CrossVerifyConfig, argv, default_config=str(DEFAULT_CONFIG))
    records = cross_verify(cfg)
    title = f"cross-verification ({cfg.verifier.name}): gap ({cfg.confidence * 100:g}% CI)"
    print_table(matrix_table(records, title, MATRIX_CONSOLE))
    out = cfg.output_dir
    print(
        f"wrote {out}/gap_table.md (every column), {out}/gap_table.json and {out}/plots/cross_verify_gap.png"
    )
    return records


if __name__ == "__main__":
    main()
