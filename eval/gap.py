"""The metrics of one scored set of generations: the gap of each verifier, pass@k, maj@k, diversity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from eval import metrics as M


def summarize(
    rows: pd.DataFrame,
    verifier_ids: list[str],
    costs: dict[str, dict] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """metrics.json's content for `rows` carrying `score_<id>` and `kept_<id>` for each verifier id.

    The headline keys (generation_utility, gap, ...) are the first verifier's; `verifiers` holds all.
    """
    costs = costs or {}
    n_per_prompt = rows.groupby("prompt_id").size()
    per_verifier = {}
    for vid in verifier_ids:
        weights = rows[f"kept_{vid}"].to_numpy(dtype=float)
        vm = M.verifier_metrics(
            rows, f"score_{vid}", weights, n_boot=n_boot, confidence=confidence, seed=seed
        )
        vm.update({f"verification_{k}": v for k, v in costs.get(vid, {}).items()})
        per_verifier[vid] = vm
    primary = per_verifier[verifier_ids[0]]
    out = {key: primary[key] for key in ("generation_utility", "verification_utility", "gap", "relative_gap")}
    out.update(
        {
            "pass_at_k": {str(k): v for k, v in M.pass_at_k_curve(rows).items()},
            "maj_at_k": M.maj_at_k(rows),
            "answer_diversity": M.answer_diversity(rows),
            "verifier_auroc": primary["auroc"],
            "n_prompts": int(len(n_per_prompt)),
            "n_samples_per_prompt": int(n_per_prompt.max()) if len(n_per_prompt) else 0,
            "prompts_empty_filter": primary["prompts_empty_filter"],
            "prompts_excluded_relative": primary["prompts_excluded_relative"],
            "primary_verifier": verifier_ids[0],
            "verifiers": per_verifier,
            "mean_completion_tokens": float(rows["n_tokens"].mean()) if "n_tokens" in rows else None,
            "no_answer_fraction": float(rows["answer"].isna().mean()),
        }
    )
    score_cols = [f"score_{v}" for v in verifier_ids]
    if len(score_cols) > 1:
        out["score_correlations"] = M.score_correlations(rows, score_cols)
    return M.json_safe(out)


def fmt_ci(m: dict) -> str:
    """`0.123 [0.050, 0.200]` for a {value, ci_low, ci_high} dict (n/a where undefined)."""
    if m is None or m.get("value") is None:
        return "n/a"
    return f"{m['value']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"


def gap_table(metrics: dict, title: str = "generation–verification gap"):
    """A rich Table with one row per verifier."""
    from rich.table import Table

    table = Table(title=title)
    for col in (
        "verifier",
        "gen utility",
        "ver utility",
        "gap [95% CI]",
        "relative gap [95% CI]",
        "AUROC",
        "kept",
        "precision",
        "unparseable",
        "verify tokens",
    ):
        table.add_column(col, justify="right" if col != "verifier" else "left")
    for vid, vm in metrics["verifiers"].items():
        table.add_row(
            vid,
            _num(vm["generation_utility"]["value"]),
            _num(vm["verification_utility"]["value"]),
            fmt_ci(vm["gap"]),
            fmt_ci(vm["relative_gap"]),
            _num(vm.get("auroc")),
            str(vm.get("kept", "")),
            _num(vm.get("kept_precision")),
            str(unparseable(vm)),
            str(vm.get("verification_tokens", "")),
        )
    return table


def unparseable(vm: dict) -> int:
    """Verifications whose text gave no verdict: the verifier's own count (it sees them under every
    `unparseable` rule), else the abstentions (NaN scores) in its column."""
    return int(vm.get("verification_unparseable", vm.get("unparseable", 0)) or 0)


def _num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"
