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
    method: str = "percentile",
) -> dict:
    """metrics.json's content for `rows` carrying `score_<id>` and `kept_<id>` for each verifier id.

    The headline keys (generation_utility, gap, ..., rare_answer_recall, kept_answer_entropy) are the
    first verifier's; `verifiers` holds all.
    Every headline number is {value, ci_low, ci_high} (`ci` says how the intervals were made), and
    `per_prompt` keeps what paired comparisons need (rounds, conditions on the same prompts): each
    prompt's sample and correct counts, diversity, and each verifier's verification utility.
    """
    costs = costs or {}
    boot = M.Bootstrap(n_boot, confidence, seed, method)
    n_per_prompt = rows.groupby("prompt_id").size()
    per_verifier = {}
    for vid in verifier_ids:
        weights = rows[f"kept_{vid}"].to_numpy(dtype=float)
        vm = M.verifier_metrics(rows, f"score_{vid}", weights, **boot)
        vm.update({f"verification_{k}": v for k, v in costs.get(vid, {}).items()})
        per_verifier[vid] = vm
    primary = per_verifier[verifier_ids[0]]
    counts = rows.groupby("prompt_id", sort=True)["correct"].agg(n="size", c="sum")
    n, c = counts["n"].to_numpy(), counts["c"].to_numpy()
    diversity = M.diversity_per_prompt(rows)
    ks = M.default_ks(int(n.min())) if len(n) else []
    out = {key: primary[key] for key in ("generation_utility", "verification_utility", "gap", "relative_gap")}
    out.update(
        {
            "pass_at_k": {
                str(k): M.bootstrap_ci(M.pass_at_k_per_prompt(n, c, k), **boot, proportion=True) for k in ks
            },
            "maj_at_k": M.bootstrap_ci(M.maj_at_k_per_prompt(rows).to_numpy(), **boot, proportion=True),
            "answer_diversity": M.answer_diversity(rows, **boot),
            "verifier_auroc": primary["auroc"],
            "verifier_auroc_per_prompt": primary["auroc_per_prompt"],
            "rare_answer_recall": primary["rare_answer_recall"],
            "kept_answer_entropy": primary["kept_answer_entropy"],
            "n_prompts": int(len(n_per_prompt)),
            "n_samples_per_prompt": int(n_per_prompt.max()) if len(n_per_prompt) else 0,
            "prompts_empty_filter": primary["prompts_empty_filter"],
            "prompts_excluded_relative": primary["prompts_excluded_relative"],
            "primary_verifier": verifier_ids[0],
            "verifiers": per_verifier,
            "mean_completion_tokens": float(rows["n_tokens"].mean()) if "n_tokens" in rows else None,
            "no_answer_fraction": float(rows["answer"].isna().mean()),
            "truncated": int((rows["finish_reason"] == "length").sum()) if "finish_reason" in rows else None,
            "ci": {"method": method, "confidence": confidence, "n_boot": n_boot, "resampled": "prompts"},
            "per_prompt": per_prompt_record(rows, verifier_ids, diversity),
        }
    )
    score_cols = [f"score_{v}" for v in verifier_ids]
    if len(score_cols) > 1:
        out["score_correlations"] = M.score_correlations(rows, score_cols)
    return M.json_safe(out)


def per_prompt_record(
    rows: pd.DataFrame, verifier_ids: list[str], diversity: pd.DataFrame | None = None
) -> dict:
    """What paired comparisons (rounds, conditions) and the stopping rules read of a round: per prompt
    (sorted by id) its sample and correct counts, diversity and each verifier's verification utility."""
    counts = rows.groupby("prompt_id", sort=True)["correct"].agg(n="size", c="sum")
    diversity = M.diversity_per_prompt(rows) if diversity is None else diversity
    return {
        "prompt_id": [str(p) for p in counts.index],
        "n": counts["n"].tolist(),
        "correct": counts["c"].tolist(),
        **{key: diversity[key].reindex(counts.index).tolist() for key in diversity.columns},
        "verification_utility": {
            vid: M.per_prompt_utilities(rows, rows[f"kept_{vid}"].to_numpy(dtype=float))["ver"]
            .reindex(counts.index)
            .tolist()
            for vid in verifier_ids
        },
    }


