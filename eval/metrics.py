"""Metrics of a round: generation and verification utility, the gap, pass@k, maj@k, verifier quality,
diversity, each headline number with a bootstrap confidence interval over prompts.

The input is the generation table (one row per prompt and sample) with columns `prompt_id`,
`sample_idx`, `answer` (None when nothing was extracted), `correct` (bool), verifier scores
`score_<name>` (NaN = abstention) and optionally `completion`. Filter weights are a numpy array aligned
with the rows. Definitions: docs/definitions.md (the tie rules, intervals and edge cases too):

    J(f)(x)    = mean_i c_i                                   generation utility of prompt x
    J(f[w])(x) = Σ w_i c_i / Σ w_i   (= J(f)(x) if Σ w_i = 0)  verification utility of prompt x
    gap        = mean_x [J(f[w])(x) − J(f)(x)]
    rel. gap   = mean_x [(J(f[w])(x) − J(f)(x)) / (1 − J(f)(x))]  over prompts with J(f)(x) < 1

Rare correct answers: `rare_answer_recall` is the filter's recall on correct samples bucketed by how
common their answer is among the prompt's samples (`ANSWER_SHARE_BUCKETS`), `kept_answer_entropy` the
answer entropy of what it keeps against what was sampled.

Uncertainty: every headline number is `{value, ci_low, ci_high}`, a percentile bootstrap over prompts
(`scipy.stats.bootstrap`; `method="BCa"` on request). Resamples are drawn from the same seed for every
number of a round, so the prompts resampled together are the same for all of them (paired); a
statistic that is not a mean of per-prompt values (pooled AUROC, kept precision) is recomputed on the
rows of each resample's prompts. With fewer than two prompts there is no interval (NaN bounds).

Results hold floats with NaN for "undefined"; `json_safe` turns them into JSON-ready values (None).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

CI_METHODS = ("percentile", "bca")


# ---------------------------------------------------------------- pass@k and maj@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples of which c are correct: 1 − C(n−c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if c == 0:
        return 0.0
    if n - c < k:
        return 1.0
    # C(n−c, k) / C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)   (Chen et al. 2021)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: n samples and c correct."""
    correct = df["correct"].to_numpy().astype(bool)
    return (
        pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy(), "c": correct})
        .groupby("prompt_id", sort=True)["c"]
        .agg(n="size", c="sum")
    )


def default_ks(n: int) -> list[int]:
    """1, 2, 4, …, up to n, with n itself included."""
    ks = [1 << i for i in range(max(n, 1).bit_length()) if 1 << i <= n]
    return ks + [n] if n >= 1 and ks[-1] != n else ks


