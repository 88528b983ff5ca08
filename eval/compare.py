"""A controlled comparison: the same study under several conditions, side by side.

Every condition evaluates on the same held-out prompts (same task, seed and evaluation sampling), so
differences between conditions are paired over prompts. A condition may be run R times with other
training seeds (`replicates`; replicate r of every condition shares its training seed, so the
replicates are paired too). A difference between a condition and the control then has two sources of
noise, the training run and the held-out prompts, and its interval carries both:

- R = 1: a paired bootstrap over prompts (`paired_difference_ci`): the variance between training runs
  is not in it, and the report says so;
- R >= 2: the prompts and the seeds are two crossed random factors. The variance of the mean
  difference is the between-seed variance of the per-run mean differences over R plus the
  between-prompt variance of the seed-averaged differences over P (the seed × prompt noise is counted
  in both, which errs wide). Each term keeps its own degrees of freedom: the half-width is
  sqrt(t(R − 1)² · seed term + t(P − 1)² · prompt term) (Banerjee's interval for a sum of variance
  estimates with different degrees of freedom, conservative), so where the seeds dominate it is the
  t interval on the seeds' R − 1 degrees of freedom, and where the prompts dominate (round 0: one
  starting model) it is about the prompts' own interval. Satterthwaite's pooled, estimated degrees of
  freedom are anti-conservative with a few seeds, and a bootstrap over three seeds would understate
  the seed term (by a third, with a normal's tails) and call ~20% of null comparisons significant
  where training noise dominates (docs/null_study.md measures both). The p-value is the level at
  which the interval reaches 0.

A verdict ("A beats the control") is made for each condition at each round after round 0 on held-out
accuracy, with Holm's correction over all of them (conditions × rounds): a verdict holds where its
Holm-adjusted p-value is below 1 − confidence. pass@k differences are shown with their intervals and
carry no verdict. Conditions are compared at the rounds every replicate of every condition reached.

    histories = {name: read_replicates(run_dir, name, replicates) for name in conditions}
    write_comparison(run_dir, histories, control="random", title="...")
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.io import write_json, write_text  # noqa: E402
from eval.metrics import bootstrap_ci, count_ci, pass_at_k_per_prompt  # noqa: E402
from eval.report import band, fmt_interval, round_ticks, save_figure  # noqa: E402

# A condition's replicates: each a study history (its rounds' metrics, in order).
Replicates = list[list[dict]]

DIFFERENCE = (-1.0, 1.0)  # the range of a per-prompt difference of proportions
DIVERSITY_KEYS = ("distinct_answers", "distinct_wrong", "answer_entropy", "distinct_1", "distinct_2")


def replicate_dir(out: Path, name: str, r: int) -> Path:
    """The study folder of replicate r of condition `name`: the condition's own folder for r = 0 (so
    a comparison run before replicates existed is replicate 0 of one that asks for more)."""
    return Path(out) / (name if r == 0 else f"{name}_rep{r}")


def read_history(study_dir: Path) -> list[dict]:
    """The rounds a study has finished (its metrics.jsonl), in order; [] before round 0 is done. Each
    training round's record gains `generated_tokens`, the tokens sampled on its train prompts (from
    its generations.parquet: the compute table's)."""
    path = Path(study_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for m in history:
        train = m.get("train") or {}
        samples = Path(study_dir) / f"round_{m.get('round', 0):03d}" / "generations.parquet"
        if train and "generated_tokens" not in train and samples.is_file():
            train["generated_tokens"] = int(pd.read_parquet(samples, columns=["n_tokens"])["n_tokens"].sum())
    return history


def read_replicates(out: Path, name: str, replicates: int) -> Replicates:
    return [read_history(replicate_dir(out, name, r)) for r in range(replicates)]


def matched_rounds(histories: dict[str, Replicates]) -> int:
    """The last round that every replicate of every condition finished (-1 when one has none)."""
    return min((len(h) - 1 for reps in histories.values() for h in reps), default=-1)


# ---------------------------------------------------------------- per-prompt values


def _values(h: dict, key: str) -> dict[str, float]:
    """A round's per-prompt values of `key`: accuracy, gap (the round's primary verifier), pass@k or a
    diversity metric; by prompt id (NaN where undefined)."""
    pp = h["per_prompt"]
    n = np.asarray(pp["n"], dtype=float)
    c = np.asarray(pp["correct"], dtype=float)
    if key == "accuracy":
        v = c / n
    elif key == "gap":
        ver = (pp.get("verification_utility") or {}).get(h.get("primary_verifier"))
        v = np.asarray([np.nan if x is None else x for x in ver], dtype=float) - c / n if ver else c * np.nan
    elif key.startswith("pass@"):
        v = pass_at_k_per_prompt(n.astype(int), c.astype(int), int(key.split("@")[1]))
    else:
        v = np.asarray([np.nan if x is None else x for x in pp.get(key) or [None] * len(n)], dtype=float)
    return dict(zip(pp["prompt_id"], v.tolist()))


def matrix(reps: Replicates, t: int, key: str, prompts: list[str]) -> np.ndarray:
    """Replicates × prompts values of `key` at round t."""
    rows = []
    for h in reps:
        vals = _values(h[t], key)
        rows.append([vals.get(p, np.nan) for p in prompts])
    return np.asarray(rows, dtype=float)


def common_prompts(histories: dict[str, Replicates], t: int) -> list[str]:
    """The prompts every replicate of every condition evaluated at round t."""
    sets = [set(h[t]["per_prompt"]["prompt_id"]) for reps in histories.values() for h in reps]
    return sorted(set.intersection(*sets)) if sets else []


def largest_k(histories: dict[str, Replicates], t: int) -> int:
    """The largest k of pass@k every prompt of every replicate allows at round t (its fewest samples)."""
    return min(min(h[t]["per_prompt"]["n"]) for reps in histories.values() for h in reps)


def _defined(*mats: np.ndarray) -> np.ndarray:
    """Prompts (columns) finite in every replicate of every matrix."""
    ok = np.ones(mats[0].shape[1], dtype=bool)
    for m in mats:
        ok &= np.isfinite(m).all(axis=0)
    return ok


# ---------------------------------------------------------------- intervals


def replicated_mean(
    values: np.ndarray,
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    proportion: bool = False,
    bounds: tuple[float, float] | None = None,
) -> dict:
    """The mean of replicates × prompts `values` with its interval (the module docstring's rule: a
    bootstrap over prompts for one replicate, variance components and t for several; where nothing
    varies, `count_ci`'s from the prompts, for a `proportion` or values within `bounds`), the number
    of prompts and replicates it stands on, and the between-seed spread (SD of the replicates' means)."""
    values = values[:, _defined(values)]
    r, p = values.shape
    out = {"replicates": int(r), "prompts": int(p), "seed_sd": None}
    if p == 0:
        return {**out, "value": None, "ci_low": None, "ci_high": None}
    if r == 1:
        ci = bootstrap_ci(values[0], n_boot, confidence, seed, proportion=proportion, bounds=bounds)
        return {**out, **_none_nan(ci)}
    value, terms = _components(values)
    out["seed_sd"] = float(values.mean(axis=1).std(ddof=1))
    if not any(v for v, _ in terms):
        return {**out, **_none_nan(count_ci(value, p, confidence, proportion, bounds))}
    half = _half_width(terms, confidence)
    return {**out, "value": value, "ci_low": value - half, "ci_high": value + half}


def replicated_difference(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> dict:
    """mean(a) − mean(b) of two replicates × prompts matrices on the same prompts (replicate r of both
    shares its training seed), with its interval, a two-sided p-value against 0 and the between-seed
    spread of the difference (the module docstring says how)."""
    if a.shape != b.shape:
        raise ValueError(f"replicated_difference: {a.shape} and {b.shape} values are not paired")
    d = a - b
    d = d[:, _defined(d)]
    r, p = d.shape
    out = {"replicates": int(r), "prompts": int(p), "seed_sd": None}
    if p == 0:
        return {**out, "value": None, "ci_low": None, "ci_high": None, "p": None}
    if r == 1:
        return {**out, **_bootstrap_difference(d[0], confidence, n_boot, seed)}
    value, terms = _components(d)
    out["seed_sd"] = float(d.mean(axis=1).std(ddof=1))
    if not any(v for v, _ in terms):  # every run and prompt differs by the same amount (round 0)
        return {
            **out,
            **_none_nan(count_ci(value, p, confidence, bounds=DIFFERENCE)),
            "p": _p_constant(value),
        }
    half = _half_width(terms, confidence)
    pvalue = _p_banerjee(value, terms)
    return {**out, "value": value, "ci_low": value - half, "ci_high": value + half, "p": pvalue}


def _components(values: np.ndarray) -> tuple[float, list[tuple[float, int]]]:
    """The mean of replicates × prompts values with seeds and prompts as crossed random factors, and
    its variance as two terms, each with its degrees of freedom: the seeds' (R − 1) and the prompts'
    (P − 1). Pooling them into one t with Satterthwaite's estimated degrees of freedom called ~12%
    of null comparisons significant at 5% with three seeds (docs/null_study.md)."""
    r, p = values.shape
    v_seed = values.mean(axis=1).var(ddof=1) / r
    v_prompt = values.mean(axis=0).var(ddof=1) / p if p > 1 else 0.0
    return float(values.mean()), [(float(v_seed), r - 1), (float(v_prompt), max(p - 1, 1))]


def _half_width(terms: list[tuple[float, int]], confidence: float) -> float:
    """Banerjee's half-width: sqrt(sum of t(df)² · variance term)."""
    return math.sqrt(sum(_t(df, confidence) ** 2 * v for v, df in terms))


def _p_banerjee(value: float, terms: list[tuple[float, int]]) -> float:
    """The two-sided p-value that goes with `_half_width`: one minus the confidence at which the
    interval's end reaches 0 (the half-width shrinks as the confidence falls)."""
    from scipy.optimize import brentq

    if value == 0:
        return 1.0
    gap = lambda conf: _half_width(terms, conf) - abs(value)  # noqa: E731
    if gap(1 - 1e-12) <= 0:
        return 1e-12
    if gap(1e-12) >= 0:
        return 1.0
    return float(1 - brentq(gap, 1e-12, 1 - 1e-12, xtol=1e-12))


def _t(df: float, confidence: float) -> float:
    from scipy.stats import t as student

    return float(student.ppf(0.5 + confidence / 2, df))


def _bootstrap_difference(d: np.ndarray, confidence: float, n_boot: int, seed: int) -> dict:
    """A paired bootstrap over prompts of one run's differences: the interval of
    `paired_difference_ci` and the two-sided p-value of the same resamples."""
    value = float(d.mean())
    if n_boot == 0 or len(d) < 2:
        return {"value": value, "ci_low": None, "ci_high": None, "p": None}
    if np.all(d == d[0]):
        return {**_none_nan(count_ci(value, len(d), confidence, bounds=DIFFERENCE)), "p": _p_constant(value)}
    from scipy.stats import bootstrap

    res = bootstrap(
        (d,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    draws = res.bootstrap_distribution
    tail = min((draws <= 0).sum(), (draws >= 0).sum())
    pvalue = min(1.0, 2 * (tail + 1) / (len(draws) + 1))
    low, high = res.confidence_interval
    return {"value": value, "ci_low": float(low), "ci_high": float(high), "p": float(pvalue)}


def _p_constant(value: float) -> float:
    """The p-value of a difference that is the same for every prompt and run: none where it is 0."""
    return 1.0 if value == 0 else 0.0


def _none_nan(m: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of `pvalues` (None: no test, left out of the family)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(tested), [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# ---------------------------------------------------------------- the comparison


def differences(
    histories: dict[str, Replicates],
    control: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    controls: dict[str, str] | None = None,
) -> list[dict]:
    """Each condition's held-out accuracy and pass@k (largest k) minus its control's (`controls[name]`,
    else `control`, which itself is compared with nothing), round by round up to the rounds all
    reached, paired over prompts (and seeds); accuracy after round 0 with Holm-adjusted p-values over
    every condition and round (`p_holm`, `family`)."""
    records = []
    last = matched_rounds(histories)
    others = [name for name in histories if name != control]
    for name in others:
        ref = (controls or {}).get(name, control)
        if ref not in histories or ref == name:
            continue
        pair = {name: histories[name], ref: histories[ref]}
        for t in range(last + 1):
            prompts = common_prompts(pair, t)
            kmax = largest_k(pair, t)
            row = {"condition": name, "control": ref, "round": t, "prompts": len(prompts)}
            for key in ("accuracy", f"pass@{kmax}"):
                a = matrix(histories[name], t, key, prompts)
                b = matrix(histories[ref], t, key, prompts)
                row[key] = replicated_difference(a, b, confidence, n_boot, seed)
            records.append(row)
    family = [d for d in records if d["round"] > 0]
    for d, p in zip(family, holm([d["accuracy"]["p"] for d in family])):
        d["accuracy"]["p_holm"] = p
        d["accuracy"]["family"] = len(family)
    return records


def verdict(d: dict, name: str, control: str, confidence: float = 0.95) -> str:
    """One sentence on a round's accuracy difference, a finding only where its Holm-adjusted p-value is
    below 1 − confidence."""
    m = d["accuracy"]
    shown = f"{m['value']:+.3f}"
    if m.get("ci_low") is not None:
        shown += f" [{confidence * 100:g}% CI {m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"
    adjusted = m.get("p_holm")
    where = f"on held-out accuracy after round {d['round']}"
    if adjusted is None:
        return f"{name} and {control} {where}: {shown} (no test)."
    holm_text = f"Holm-adjusted p {_p(adjusted, '= ')} over {m['family']} comparison{'s' * (m['family'] > 1)}"
    if adjusted < 1 - confidence:
        word = "beats" if m["value"] > 0 else "is worse than"
        return f"{name} {word} {control} {where}: {shown}, {holm_text}."
    excludes = m.get("ci_low") is not None and (m["ci_low"] > 0 or m["ci_high"] < 0)
    why = " (its interval excludes 0, but not after the correction)" if excludes else ""
    return f"{name} and {control} cannot be told apart {where}: {shown}, {holm_text}{why}."


def _p(p: float, equals: str = "") -> str:
    return f"{equals}{p:.3f}" if p >= 0.001 else "< 0.001"


def condition_value(reps: Replicates, t: int, key: str, confidence: float, n_boot: int, seed: int) -> dict:
    """A condition's `key` at round t over its replicates, on the prompts all of them evaluated."""
    prompts = common_prompts({"c": reps}, t)
    proportion = key == "accuracy" or key.startswith("pass@")
    bounds = {"gap": DIFFERENCE, "distinct_wrong": (0.0, 1.0)}.get(key)
    return replicated_mean(matrix(reps, t, key, prompts), confidence, n_boot, seed, proportion, bounds)


def plot_conditions(
    histories: dict[str, Replicates],
    plots: Path,
    control: str,
    diffs: list[dict],
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Path]:
    """Accuracy, its paired difference from the control (`diffs`) and the gap by round, the last
    matched round's pass@k curves and diversity by round, one line per condition (the mean over its
    replicates), each with its interval."""
    conf = f"{confidence * 100:g}%"
    last = matched_rounds(histories)
    rounds = list(range(last + 1))
    reps_note = _replicates_note(histories)

    def series(reps, key):
        return [condition_value(reps, t, key, confidence, n_boot, seed) for t in rounds]

    paths = []
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(14, 3.8))
    colors = {name: f"C{i}" for i, name in enumerate(histories)}
    for name, reps in histories.items():
        band(ax1, rounds, series(reps, "accuracy"), name, color=colors[name])
        band(ax2, rounds, series(reps, "gap"), name, color=colors[name])
    for name in histories:
        mine = [d for d in diffs if d["condition"] == name]
        if mine:
            band(ax3, [d["round"] for d in mine], [d["accuracy"] for d in mine], name, color=colors[name])
    ax1.set(xlabel="round", ylabel="held-out accuracy", title=f"Accuracy by condition ({conf} CI{reps_note})")
    ax3.axhline(0, color="grey", lw=0.8)
    against = control if all(d["control"] == control for d in diffs) else "its control"
    ax3.set(xlabel="round", title=f"Accuracy − {against}, paired ({conf} CI)")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xlabel="round", title=f"Gap of each condition's verifier ({conf} CI)")
    legends(fig, [ax1, ax3, ax2], len(histories))
    for ax in (ax1, ax3, ax2):
        round_ticks(ax, rounds)
    paths.append(plots / "compare_accuracy_gap.png")
    save_figure(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    from eval.metrics import default_ks

    ks = default_ks(largest_k(histories, last))
    for i, (name, reps) in enumerate(histories.items()):
        pts = [condition_value(reps, last, f"pass@{k}", confidence, n_boot, seed) for k in ks]
        vals = np.array([_nan(p["value"]) for p in pts])
        lo = np.array([_nan(p["ci_low"]) for p in pts])
        hi = np.array([_nan(p["ci_high"]) for p in pts])
        shift = 1 + 0.03 * (i - (len(histories) - 1) / 2)
        ax.errorbar(
            [k * shift for k in ks], vals, yerr=[vals - lo, hi - vals], marker="o", capsize=2, label=name
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set(xlabel="k", ylabel="held-out pass@k", title=f"pass@k after round {last} ({conf} CI)")
    legends(fig, [ax], len(histories))
    paths.append(plots / "compare_pass_at_k.png")
    save_figure(fig, paths[-1])

    keys = [
        k for k in DIVERSITY_KEYS if any(k in h[0]["per_prompt"] for reps in histories.values() for h in reps)
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        for name, reps in histories.items():
            band(ax, rounds, series(reps, key), name)
        ax.set(xlabel="round", title=key.replace("_", " "))
        round_ticks(ax, rounds)
    legends(fig, list(np.atleast_1d(axes))[:1], len(histories), fontsize=7)
    fig.suptitle(f"Diversity of held-out samples by condition ({conf} CI)")
    paths.append(plots / "compare_diversity.png")
    save_figure(fig, paths[-1])
    return paths


# More conditions than this share one legend beside the panels: one inside each would cover the lines.
LEGEND_INSIDE_AT_MOST = 5


def legends(fig, axes: list, n_conditions: int, fontsize: int = 8) -> None:
    """A legend in each of `axes`, or, past `LEGEND_INSIDE_AT_MOST` conditions, one to the figure's right."""
    if n_conditions <= LEGEND_INSIDE_AT_MOST:
        for ax in axes:
            ax.legend(fontsize=fontsize)
        return
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=fontsize, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def _replicates_note(histories: dict[str, Replicates]) -> str:
    r = min(len(reps) for reps in histories.values())
    return f"; {r} training seeds each" if r > 1 else ""


def comparison_rows(
    histories: dict[str, Replicates], confidence: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> list[dict[str, str]]:
    """condition × round (to the matched round): held-out accuracy with its interval and the spread
    between seeds, the gap, pass@k, diversity, what the filter kept."""
    last = matched_rounds(histories)
    rows = []
    for name, reps in histories.items():
        for t in range(last + 1):
            kmax = largest_k({name: reps}, t)

            def value(key, reps=reps, t=t):
                return condition_value(reps, t, key, confidence, n_boot, seed)

            acc = value("accuracy")
            trains = [h[t].get("train") or {} for h in reps]
            kept = [x.get("kept") for x in trains if x.get("kept") is not None]
            sampled = [x.get("sampled") for x in trains if x.get("sampled") is not None]
            row = {
                "condition": name,
                "round": str(t),
                "accuracy": fmt_interval(acc),
                "seed SD": "–" if acc["seed_sd"] is None else f"{acc['seed_sd']:.3f}",
                "gap of its verifier": fmt_interval(value("gap"), "+.3f"),
                f"pass@{kmax}": fmt_interval(value(f"pass@{kmax}")),
                "distinct answers": fmt_interval(value("distinct_answers"), ".2f"),
                "distinct wrong": fmt_interval(value("distinct_wrong"), ".2f"),
                "kept / sampled": f"{_mean_text(kept)} / {_mean_text(sampled)}",
            }
            if len(reps) == 1:
                row["kept precision"] = fmt_interval(trains[0].get("kept_precision"))
            rows.append(row)
    return rows


# A round's training-side compute: what its stages spent on the train prompts (the held-out
# evaluation, alike for every condition, is left out).
COMPUTE = ("seconds", "tokens generated", "tokens verified", "tokens trained")


def round_compute(m: dict) -> dict[str, float]:
    """Round `m`'s compute (`COMPUTE`): seconds of every stage but the evaluation; tokens sampled on
    the train prompts plus an online rule's rollouts; tokens the verifiers read; tokens the update
    trained on (prompt and completion)."""
    train = m.get("train") or {}
    rule = train.get("rule", "sft")
    return {
        "seconds": sum(v for k, v in (m.get("seconds") or {}).items() if k != "evaluate" and v),
        "tokens generated": (train.get("generated_tokens") or 0)
        + (train.get(f"{rule}_tokens_generated") or 0),
        "tokens verified": train.get("verification_tokens") or 0,
        "tokens trained": train.get(f"{rule}_train_tokens", train.get(f"{rule}_tokens")) or 0,
    }


def compute_rows(histories: dict[str, Replicates]) -> list[dict]:
    """condition × training round (1 to the matched round): held-out accuracy (the mean over
    replicates) and the compute spent to reach that round (`round_compute` summed over rounds 1..t,
    the mean over replicates)."""
    last = matched_rounds(histories)
    rows = []
    for name, reps in histories.items():
        totals = [dict.fromkeys(COMPUTE, 0.0) for _ in reps]
        for t in range(1, last + 1):
            for total, h in zip(totals, reps):
                for key, value in round_compute(h[t]).items():
                    total[key] += value
            acc = [h[t]["generation_utility"]["value"] for h in reps]
            row = {"condition": name, "round": t, "accuracy": sum(acc) / len(acc)}
            row.update({key: sum(total[key] for total in totals) / len(totals) for key in COMPUTE})
            rows.append(row)
    return rows


def compute_table(rows: list[dict]) -> list[str]:
    """`compute_rows` as markdown: seconds as such, tokens in thousands."""
    lines = [
        "| condition | round | accuracy | seconds | tokens generated (k) | tokens verified (k) | tokens trained (k) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        tokens = " | ".join(f"{r[k] / 1000:,.1f}" for k in COMPUTE[1:])
        lines.append(
            f"| {r['condition']} | {r['round']} | {r['accuracy']:.3f} | {r['seconds']:,.0f} | {tokens} |"
        )
    return lines


def _mean_text(xs: list) -> str:
    if not xs:
        return "–"
    m = sum(xs) / len(xs)
    return f"{m:.0f}" if m == int(m) else f"{m:.1f}"


def study_notes(histories: dict[str, Replicates]) -> list[str]:
    """Which condition (replicate) stopped before the others and why, and the stopping rules that fired
    in each condition (recorded; a comparison runs every round unless a condition says otherwise)."""
    lines = []
    last = matched_rounds(histories)
    for name, reps in histories.items():
        for r, h in enumerate(reps):
            label = name if len(reps) == 1 else f"{name} (replicate {r})"
            fired = [
                f"the {rule.replace('_', ' ')} rule at round {m['round']}"
                for m in h
                for rule, v in (m.get("saturation") or {}).items()
                if v.get("fired")
            ]
            if fired:
                lines.append(f"- {label}: fired {', '.join(fired)}.")
            if h and h[-1].get("stop"):
                lines.append(f"- {label} stopped after round {h[-1]['round']}: {h[-1]['stop']}")
    if any(len(h) - 1 > last for reps in histories.values() for h in reps):
        lines.append(f"- Conditions are compared up to round {last}, the last round every replicate reached.")
    return lines


def write_comparison(
    out: Path,
    histories: dict[str, Replicates],
    control: str,
    title: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    controls: dict[str, str] | None = None,
) -> Path:
    """comparison.md, comparison.json and plots/compare_*.png in `out` (`controls`: a condition's own
    control where it is not `control`)."""
    out = Path(out)
    histories = {name: [h for h in reps if h] for name, reps in histories.items()}
    histories = {name: reps for name, reps in histories.items() if reps}
    conf = f"{confidence * 100:g}%"
    diffs = differences(histories, control, n_boot, confidence, seed, controls)
    plots = plot_conditions(histories, out / "plots", control, diffs, confidence, n_boot, seed)
    rows = comparison_rows(histories, confidence, n_boot, seed)
    replicates = min(len(reps) for reps in histories.values())
    lines = [f"# {title}", ""]
    last = {}
    for d in diffs:
        last[d["condition"]] = d  # rounds come in order: the last one stays
    family = next((d["accuracy"]["family"] for d in diffs if "family" in d["accuracy"]), 0)
    if last:
        single = all(d["control"] == control for d in diffs)
        head = f"the {control} control" if single else "each condition's control"
        lines += [f"**Against {head}** (paired over the same held-out prompts):", ""]
        lines += [f"- {verdict(d, name, d['control'], confidence)}" for name, d in last.items()]
        lines.append("")
    if replicates == 1:
        lines += [
            "_Each condition is one training run (`replicates: 1`): the intervals resample the held-out "
            "prompts only and leave out the variance between training runs, which can reverse a "
            "verdict. Run `replicates: 3` or more before citing one._",
            "",
        ]
    else:
        lines += [
            f"_Each condition is {replicates} training runs (seeds) on the same held-out prompts; intervals "
            "carry the variance between seeds and between prompts, each term with its own degrees of "
            "freedom (seeds R − 1, prompts P − 1; Banerjee's interval); `seed SD` is the spread of the "
            "runs' accuracies._",
            "",
        ]
    if family:
        lines += [
            f"_Verdicts: Holm's correction over the {family} accuracy comparisons after round 0 "
            f"(conditions × rounds); a verdict holds where the adjusted p-value is below {1 - confidence:.2g}. "
            "pass@k differences are shown uncorrected and carry no verdict._",
            "",
        ]
    notes = study_notes(histories)
    if notes:
        lines += ["Stopping rules and stops:", "", *notes, ""]
    header = list(rows[0])
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r.get(c, "–") for c in header) + " |" for r in rows]
    if diffs:
        keys = [k for k in diffs[0] if "@" in k]
        lines += [
            "",
            f"Difference from the control, round by round ({conf} CI; paired over the prompts counted):",
            "",
            "| condition | control | round | prompts | accuracy − control | Holm-adjusted p | "
            + " | ".join(f"{k} − control" for k in keys)
            + " |",
            "|---|---|---:|---:|---|---:|" + "---|" * len(keys),
        ]
        for d in diffs:
            adjusted = d["accuracy"].get("p_holm")
            cells = [fmt_interval(d["accuracy"], "+.3f"), "–" if adjusted is None else _p(adjusted)]
            cells += [fmt_interval(d[k], "+.3f") for k in keys]
            lines.append(
                f"| {d['condition']} | {d['control']} | {d['round']} | {d['prompts']} | "
                + " | ".join(cells)
                + " |"
            )
    compute = compute_rows(histories)
    lines += (
        []
        if not compute
        else [
            "",
            "Compute to reach each round, the mean over replicates: seconds of sampling, verifying and "
            "updating on the train prompts (an online rule's rollouts in its update), the tokens generated "
            "there, read by the verifiers and trained on; the held-out evaluation, alike for every condition, "
            "is left out. Accuracy here is the mean of the replicates' held-out accuracies:",
            "",
            *compute_table(compute),
        ]
    )
    lines += [""] + [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    write_json(
        out / "comparison.json",
        {
            "control": control,
            "replicates": replicates,
            "differences": diffs,
            "rows": rows,
            "compute": compute,
            "notes": notes,
        },
    )
    return write_text(out / "comparison.md", "\n".join(lines))