def confidence_label(metrics: dict) -> str:
    """`95%` for the confidence level the metrics' intervals were made at."""
    level = (metrics.get("ci") or {}).get("confidence", 0.95)
    return f"{level * 100:g}%"


def fmt_ci(m: dict | None, signed: bool = True, digits: int = 3) -> str:
    """`+0.123 [+0.050, +0.200]` for a {value, ci_low, ci_high} dict (n/a where undefined; the value
    alone where the interval is)."""
    if m is None or m.get("value") is None:
        return "n/a"
    spec = f"{'+' if signed else ''}.{digits}f"
    value = format(m["value"], spec)
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return value
    return f"{value} [{format(m['ci_low'], spec)}, {format(m['ci_high'], spec)}]"


GAP_COLUMNS = (
    "verifier",
    "gen utility",
    "ver utility",
    "gap [CI]",
    "relative gap",
    "AUROC",
    "AUROC per prompt",
    "kept",
    "kept precision",
    "unparseable",
    "verify tokens",
)
# What a terminal shows of each table (it fits 200 columns); the run's .md file has every column.
GAP_CONSOLE = (
    "verifier",
    "gen utility",
    "ver utility",
    "gap [CI]",
    "relative gap",
    "AUROC per prompt",
    "kept",
    "kept precision",
)


def gap_cells(vid: str, vm: dict) -> list[str]:
    """One verifier's row of the gap table (GAP_COLUMNS)."""
    return [
        vid,
        fmt_ci(vm["generation_utility"], signed=False),
        fmt_ci(vm["verification_utility"], signed=False),
        fmt_ci(vm["gap"]),
        fmt_ci(vm["relative_gap"]),
        fmt_ci(vm.get("auroc"), signed=False, digits=2),
        fmt_ci(vm.get("auroc_per_prompt"), signed=False, digits=2),
        str(vm.get("kept", "")),
        fmt_ci(vm.get("kept_precision"), signed=False, digits=2),
        str(unparseable(vm)),
        str(vm.get("verification_tokens", "")),
    ]


def gap_markdown(metrics: dict, head: str = "") -> str:
    """The gap table with every column, as markdown (measure_gap's gap_table.md)."""
    return _markdown(GAP_COLUMNS, [gap_cells(v, vm) for v, vm in metrics["verifiers"].items()], head, left=1)


def gap_table(
    metrics: dict, title: str = "generation–verification gap", columns: tuple[str, ...] = GAP_COLUMNS
):
    """A rich Table with one row per verifier; every estimate with its interval; `columns` picks which."""
    level = confidence_label(metrics)
    rows = [gap_cells(vid, vm) for vid, vm in metrics["verifiers"].items()]
    names = [c.replace("[CI]", f"[{level} CI]") for c in GAP_COLUMNS]
    return _rich(title, names, rows, _picked(GAP_COLUMNS, columns), left=1)


def _picked(all_columns: tuple[str, ...], columns: tuple[str, ...]) -> list[int]:
    return [all_columns.index(c) for c in columns]


def _rich(title: str, names: list[str], rows: list[list[str]], keep: list[int], left: int, sections=()):
    """A rich Table of the `keep` columns; cells never wrap: a row is one line. `sections`: the rows
    after which a rule is drawn."""
    from rich.table import Table

    table = Table(title=title)
    for i in keep:
        table.add_column(names[i], justify="left" if i < left else "right", no_wrap=True)
    for n, row in enumerate(rows):
        table.add_row(*[row[i] for i in keep], end_section=n in sections)
    return table