def pass_at_k_per_prompt(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """pass@k of each prompt from its sample count n and correct count c."""
    cache: dict[tuple[int, int], float] = {}  # prompts share few distinct (n, c) pairs
    out = np.empty(len(n))
    for i, pair in enumerate(zip(np.asarray(n, dtype=int).tolist(), np.asarray(c, dtype=int).tolist())):
        if pair not in cache:
            cache[pair] = pass_at_k(pair[0], pair[1], k)
        out[i] = cache[pair]
    return out


def pass_at_k_curve(df: pd.DataFrame, ks: Iterable[int] | None = None) -> dict[int, float]:
    """pass@k averaged over prompts for each k (default 1, 2, 4, …, n; n = fewest samples of a prompt)."""
    counts = _counts(df)
    if counts.empty:
        return {}
    ks = default_ks(int(counts["n"].min())) if ks is None else [int(k) for k in ks]
    n, c = counts["n"].to_numpy(), counts["c"].to_numpy()
    return {k: float(pass_at_k_per_prompt(n, c, k).mean()) for k in ks}


def _first_k(df: pd.DataFrame, k: int | None) -> pd.DataFrame:
    """The first k samples of each prompt by sample_idx (all of them when k is None)."""
    rows = pd.DataFrame(
        {
            "prompt_id": df["prompt_id"].to_numpy(),
            "sample_idx": df["sample_idx"].to_numpy(),
            "answer": df["answer"].to_numpy(dtype=object),
            "correct": df["correct"].to_numpy().astype(bool),
        }
    ).sort_values(["prompt_id", "sample_idx"], kind="stable")
    rows["pos"] = rows.groupby("prompt_id", sort=False).cumcount()
    if k is None:
        return rows
    smallest = int(rows.groupby("prompt_id").size().min()) if len(rows) else 0
    if not 1 <= k <= max(smallest, 1):
        raise ValueError(f"maj_at_k: need 1 <= k <= samples per prompt ({smallest}), got k={k}")
    return rows[rows["pos"] < k]


def maj_at_k_per_prompt(df: pd.DataFrame, k: int | None = None) -> pd.Series:
    """Per prompt (index prompt_id, sorted): 1.0 when its majority answer over the first k samples is
    correct, else 0.0. None answers do not vote (a prompt with no votes scores 0); a tie goes to the
    answer that appears first by sample_idx; the prompt scores 1 if a voting row with the winning
    answer is correct."""
    rows = _first_k(df, k)
    prompts = pd.Index(sorted(rows["prompt_id"].unique()), name="prompt_id")
    votes = rows[rows["answer"].notna()]
    tally = votes.groupby(["prompt_id", "answer"], sort=False).agg(
        count=("pos", "size"), first=("pos", "min"), correct=("correct", "any")
    )
    tally = tally.reset_index().sort_values(
        ["prompt_id", "count", "first"], ascending=[True, False, True], kind="stable"
    )
    winners = tally.drop_duplicates("prompt_id", keep="first").set_index("prompt_id")["correct"]
    return winners.reindex(prompts, fill_value=False).astype(float)


def maj_at_k(df: pd.DataFrame, k: int | None = None) -> float:
    """Fraction of prompts whose majority answer over the first k samples is correct (see
    `maj_at_k_per_prompt`); NaN without prompts."""
    per_prompt = maj_at_k_per_prompt(df, k)
    return float(per_prompt.mean()) if len(per_prompt) else float("nan")


# ---------------------------------------------------------------- utilities, gap, bootstrap


def per_prompt_utilities(df: pd.DataFrame, weights: np.ndarray | Sequence[float]) -> pd.DataFrame:
    """Per prompt (index prompt_id): `gen` = J(f)(x), `ver` = J(f[w])(x), `empty` = the filter kept nothing."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(df),):
        raise ValueError(f"weights: expected shape ({len(df)},) aligned with the rows, got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights: must be finite and >= 0")
    c = df["correct"].to_numpy().astype(float)
    sums = (
        pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy(), "c": c, "w": w, "wc": w * c})
        .groupby("prompt_id", sort=True)
        .agg(gen=("c", "mean"), w=("w", "sum"), wc=("wc", "sum"))
    )
    empty = sums["w"].to_numpy() == 0
    gen = sums["gen"].to_numpy()
    ver = np.where(empty, gen, sums["wc"].to_numpy() / np.where(empty, 1.0, sums["w"].to_numpy()))
    return pd.DataFrame({"gen": gen, "ver": ver, "empty": empty}, index=sums.index)


def _ci(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": float(value), "ci_low": float(low), "ci_high": float(high)}


def _check_boot(n_boot: int, confidence: float, method: str) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot: must be >= 0, got {n_boot}")
    if method not in CI_METHODS:
        raise ValueError(f"method: must be one of {CI_METHODS}, got {method!r}")


def bootstrap_ci(
    values_per_prompt: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> dict[str, float]:
    """Mean of the per-prompt values with a bootstrap CI (prompts resampled with replacement).

    No values give NaN everywhere; one value, or n_boot=0, gives the value with NaN bounds.
    """
    values = np.asarray(values_per_prompt, dtype=float)
    _check_boot(n_boot, confidence, method)
    if len(values) == 0:
        return _ci(np.nan, np.nan, np.nan)
    value = float(values.mean())
    if n_boot == 0 or len(values) < 2:
        return _ci(value, np.nan, np.nan)
    if np.all(values == values[0]):  # every resample has the same mean (scipy warns on BCa here)
        return _ci(value, value, value)
    from scipy.stats import bootstrap

    res = bootstrap(
        (values,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="BCa" if method == "bca" else "percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return _ci(value, res.confidence_interval.low, res.confidence_interval.high)


def cluster_bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n_prompts: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> dict[str, float]:
    """`statistic(prompt_indices)` on all prompts with a bootstrap CI: the statistic is recomputed on
    each resample of prompts (for statistics over rows, such as a pooled AUROC or a ratio of sums).

    Resamples whose statistic is undefined (NaN) are left out of the interval.
    """
    _check_boot(n_boot, confidence, method)
    if n_prompts == 0:
        return _ci(np.nan, np.nan, np.nan)
    value = float(statistic(np.arange(n_prompts)))
    if n_boot == 0 or n_prompts < 2 or not math.isfinite(value):
        return _ci(value, np.nan, np.nan)
    if method == "bca":
        from scipy.stats import bootstrap

        res = bootstrap(
            (np.arange(n_prompts),),
            lambda idx: float(statistic(np.asarray(idx, dtype=int))),
            n_resamples=n_boot,
            confidence_level=confidence,
            method="BCa",
            vectorized=False,
            rng=np.random.default_rng(seed),
        )
        return _ci(value, res.confidence_interval.low, res.confidence_interval.high)
    # Percentile: the same resamples scipy draws for `bootstrap_ci` (same seed, same prompt count).
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(idx) for idx in rng.integers(0, n_prompts, size=(n_boot, n_prompts))])
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return _ci(value, np.nan, np.nan)
    alpha = 1.0 - confidence
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return _ci(value, low, high)


def paired_difference_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """mean(a - b) over prompts with a bootstrap CI; `a` and `b` hold one value per prompt, the same
    prompts in the same order (two verifiers, rounds or conditions on one prompt set)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference_ci: {a.shape} and {b.shape} values are not paired")
    return bootstrap_ci(a - b, n_boot=n_boot, confidence=confidence, seed=seed)


def _prompt_rows(df: pd.DataFrame) -> tuple[pd.Index, list[np.ndarray]]:
    """The prompts (sorted, as `per_prompt_utilities` orders them) and each one's row positions."""
    groups = pd.Series(np.arange(len(df))).groupby(df["prompt_id"].to_numpy(), sort=True)
    return pd.Index(list(groups.groups), name="prompt_id"), [g.to_numpy() for _, g in groups]


def gap_metrics(
    df: pd.DataFrame,
    weights: np.ndarray | Sequence[float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> dict[str, Any]:
    """Generation and verification utility, gap and relative gap, the kept set's precision (each with
    a CI), plus filter counts.

    The relative gap averages over prompts with J(f)(x) < 1 (its CI resamples those prompts);
    `prompts_excluded_relative` counts the others. `kept_precision` is Σ w c / Σ w over all rows.
    """
    u = per_prompt_utilities(df, weights)
    gen, ver = u["gen"].to_numpy(), u["ver"].to_numpy()
    open_ = gen < 1
    boot = {"n_boot": n_boot, "confidence": confidence, "seed": seed, "method": method}
    w = np.asarray(weights, dtype=float)
    c = df["correct"].to_numpy().astype(float)
    _, rows_of = _prompt_rows(df)
    kept_w = np.array([w[r].sum() for r in rows_of])
    kept_wc = np.array([(w[r] * c[r]).sum() for r in rows_of])

    def precision(idx: np.ndarray) -> float:
        total = kept_w[idx].sum()
        return float(kept_wc[idx].sum() / total) if total > 0 else float("nan")

    return {
        "generation_utility": bootstrap_ci(gen, **boot),
        "verification_utility": bootstrap_ci(ver, **boot),
        "gap": bootstrap_ci(ver - gen, **boot),
        "relative_gap": bootstrap_ci((ver[open_] - gen[open_]) / (1 - gen[open_]), **boot),
        "prompts": len(u),
        "prompts_empty_filter": int(u["empty"].sum()),
        "prompts_excluded_relative": int((~open_).sum()),
        "kept": int((w > 0).sum()),
        "kept_precision": cluster_bootstrap_ci(precision, len(u), **boot),
    }


# ---------------------------------------------------------------- verifier quality


def auroc(scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[bool]) -> float:
    """AUROC of scores against binary labels (Mann–Whitney U, ties count 1/2); NaN scores are dropped.

    NaN when only one class remains.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"auroc: scores {s.shape} and labels {y.shape} differ in shape")
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _score_column(df: pd.DataFrame, column: str) -> str:
    """`column` itself, or `score_<column>` when given a verifier name."""
    if column not in df.columns and f"score_{column}" in df.columns:
        return f"score_{column}"
    if column not in df.columns:
        raise KeyError(
            f"no score column {column!r} (have {[c for c in df.columns if c.startswith('score_')]})"
        )
    return column


def auroc_per_prompt(df: pd.DataFrame, column: str) -> pd.Series:
    """Each prompt's AUROC of its own samples' scores (index prompt_id; NaN where a prompt's samples
    are all right or all wrong). A per-prompt filter acts on exactly this ranking."""
    scores = df[_score_column(df, column)].to_numpy(dtype=float)
    labels = df["correct"].to_numpy().astype(bool)
    prompts, rows_of = _prompt_rows(df)
    return pd.Series([auroc(scores[r], labels[r]) for r in rows_of], index=prompts, dtype=float)


def verifier_metrics(
    df: pd.DataFrame, column: str, weights: np.ndarray | Sequence[float], **boot: Any
) -> dict[str, Any]:
    """`gap_metrics` of the filter's weights, plus the verifier's AUROC pooled over all rows and the
    mean of its per-prompt AUROCs (over prompts with both right and wrong samples), each with a CI,
    and how many scores are NaN."""
    scores = df[_score_column(df, column)].to_numpy(dtype=float)
    labels = df["correct"].to_numpy().astype(bool)
    _, rows_of = _prompt_rows(df)

    def pooled(idx: np.ndarray) -> float:
        rows = np.concatenate([rows_of[i] for i in idx]) if len(idx) else np.array([], dtype=int)
        return auroc(scores[rows], labels[rows])

    per_prompt = auroc_per_prompt(df, column).to_numpy()
    defined = per_prompt[np.isfinite(per_prompt)]
    return {
        **gap_metrics(df, weights, **boot),
        "auroc": cluster_bootstrap_ci(pooled, len(rows_of), **boot),
        "auroc_per_prompt": {**bootstrap_ci(defined, **boot), "prompts": int(len(defined))},
        "unparseable": int(np.isnan(scores).sum()),
        "rare_answer_recall": rare_answer_recall(df, weights, **boot),
        "kept_answer_entropy": kept_answer_entropy(df, weights, **boot),
    }


def auroc_difference(df: pd.DataFrame, column: str, other: str, **boot: Any) -> dict[str, float]:
    """Pooled AUROC of `column` minus that of `other` on the same rows, with a CI that recomputes both
    on each resample of prompts (paired)."""
    a = df[_score_column(df, column)].to_numpy(dtype=float)
    b = df[_score_column(df, other)].to_numpy(dtype=float)
    labels = df["correct"].to_numpy().astype(bool)
    _, rows_of = _prompt_rows(df)

    def difference(idx: np.ndarray) -> float:
        rows = np.concatenate([rows_of[i] for i in idx]) if len(idx) else np.array([], dtype=int)
        return auroc(a[rows], labels[rows]) - auroc(b[rows], labels[rows])

    return cluster_bootstrap_ci(difference, len(rows_of), **boot)


def score_correlations(df: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Pearson and Spearman correlation between score columns, on pairwise-complete rows."""
    columns = [_score_column(df, c) for c in columns]
    scores = df[columns].astype(float)
    out = {}
    for method in ("pearson", "spearman"):
        matrix = scores.corr(method=method, min_periods=2)
        out[method] = {a: {b: float(matrix.loc[a, b]) for b in columns} for a in columns}
    return out


# ---------------------------------------------------------------- diversity


def _distinct_n(texts: Iterable[Any], n: int) -> tuple[int, int]:
    """(unique, total) whitespace-token n-grams over texts; n-grams do not cross texts."""
    grams = []
    for text in texts:
        tokens = text.split() if isinstance(text, str) else []
        grams.extend(zip(*(tokens[i:] for i in range(n))))
    return len(set(grams)), len(grams)


def diversity_per_prompt(df: pd.DataFrame) -> pd.DataFrame:
    """Per prompt (index prompt_id, sorted): distinct answers, answer entropy (nats), the spread of the
    wrong answers (`distinct_wrong`, where a `correct` column is given), distinct-1/2.

    None answers are not distinct answers but form one category of the entropy. distinct-n pools the
    completions of a prompt (NaN for a prompt without any n-gram) and needs a `completion` column.
    """
    codes, _ = pd.factorize(df["answer"].to_numpy(dtype=object), use_na_sentinel=True)  # None → -1
    cells = pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy(), "code": codes})
    sizes = cells.groupby(["prompt_id", "code"], sort=True).size()
    p = sizes / sizes.groupby(level="prompt_id").transform("sum")
    entropy = (-p * np.log(p)).groupby(level="prompt_id").sum()
    distinct = (sizes.index.get_level_values("code") >= 0).astype(int)
    distinct = pd.Series(distinct, index=sizes.index).groupby(level="prompt_id").sum()
    out = pd.DataFrame({"distinct_answers": distinct.astype(float), "answer_entropy": entropy})
    if "correct" in df.columns:
        out["distinct_wrong"] = _distinct_wrong(df, codes).reindex(out.index)
    if "completion" in df.columns:
        texts = pd.Series(df["completion"].to_numpy(dtype=object)).groupby(df["prompt_id"].to_numpy())
        for n in (1, 2):
            ratios = {}
            for pid, group in texts:
                unique, total = _distinct_n(group, n)
                ratios[pid] = unique / total if total else float("nan")
            out[f"distinct_{n}"] = pd.Series(ratios, dtype=float).reindex(out.index)
    out.index.name = "prompt_id"
    return out


def _distinct_wrong(df: pd.DataFrame, codes: np.ndarray) -> pd.Series:
    """Per prompt: (d − 1) / (w − 1) over its w >= 2 wrong samples that state an answer, d of them
    distinct (1: every wrong answer differs, 0: the wrong samples agree); NaN below two such samples.
    A model that only gets more accurate keeps it (fewer wrong samples, as spread as before); one that
    converges on a wrong answer loses it."""
    wrong = ~df["correct"].to_numpy().astype(bool) & (codes >= 0)
    cells = pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy()[wrong], "code": codes[wrong]})
    grouped = cells.groupby("prompt_id", sort=True)["code"]
    w, d = grouped.size(), grouped.nunique()
    spread = (d - 1) / (w - 1).where(w >= 2)
    return spread.astype(float)


