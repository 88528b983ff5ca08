"""Figures of one measurement: heatmaps of the correlation between verification strategies' scores and
of the cross-verification gap, the gap against verification compute, and the relative gap against
pretraining compute."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.io import atomic_write  # noqa: E402


def _label(name: str) -> str:
    return name[len("score_") :] if name.startswith("score_") else name


def _heatmap(
    ax, matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], texts, vmin, vmax, cmap, title
):
    masked = np.ma.masked_invalid(matrix)
    cm = plt.get_cmap(cmap).copy()
    cm.set_bad("#dddddd")
    im = ax.imshow(masked, cmap=cm, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = matrix[i, j]
            dark = np.isfinite(v) and abs(v - (vmin + vmax) / 2) > 0.35 * (vmax - vmin)
            ax.text(
                j, i, texts[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black"
            )
    ax.set_title(title, fontsize=10)
    return im


def plot_score_correlation(correlations: dict[str, dict[str, dict[str, float | None]]], path: Path) -> Path:
    """Pearson and Spearman correlation matrices of the verifiers' scores side by side (grey: undefined,
    e.g. a verifier whose scores are all equal). `correlations` is metrics.json's `score_correlations`."""
    methods = [m for m in ("pearson", "spearman") if m in correlations]
    if not methods:
        raise ValueError("plot_score_correlation: no pearson or spearman matrix given")
    names = list(correlations[methods[0]])
    labels = [_label(n) for n in names]
    size = max(3.2, 0.55 * len(names) + 1.8)
    fig, axes = plt.subplots(1, len(methods), figsize=(size * len(methods) + 0.8, size))
    axes = np.atleast_1d(axes)
    im = None
    for ax, method in zip(axes, methods):
        table = correlations[method]
        matrix = np.array([[_float(table[a].get(b)) for b in names] for a in names])
        texts = [["n/a" if not np.isfinite(v) else f"{v:+.2f}" for v in row] for row in matrix]
        im = _heatmap(ax, matrix, labels, labels, texts, -1.0, 1.0, "RdBu_r", method.capitalize())
        if ax is not axes[0]:
            ax.tick_params(labelleft=False)  # the same names as the first panel's rows
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    fig.suptitle("Correlation between verification scores", fontsize=11)
    return _save(fig, path, tight=False)