def _markdown(columns: tuple[str, ...], rows: list[list[str]], head: str, left: int) -> str:
    lines = [head, ""] if head else []
    lines += [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def unparseable(vm: dict) -> int:
    """Verifications whose text gave no verdict: the verifier's own count (it sees them under every
    `unparseable` rule), else the abstentions (NaN scores) in its column."""
    return int(vm.get("verification_unparseable", vm.get("unparseable", 0)) or 0)


def _num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


# ---------------------------------------------------------------- a generator × verifier matrix

MATRIX_COLUMNS = (
    "generator",
    "verifier model",
    "gen utility",
    "gap [CI]",
    "relative gap [CI]",
    "AUROC",
    "AUROC per prompt",
    "kept precision",
    "verify tokens",
    "unparseable",
)


def matrix_cells(r: dict) -> list[str]:
    """A cross-verification record (trainer.measure.cross_verify) as the cells of a table row."""
    return [
        r["generator"],
        r["verifier_model"] + (" (self)" if r["self_verification"] else ""),
        fmt_ci(r["generation_utility"], signed=False),
        fmt_ci(r["gap"]),
        fmt_ci(r["relative_gap"]),
        fmt_ci(r["auroc"], signed=False, digits=2),
        fmt_ci(r.get("auroc_per_prompt"), signed=False, digits=2),
        fmt_ci(r["kept_precision"], signed=False, digits=2),
        str(r["verification_tokens"]),
        str(r["unparseable"]),
    ]


MATRIX_CONSOLE = MATRIX_COLUMNS[:5] + ("AUROC per prompt", "kept precision")


def matrix_markdown(records: list[dict], head: str = "") -> str:
    return _markdown(MATRIX_COLUMNS, [matrix_cells(r) for r in records], head, left=2)


def matrix_table(records: list[dict], title: str, columns: tuple[str, ...] = MATRIX_COLUMNS):
    rows = [matrix_cells(r) for r in records]
    return _rich(title, list(MATRIX_COLUMNS), rows, _picked(MATRIX_COLUMNS, columns), left=2)


# ---------------------------------------------------------------- gap against verification compute

COMPUTE_COLUMNS = (
    "filter",
    "k",
    "verify tokens",
    "per sample",
    "gap",
    "Δgap vs first k",
    "relative gap",
    "AUROC",
    "ΔAUROC vs first k",
    "AUROC per prompt",
    "kept",
    "precision",
    "unparseable",
)


def compute_cells(r: dict, base: str) -> list[str]:
    """A verification-compute record (trainer.measure.compute_records) as the cells of a table row;
    `base` is the id of the first k, whose paired differences the other rows carry."""
    return [
        r.get("filter", ""),
        str(r["k"]) if r["k"] is not None else r["verifier"],
        f"{r['verification_tokens']:,}",
        f"{r['tokens_per_generation']:.0f}",
        fmt_ci(r["gap"]),
        fmt_ci(r[f"gap_vs_{base}"]) if f"gap_vs_{base}" in r else "–",
        fmt_ci(r["relative_gap"]),
        fmt_ci(r["auroc"], signed=False, digits=2),
        fmt_ci(r[f"auroc_vs_{base}"], digits=2) if f"auroc_vs_{base}" in r else "–",
        fmt_ci(r["auroc_per_prompt"], signed=False, digits=2),
        str(r["kept"]),
        fmt_ci(r["kept_precision"], signed=False, digits=2),
        str(r["unparseable"]),
    ]


COMPUTE_CONSOLE = (
    "filter",
    "k",
    "verify tokens",
    "gap",
    "Δgap vs first k",
    "AUROC",
    "ΔAUROC vs first k",
    "kept",
)


def compute_markdown(records: list[dict], head: str = "") -> str:
    base = records[0]["verifier"]
    return _markdown(COMPUTE_COLUMNS, [compute_cells(r, base) for r in records], head, left=2)


def compute_table(records: list[dict], title: str, columns: tuple[str, ...] = COMPUTE_COLUMNS):
    base = records[0]["verifier"]
    rows = [compute_cells(r, base) for r in records]
    sections = {
        i for i in range(len(records) - 1) if records[i + 1].get("filter") != records[i].get("filter")
    }
    return _rich(
        title, list(COMPUTE_COLUMNS), rows, _picked(COMPUTE_COLUMNS, columns), left=2, sections=sections
    )


def print_table(table) -> None:
    """A rich table on stdout, at full width when stdout is a file (so rows never wrap there)."""
    from rich.console import Console

    Console(width=None if Console().is_terminal else 250).print(table)