def answer_diversity(df: pd.DataFrame, **boot: Any) -> dict[str, dict[str, float]]:
    """`diversity_per_prompt` averaged over prompts (prompts without n-grams skipped for distinct-n),
    each with a bootstrap CI."""
    per_prompt = diversity_per_prompt(df)
    out = {}
    for key in per_prompt.columns:
        values = per_prompt[key].to_numpy(dtype=float)
        out[key] = bootstrap_ci(values[np.isfinite(values)], **boot)
    return out


# ---------------------------------------------------------------- rare correct answers

# How common a sample's answer is among its prompt's n samples (`count` samples hold it): held by that
# sample alone, by at most a quarter, by at most half, or by more than half of them. A singleton is a
# singleton whatever its share (for n = 1, 2, 4 too); the share buckets take the rest.
ANSWER_SHARE_BUCKETS = ("singleton", "le_25pct", "le_50pct", "gt_50pct")
BUCKET_LABELS = {"singleton": "singleton", "le_25pct": "≤25%", "le_50pct": "≤50%", "gt_50pct": ">50%"}


def answer_share_buckets(df: pd.DataFrame) -> np.ndarray:
    """Each row's index into ANSWER_SHARE_BUCKETS by how many of its prompt's samples give the same
    extracted answer (compared as extracted, as the diversity metrics do); -1 for a None answer."""
    answers = df["answer"].to_numpy(dtype=object)
    codes, _ = pd.factorize(answers, use_na_sentinel=True)
    cells = pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy(), "code": codes})
    count = cells.groupby(["prompt_id", "code"], sort=False)["code"].transform("size").to_numpy()
    n = cells.groupby("prompt_id", sort=False)["code"].transform("size").to_numpy()
    # integer comparisons: count/n <= 1/4 is 4*count <= n, exact for every n
    bucket = np.where(count == 1, 0, np.where(4 * count <= n, 1, np.where(2 * count <= n, 2, 3)))
    return np.where(codes < 0, -1, bucket)


