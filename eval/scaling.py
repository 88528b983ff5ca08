"""The gap's scaling with pretraining compute: relative gap against log10(6·N·D), fitted with a line.

The paper's first finding (Song et al. 2024, §4) is that the relative gap grows with pretraining
compute. For models i with N_i parameters trained on D_i tokens, each measured on the same prompts:

    x_i = log10(6 · N_i · D_i)              pretraining FLOPs, the usual estimate
    y_i = mean over prompts x with J(f)(x) < 1 of (J(f[w])(x) − J(f)(x)) / (1 − J(f)(x))
    y ≈ a + b · x                           least squares (scipy.stats.linregress)

The slope b is the relative gap gained per tenfold compute. Its bootstrap CI resamples prompts within
each model (the prompts a relative gap is defined on, as `relative_gap`'s own CI does) and refits
every resample. A model whose relative gap is undefined (no prompt with J(f) < 1) is left out of the
fit and reported. The interval covers prompt noise only: it says nothing of how the chosen models
stand for their compute, and two models make a line, not a law (`verdict` says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from eval import metrics as M


@dataclass
class ScalingPoint:
    """One model: its name, size, pretraining tokens and its per-prompt relative gaps (NaN: undefined)."""

    name: str
    n_params: float
    tokens: float
    relative_gaps: np.ndarray
    extra: dict = field(default_factory=dict)  # carried into the point's record (gap, AUROC, folder, ...)

    @property
    def compute(self) -> float:
        return 6.0 * self.n_params * self.tokens

    @property
    def defined(self) -> np.ndarray:
        """The relative gaps of the prompts it is defined on (J(f) < 1)."""
        gaps = np.asarray(self.relative_gaps, dtype=float)
        return gaps[np.isfinite(gaps)]


def relative_gaps_per_prompt(per_prompt: dict, verifier: str) -> np.ndarray:
    """Each prompt's relative gap from metrics.json's `per_prompt` records; NaN where J(f)(x) = 1."""
    n = np.asarray(per_prompt["n"], dtype=float)
    gen = np.asarray(per_prompt["correct"], dtype=float) / n
    ver = np.asarray(per_prompt["verification_utility"][verifier], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gen < 1, (ver - gen) / (1 - gen), np.nan)


def fit_scaling(
    points: Sequence[ScalingPoint],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Each model's relative gap (with its CI) and the line through them, with a bootstrap CI on the slope.

    Returns {"points": [...], "fit": {slope, intercept, r_squared, n_points, slope_ci, ...},
    "undefined": [names left out], "verdict": one sentence}, JSON-safe: a number that is undefined
    (the fit of fewer than two usable models, or of models all at one compute) is None.
    """
    boot = M.Bootstrap(n_boot, confidence, seed)  # percentile: each point's interval, as the slope's
    rows = []
    for p in points:
        if p.n_params <= 0 or p.tokens <= 0:
            raise ValueError(f"{p.name}: parameters and tokens must be > 0, got {p.n_params}, {p.tokens}")
        rows.append(
            {
                "name": p.name,
                "n_params": float(p.n_params),
                "pretraining_tokens": float(p.tokens),
                "compute": p.compute,
                "log10_compute": math.log10(p.compute),
                "relative_gap": M.bootstrap_ci(p.defined, **boot),
                "prompts": int(len(p.relative_gaps)),
                "prompts_excluded_relative": int(len(p.relative_gaps) - len(p.defined)),
                **p.extra,
            }
        )
    used = [p for p in points if len(p.defined)]
    x = np.array([math.log10(p.compute) for p in used])
    y = np.array([p.defined.mean() for p in used])
    fit = _line(x, y)
    fit["slope_ci"] = _slope_ci(used, x, fit["slope"], n_boot, confidence, seed)
    fit["n_points"] = len(used)
    fit["confidence"] = confidence
    fit["n_boot"] = n_boot
    undefined = [p.name for p in points if not len(p.defined)]
    return M.json_safe({"points": rows, "fit": fit, "undefined": undefined, "verdict": verdict(fit)})


def _line(x: np.ndarray, y: np.ndarray) -> dict:
    nan = {"slope": math.nan, "intercept": math.nan, "r_squared": math.nan}
    if len(x) < 2 or np.ptp(x) == 0:
        return nan
    from scipy.stats import linregress

    res = linregress(x, y)
    # With two points the line passes through both: r² = 1 says nothing, and is not reported.
    r2 = float(res.rvalue**2) if len(x) > 2 else math.nan
    return {"slope": float(res.slope), "intercept": float(res.intercept), "r_squared": r2}


def _slope_ci(
    used: Sequence[ScalingPoint], x: np.ndarray, slope: float, n_boot: int, confidence: float, seed: int
) -> dict:
    """The slope refitted on `n_boot` resamples of prompts, each model's resampled on its own."""
    if not math.isfinite(slope) or n_boot == 0:
        return {"value": slope, "ci_low": math.nan, "ci_high": math.nan}
    rng = np.random.default_rng(seed)
    # means[b, i]: model i's relative gap on resample b (its defined prompts drawn with replacement)
    means = np.column_stack(
        [p.defined[rng.integers(0, len(p.defined), size=(n_boot, len(p.defined)))].mean(axis=1) for p in used]
    )
    dx = x - x.mean()
    slopes = (means - means.mean(axis=1, keepdims=True)) @ dx / (dx @ dx)  # least squares, every resample
    alpha = 1.0 - confidence
    low, high = np.quantile(slopes, [alpha / 2, 1 - alpha / 2])
    return {"value": slope, "ci_low": float(low), "ci_high": float(high)}


def verdict(fit: dict) -> str:
    """One sentence on what the fit can say, and no more than its points and its interval allow."""
    n, slope, ci = fit["n_points"], fit["slope"], fit["slope_ci"]
    level = f"{fit['confidence'] * 100:g}%"
    if n < 2 or not math.isfinite(slope):
        return (
            f"{n} model{'s' if n != 1 else ''} with a defined relative gap at distinct compute: no line to fit; "
            "list more models."
        )
    line = f"slope {slope:+.3f} per tenfold compute ({level} CI {ci['ci_low']:+.3f} to {ci['ci_high']:+.3f}, prompts resampled)"
    if n == 2:
        return (
            f"Two points make a line, not a law: the {line} is the difference between two models, which "
            "differ in more than compute (family, data, tuning); it is no evidence of a trend."
        )
    if not (math.isfinite(ci["ci_low"]) and math.isfinite(ci["ci_high"])):
        return f"{n} models: {line}; no interval, so no direction is claimed."
    if ci["ci_low"] > 0:
        return f"{n} models: the relative gap grows with pretraining compute, {line}."
    if ci["ci_high"] < 0:
        return f"{n} models: the relative gap shrinks with pretraining compute, {line}."
    return f"{n} models: no trend with pretraining compute that survives its interval; {line}."


def scaling_markdown(result: dict, head: str = "") -> str:
    """The table of models (compute, gap, relative gap with CIs), the fit and its verdict, as markdown."""
    from eval.gap import fmt_ci

    lines = [head, ""] if head else []
    lines += [
        "| model | parameters | pretraining tokens | compute 6ND (FLOPs) | log10 compute | generation utility "
        "| gap [CI] | relative gap [CI] | AUROC | oracle gap (ceiling) | prompts (excluded from relative) |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---|---:|",
    ]
    for p in result["points"]:
        gen = p.get("generation_utility") or {}
        auroc = p.get("auroc") or {}
        lines.append(
            f"| {p['name']} | {_si(p['n_params'])} | {_si(p['pretraining_tokens'])} | {p['compute']:.2e} "
            f"| {p['log10_compute']:.2f} | {fmt_ci(gen, signed=False) if gen else 'n/a'} "
            f"| {fmt_ci(p['gap']) if p.get('gap') else 'n/a'} | {fmt_ci(p['relative_gap'])} "
            f"| {fmt_ci(auroc, signed=False, digits=2) if auroc else 'n/a'} "
            f"| {fmt_ci(p['oracle_gap']) if p.get('oracle_gap') else 'n/a'} "
            f"| {p['prompts']} ({p['prompts_excluded_relative']}) |"
        )
    fit = result["fit"]
    ci = fit["slope_ci"]
    level = f"{fit['confidence'] * 100:g}%"
    lines += [
        "",
        f"Fit over {fit['n_points']} model(s): relative gap = a + b · log10(6ND), a = {_num(fit['intercept'])}, "
        f"b = {_num(fit['slope'])}; slope {level} CI [{_num(ci['ci_low'])}, {_num(ci['ci_high'])}] "
        f"({fit['n_boot']} resamples of each model's prompts)"
        + (f"; R² {fit['r_squared']:.3f}" if fit["r_squared"] is not None else "")
        + ".",
        "",
        f"**{result['verdict']}**",
    ]
    if result["undefined"]:
        lines += [
            "",
            f"Relative gap undefined (every prompt's samples all correct), left out of the fit: "
            f"{', '.join(result['undefined'])}.",
        ]
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.4f}"


def _si(x: float) -> str:
    """12.3M, 2T: parameter and token counts as a reader says them."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= size:
            return f"{x / size:.3g}{unit}"
    return f"{x:g}"


def scaling_table(result: dict, title: str):
    """What a terminal shows of scaling_markdown's table (it fits 200 columns): per model its compute,
    generation utility, gap, relative gap and the oracle's gap."""
    from rich.table import Table

    from eval.gap import fmt_ci

    table = Table(title=title)
    for i, col in enumerate(("model", "log10 6ND", "gen utility", "gap", "relative gap", "oracle gap")):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for p in result["points"]:
        table.add_row(
            p["name"],
            f"{p['log10_compute']:.2f}",
            fmt_ci(p["generation_utility"], signed=False) if p.get("generation_utility") else "n/a",
            fmt_ci(p["gap"]) if p.get("gap") else "n/a",
            fmt_ci(p["relative_gap"]),
            fmt_ci(p["oracle_gap"]) if p.get("oracle_gap") else "n/a",
        )
    return table