def plot_cross_verify(
    records: list[dict],
    generators: Sequence[str],
    verifiers: Sequence[str],
    path: Path,
    keys: Sequence[str] = ("gap", "relative_gap"),
) -> Path:
    """Generator × verifier heatmaps of `keys` (each a {value, ci_low, ci_high} in the records, one record
    per pair with `generator` and `verifier_model`), annotated with the value and its CI."""
    index = {(r["generator"], r["verifier_model"]): r for r in records}
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(max(3.5, 1.6 * len(verifiers) + 2) * len(keys), max(2.6, 0.9 * len(generators) + 1.6)),
    )
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        matrix = np.full((len(generators), len(verifiers)), np.nan)
        texts = [["n/a"] * len(verifiers) for _ in generators]
        for i, g in enumerate(generators):
            for j, v in enumerate(verifiers):
                m = (index.get((g, v)) or {}).get(key) or {}
                value = _float(m.get("value"))
                matrix[i, j] = value
                if np.isfinite(value):
                    lo, hi = _float(m.get("ci_low")), _float(m.get("ci_high"))
                    ci = f"\n[{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) and np.isfinite(hi) else ""
                    texts[i][j] = f"{value:+.3f}{ci}"
        finite = matrix[np.isfinite(matrix)]
        bound = max(float(np.abs(finite).max()) if finite.size else 0.0, 1e-3)
        im = _heatmap(ax, matrix, generators, verifiers, texts, -bound, bound, "RdBu", key.replace("_", " "))
        ax.set_xlabel("verifier model", fontsize=9)
        ax.set_ylabel("generator model", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("Cross-verification: generation–verification gap", fontsize=11)
    return _save(fig, path)


def _tokens(n: float) -> str:
    """A token count as a tick label: 215k, 1.72M."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def plot_verify_compute(records: list[dict], path: Path) -> Path:
    """The gap against k, the verifications averaged per sample, and against the tokens they cost, a
    line per filter; AUROC (pooled and per prompt, the same under every filter) against k. Error bars
    are the records' CIs; the oracle's gap, where the records hold it, is the dashed ceiling.
    `records` are trainer.measure.verify_compute's: one per (filter, k), the oracle's with k None."""
    filters = list(dict.fromkeys(r.get("filter", "") for r in records))
    ks = {f: [r for r in records if r.get("filter", "") == f and r["k"] is not None] for f in filters}
    ceiling = next((r for r in records if r["k"] is None), None)
    first = ks[filters[0]]
    x = [r["k"] for r in first]
    tokens = [r["verification_tokens"] for r in first]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))

    def line(ax, xs, rs, key, j, n, label):
        points = [r.get(key) or {} for r in rs]
        vals = np.array([_float(p.get("value")) for p in points])
        low = np.array([_float(p.get("ci_low")) for p in points])
        high = np.array([_float(p.get("ci_high")) for p in points])
        err = np.nan_to_num(np.vstack([vals - low, high - vals]))
        shift = [v * (1 + 0.04 * (j - (n - 1) / 2)) for v in xs]  # side by side at each x
        ax.errorbar(shift, vals, yerr=err, marker="o", capsize=3, label=label)

    for j, f in enumerate(filters):
        label = "gap, filter " + re.sub(r"([a-z])([\d.])", r"\1 \2", f, count=1)  # "threshold 0.5"
        line(axes[0], x, ks[f], "gap", j, len(filters), label)
        line(axes[1], tokens, ks[f], "gap", j, len(filters), label)
    for j, key in enumerate(("auroc", "auroc_per_prompt")):
        line(axes[2], x, first, key, j, 2, key.replace("_", " "))
    for r, t in zip(first, tokens):
        axes[1].annotate(
            f"k={r['k']}",
            (t, _float((r.get("gap") or {}).get("value"))),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    for ax, xs, xlabel, ylabel in (
        (axes[0], x, "verifications averaged per sample (k)", "gap"),
        (axes[1], tokens, "verification tokens (all samples)", "gap"),
        (axes[2], x, "verifications averaged per sample (k)", "AUROC"),
    ):
        if ceiling is not None and ylabel == "gap":
            ax.axhline(
                _float((ceiling.get("gap") or {}).get("value")),
                ls="--",
                lw=1,
                color="grey",
                label="oracle (the ceiling)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(k) for k in x] if ax is not axes[1] else [_tokens(t) for t in xs])
        ax.minorticks_off()
        ax.axhline(0.5 if ylabel == "AUROC" else 0.0, color="grey", lw=0.8)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=7)
    axes[0].set_title("Gap against verifications per sample", fontsize=10)
    axes[1].set_title("Gap against verification tokens", fontsize=10)
    axes[2].set_title("AUROC against verifications per sample", fontsize=10)
    fig.suptitle(
        "Verification compute: k sampled verdicts averaged (error bars: bootstrap CIs over prompts)",
        fontsize=11,
    )
    return _save(fig, path)


def plot_scaling(result: dict, path: Path) -> Path:
    """Each model's relative gap (with its CI as an error bar) against log10(6·N·D), the fitted line with
    the band of slopes in the slope's CI (pivoting on the points' centre), and the verdict below.
    `result` is `eval.scaling.fit_scaling`'s."""
    points = [p for p in result["points"] if np.isfinite(_float(p["relative_gap"]["value"]))]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.axhline(0.0, color="#999999", lw=0.8, zorder=0)
    for p in points:
        rg = p["relative_gap"]
        y, lo, hi = _float(rg["value"]), _float(rg["ci_low"]), _float(rg["ci_high"])
        err = [[y - lo], [hi - y]] if np.isfinite(lo) and np.isfinite(hi) else None
        ax.errorbar(p["log10_compute"], y, yerr=err, fmt="o", color="C0", capsize=4, ms=6, zorder=3)
        ax.annotate(p["name"], (p["log10_compute"], y), textcoords="offset points", xytext=(7, 5), fontsize=8)
    fit = result["fit"]
    slope, intercept = _float(fit["slope"]), _float(fit["intercept"])
    if np.isfinite(slope) and points:
        xs = np.array([p["log10_compute"] for p in points])
        pad = max(0.2, 0.1 * float(np.ptp(xs)))
        grid = np.linspace(xs.min() - pad, xs.max() + pad, 50)
        ax.set_xlim(grid[0], grid[-1] + 1.5 * pad)  # room for the last point's name
        ci = fit["slope_ci"]
        level = f"{_float(fit['confidence']) * 100:g}%"
        ax.plot(
            grid, intercept + slope * grid, color="C3", lw=1.5, label=f"fit: slope {slope:+.3f} per decade"
        )
        lo, hi = _float(ci["ci_low"]), _float(ci["ci_high"])
        if np.isfinite(lo) and np.isfinite(hi):
            x0 = float(xs.mean())
            y0 = intercept + slope * x0
            band = np.array([y0 + s * (grid - x0) for s in (lo, hi)])
            ax.fill_between(
                grid,
                band.min(axis=0),
                band.max(axis=0),
                color="C3",
                alpha=0.12,
                label=f"slopes in the {level} CI [{lo:+.3f}, {hi:+.3f}]",
            )
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("pretraining compute, log10(6 · N · D) FLOPs", fontsize=9)
    ax.set_ylabel("relative gap (error bars: CI over prompts)", fontsize=9)
    ax.set_title("Relative generation–verification gap against pretraining compute", fontsize=10)
    undefined = result.get("undefined") or []
    note = result["verdict"] + (f" Undefined (left out): {', '.join(undefined)}." if undefined else "")
    fig.text(0.01, -0.02, _wrap(note, 105), fontsize=7.5, va="top", ha="left")
    return _save(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _float(x) -> float:
    try:
        return float("nan") if x is None else float(x)
    except (TypeError, ValueError):
        return float("nan")


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png", bbox_inches="tight"))
    plt.close(fig)
    return Path(path)