def rare_answer_recall(
    df: pd.DataFrame, weights: np.ndarray | Sequence[float], **boot: Any
) -> dict[str, dict[str, Any]]:
    """The filter's recall on correct samples (the share of them it keeps, w > 0), by how common the
    sample's answer is among its prompt's samples (ANSWER_SHARE_BUCKETS), and over all correct samples
    (`all`).

    Each bucket: `recall` pooled over the bucket's correct samples, with a CI that resamples prompts
    (NaN where the bucket holds no correct sample), and the counts `correct`, `kept` and `prompts`
    (prompts with a correct sample in the bucket).
    """
    kept = np.asarray(weights, dtype=float) > 0
    correct = df["correct"].to_numpy().astype(bool)
    bucket = answer_share_buckets(df)
    prompts, rows_of = _prompt_rows(df)
    out = {}
    for b, name in enumerate((*ANSWER_SHARE_BUCKETS, "all")):
        mine = correct & (bucket == b) if name != "all" else correct
        n_correct = np.array([int(mine[r].sum()) for r in rows_of])
        n_kept = np.array([int((mine & kept)[r].sum()) for r in rows_of])

        def recall(idx: np.ndarray, n_correct=n_correct, n_kept=n_kept) -> float:
            total = n_correct[idx].sum()
            return float(n_kept[idx].sum() / total) if total > 0 else float("nan")

        out[name] = {
            "recall": cluster_bootstrap_ci(recall, len(prompts), **boot),
            "correct": int(n_correct.sum()),
            "kept": int(n_kept.sum()),
            "prompts": int((n_correct > 0).sum()),
        }
    return out


def answer_entropy_per_prompt(
    df: pd.DataFrame, weights: np.ndarray | Sequence[float] | None = None
) -> pd.Series:
    """Per prompt (index prompt_id, sorted): the entropy (nats) of its answers weighted by `weights`
    (all 1 by default; None answers one category); NaN for a prompt whose weights sum to 0."""
    w = np.ones(len(df)) if weights is None else np.asarray(weights, dtype=float)
    codes, _ = pd.factorize(df["answer"].to_numpy(dtype=object), use_na_sentinel=True)
    cells = pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy(), "code": codes, "w": w})
    mass = cells.groupby(["prompt_id", "code"], sort=True)["w"].sum()
    total = mass.groupby(level="prompt_id").transform("sum")
    p = (mass / total.where(total > 0)).where(mass > 0)  # answers of weight 0 are not in the set
    entropy = (-p * np.log(p)).groupby(level="prompt_id").sum(min_count=1) + 0.0  # + 0.0: no -0.0
    return entropy.astype(float).rename("answer_entropy")


def kept_answer_entropy(
    df: pd.DataFrame, weights: np.ndarray | Sequence[float], **boot: Any
) -> dict[str, Any]:
    """The answer entropy of what the filter keeps against that of everything sampled, per prompt,
    averaged over the prompts whose filter kept something (`prompts`; `prompts_empty` the others):
    `sampled`, `kept` and their paired difference `change` (kept − sampled), each with a CI."""
    sampled = answer_entropy_per_prompt(df)
    kept = answer_entropy_per_prompt(df, weights).reindex(sampled.index)
    some = np.isfinite(kept.to_numpy())
    s, k = sampled.to_numpy()[some], kept.to_numpy()[some]
    return {
        "sampled": bootstrap_ci(s, **boot),
        "kept": bootstrap_ci(k, **boot),
        "change": bootstrap_ci(k - s, **boot),
        "prompts": int(some.sum()),
        "prompts_empty": int((~some).sum()),
    }


# ---------------------------------------------------------------- JSON


def json_safe(obj: Any) -> Any:
    """`obj` with NaN/inf floats as None, numpy scalars and arrays as Python values, recursively."""
    if isinstance(obj, dict):
        return {json_safe(k) if isinstance(k, np.generic) else k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj
