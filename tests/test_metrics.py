"""eval.metrics against hand-computed values and brute force."""

from __future__ import annotations

import itertools
import json
import math
from math import comb

import numpy as np
import pandas as pd
import pytest

from eval.metrics import (
    ANSWER_SHARE_BUCKETS,
    answer_diversity,
    answer_entropy_per_prompt,
    answer_share_buckets,
    auroc,
    auroc_difference,
    auroc_per_prompt,
    bootstrap_ci,
    cluster_bootstrap_ci,
    default_ks,
    diversity_per_prompt,
    gap_metrics,
    json_safe,
    kept_answer_entropy,
    maj_at_k,
    maj_at_k_per_prompt,
    paired_difference_ci,
    pass_at_k,
    pass_at_k_curve,
    per_prompt_utilities,
    rare_answer_recall,
    score_correlations,
    verifier_metrics,
)


def frame(prompts: dict[str, list], **columns) -> pd.DataFrame:
    """Rows from {prompt_id: [correct, ...]}, sample_idx 0..n-1, extra per-row columns as flat lists."""
    rows = [(p, i, bool(c)) for p, cs in prompts.items() for i, c in enumerate(cs)]
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_idx", "correct"])
    for name, values in columns.items():
        df[name] = pd.Series(values, dtype=object if name in ("answer", "completion") else float)
    if "answer" not in df:
        df["answer"] = None
    return df


# ---------------------------------------------------------------- pass@k


def test_pass_at_k_known_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2)) == pytest.approx(0.7)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k: every 2-subset holds a correct one
    assert pass_at_k(4, 4, 4) == 1.0


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 0)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_pass_at_k_matches_enumeration_of_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hit = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hit, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable():
    assert pass_at_k(1000, 1, 1) == pytest.approx(1e-3)
    assert pass_at_k(1000, 500, 500) == pytest.approx(1.0)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(8) == [1, 2, 4, 8]


def test_pass_at_k_curve_averages_prompts():
    df = frame({"a": [1, 1, 0, 0, 0], "b": [0, 0, 0, 0, 0], "c": [1, 0, 0, 0, 0]})
    curve = pass_at_k_curve(df)
    assert list(curve) == [1, 2, 4, 5]
    assert curve[1] == pytest.approx((0.4 + 0 + 0.2) / 3)
    assert curve[2] == pytest.approx((0.7 + 0 + 0.4) / 3)
    assert curve[5] == pytest.approx(2 / 3)
    assert pass_at_k_curve(df, ks=[3]) == {3: pytest.approx((pass_at_k(5, 2, 3) + pass_at_k(5, 1, 3)) / 3)}


# ---------------------------------------------------------------- maj@k


def test_maj_at_k_votes_ties_and_none():
    df = frame(
        {
            "win": [0, 1, 1, 0],  # b wins 2-1, None does not vote
            "tie": [1, 0, 1, 0],  # a, b, a, b: tie, a appeared first and is correct
            "tie_wrong": [0, 1, 0, 1],  # same tie, a is wrong
            "none": [0, 0, 0, 0],  # no votes at all
            "minority": [0, 0, 0, 1],  # None, None, x, y: x first, wrong
        },
        answer=["a", "b", "b", None] + ["a", "b", "a", "b"] * 2 + [None] * 4 + [None, None, "x", "y"],
    )
    df = df.sample(frac=1, random_state=0)  # row order must not matter, sample_idx does
    assert maj_at_k(df) == pytest.approx(2 / 5)
    # first sample only: win→a (wrong), tie→a (right), tie_wrong→a (wrong), none→0, minority→0
    assert maj_at_k(df, k=1) == pytest.approx(1 / 5)
    # first two: win→a (tie a/b, a first, wrong), tie→a right, tie_wrong→a wrong
    assert maj_at_k(df, k=2) == pytest.approx(1 / 5)
    with pytest.raises(ValueError):
        maj_at_k(df, k=5)


# ---------------------------------------------------------------- utilities and gap


@pytest.fixture
def gap_case():
    df = frame(
        {
            "A": [1, 0, 0, 1],  # gen .5, keeps the first: ver 1, relative gap 1
            "B": [1, 1, 1, 1],  # gen 1: excluded from the relative gap
            "C": [0, 0, 0, 1],  # filter keeps nothing: ver = gen = .25
            "D": [1, 0, 0, 0],  # keeps two wrong ones: ver 0, relative gap −1/3
        }
    )
    weights = np.array([1, 0, 0, 0] + [0, 1, 0, 0] + [0, 0, 0, 0] + [0, 1, 1, 0], dtype=float)
    return df, weights


def test_per_prompt_utilities(gap_case):
    df, w = gap_case
    u = per_prompt_utilities(df, w)
    assert list(u.index) == ["A", "B", "C", "D"]
    assert u["gen"].tolist() == pytest.approx([0.5, 1.0, 0.25, 0.25])
    assert u["ver"].tolist() == pytest.approx([1.0, 1.0, 0.25, 0.0])
    assert u["empty"].tolist() == [False, False, True, False]


def test_per_prompt_utilities_reweighting_and_validation():
    df = frame({"p": [1, 0, 1]})
    assert per_prompt_utilities(df, [2.0, 1.0, 0.0])["ver"].iloc[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        per_prompt_utilities(df, [1.0, 1.0])
    with pytest.raises(ValueError):
        per_prompt_utilities(df, [1.0, -1.0, 0.0])
    with pytest.raises(ValueError):
        per_prompt_utilities(df, [1.0, np.nan, 0.0])


def test_gap_metrics_hand_values(gap_case):
    df, w = gap_case
    m = gap_metrics(df, w, n_boot=200)
    assert m["generation_utility"]["value"] == pytest.approx(0.5)
    assert m["verification_utility"]["value"] == pytest.approx(0.5625)
    assert m["gap"]["value"] == pytest.approx(0.0625)
    assert m["relative_gap"]["value"] == pytest.approx((1 + 0 - 1 / 3) / 3)
    assert m["prompts"] == 4
    assert m["prompts_empty_filter"] == 1
    assert m["prompts_excluded_relative"] == 1
    assert m["kept"] == 4
    assert m["kept_precision"]["value"] == pytest.approx(2 / 4)  # kept: A0 and B1 right, D1 and D2 wrong
    for key in ("generation_utility", "verification_utility", "gap", "relative_gap", "kept_precision"):
        ci = m[key]
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"], key


def test_gap_metrics_without_open_prompts_or_kept_rows():
    df = frame({"a": [1, 1], "b": [1, 1]})
    m = gap_metrics(df, np.zeros(4), n_boot=50)
    assert m["gap"]["value"] == 0.0
    assert math.isnan(m["relative_gap"]["value"]) and math.isnan(m["relative_gap"]["ci_low"])
    assert m["prompts_excluded_relative"] == 2 and m["prompts_empty_filter"] == 2
    assert m["kept"] == 0 and math.isnan(m["kept_precision"]["value"])
    json.dumps(json_safe(m), allow_nan=False)


def test_verifier_metrics_adds_auroc_and_unparseable(gap_case):
    df, w = gap_case
    df["score_mc"] = [0.9, 0.1, 0.2, 0.8] + [0.5] * 4 + [np.nan, 0.1, 0.1, 0.6] + [0.3, 0.2, 0.2, 0.1]
    m = verifier_metrics(df, "mc", w, n_boot=20)
    assert m["gap"]["value"] == pytest.approx(0.0625)
    assert m["unparseable"] == 1
    assert m["auroc"]["value"] == pytest.approx(auroc(df["score_mc"], df["correct"]))
    assert verifier_metrics(df, "score_mc", w, n_boot=20)["auroc"] == m["auroc"]
    # Per prompt, each ranks its right samples above its wrong ones (C's NaN left out); B has one class
    # only and no AUROC of its own.
    per_prompt = auroc_per_prompt(df, "mc")
    assert per_prompt.index.tolist() == ["A", "B", "C", "D"]
    assert per_prompt["A"] == per_prompt["C"] == per_prompt["D"] == 1.0 and math.isnan(per_prompt["B"])
    assert m["auroc_per_prompt"]["value"] == 1.0 and m["auroc_per_prompt"]["prompts"] == 3
    # Pooled and per-prompt AUROC part ways where prompts differ in difficulty: within each prompt the
    # right answer scores higher, but the hard prompt's right answer scores below the easy one's wrong.
    two = frame({"easy": [1, 0], "hard": [1, 0]}, score_mc=[0.9, 0.8, 0.3, 0.1])
    assert auroc_per_prompt(two, "mc").tolist() == [1.0, 1.0]
    assert verifier_metrics(two, "mc", np.ones(4), n_boot=0)["auroc"]["value"] == 0.75


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_value_and_is_deterministic():
    values = np.random.default_rng(1).random(50)
    a = bootstrap_ci(values, n_boot=500, seed=3)
    assert a == bootstrap_ci(values, n_boot=500, seed=3)
    assert a["value"] == pytest.approx(values.mean())
    assert a["ci_low"] < a["value"] < a["ci_high"]
    narrow = bootstrap_ci(values, n_boot=500, confidence=0.5, seed=3)
    assert a["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < a["ci_high"]


def test_bootstrap_ci_known_and_degenerate_cases():
    # two prompts 0 and 1: resampled means are 0, .5, 1 with probabilities ¼, ½, ¼
    assert bootstrap_ci(np.array([0.0, 1.0]), n_boot=1000, seed=0) == {
        "value": 0.5,
        "ci_low": 0.0,
        "ci_high": 1.0,
    }
    point = bootstrap_ci(np.full(7, 0.3), n_boot=100)
    assert point["ci_low"] == point["ci_high"] == pytest.approx(point["value"]) == pytest.approx(0.3)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([]), n_boot=10).values())
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones(3), confidence=1.0)


# ---------------------------------------------------------------- AUROC


def test_auroc_hand_counts():
    # pairs (pos, neg): (.9,.5)=1, (.9,.1)=1, (.5,.5)=½, (.5,.1)=1 → 3.5 / 4
    assert auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)


def test_auroc_perfect_inverse_nan_and_one_class():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([np.nan, 0.2, 0.8, np.nan], [1, 0, 1, 0]) == 1.0  # NaN rows dropped
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    assert math.isnan(auroc([np.nan, 0.2], [0, 1]))


# ---------------------------------------------------------------- diversity and correlations


def test_answer_diversity_hand_values():
    df = frame(
        {"p": [0, 0, 0, 0], "q": [0, 0, 0, 0]},
        answer=["a", "a", "b", "b", "a", None, None, None],
        completion=["x y x", "x y", "", None, "a b c", "", "", ""],
    )
    d = {k: v["value"] for k, v in answer_diversity(df, n_boot=50).items()}
    assert d["distinct_answers"] == pytest.approx(1.5)
    h_q = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert d["answer_entropy"] == pytest.approx((math.log(2) + h_q) / 2)
    # p: unigrams x y x x y → 2/5, bigrams (x y)(y x)(x y) → 2/3; q: 3/3 and 2/2
    assert d["distinct_1"] == pytest.approx((0.4 + 1) / 2)
    assert d["distinct_2"] == pytest.approx((2 / 3 + 1) / 2)
    assert "distinct_1" not in answer_diversity(df.drop(columns="completion"))
    per_prompt = diversity_per_prompt(df)
    assert per_prompt.loc["p", "distinct_answers"] == 2 and per_prompt.loc["q", "distinct_answers"] == 1


def test_answer_diversity_single_answer_has_zero_entropy():
    d = answer_diversity(frame({"p": [1, 1, 1]}, answer=["7", "7", "7"]))
    values = {k: v["value"] for k, v in d.items()}
    assert np.isnan(values.pop("distinct_wrong"))  # no wrong samples to spread
    assert values == {"distinct_answers": 1.0, "answer_entropy": 0.0}


def test_score_correlations_pairwise_complete():
    df = frame(
        {"p": [0] * 5},
        score_a=[1, 2, 3, 4, np.nan],
        score_b=[2, 4, 6, 8, 1],
        score_c=[1, 2, 3, 5, 0],
        score_d=[10, 3, 2, 1, 5],  # ranked over all rows, the row a lacks would bend the ranks
    )
    r = score_correlations(df, ["score_a", "score_b", "score_c", "d"])
    assert r["pearson"]["score_a"]["score_b"] == pytest.approx(1.0)  # the NaN row is left out
    assert r["spearman"]["score_a"]["score_b"] == pytest.approx(1.0)
    assert r["pearson"]["score_a"]["score_c"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1])
    assert r["pearson"]["score_b"]["score_c"] == pytest.approx(
        np.corrcoef([2, 4, 6, 8, 1], [1, 2, 3, 5, 0])[0, 1]
    )
    assert r["spearman"]["score_b"]["score_c"] == pytest.approx(1.0)
    assert r["pearson"]["score_c"]["score_a"] == r["pearson"]["score_a"]["score_c"]
    assert r["spearman"]["score_a"]["score_d"] == pytest.approx(-1.0)
    assert r["pearson"]["score_a"]["score_a"] == pytest.approx(1.0)


# ---------------------------------------------------------------- rare correct answers


def test_answer_share_buckets_by_count_and_share():
    """singleton (count 1, whatever n), then count/n <= 1/4, <= 1/2, > 1/2; None answers have none."""
    rows = frame(
        {
            "n4": [0] * 4,  # a a b None: a holds 2/4 (<= 50%), b alone
            "n8": [0] * 8,  # a a | b b b b | c | None: 2/8 = 25% exactly, 4/8 = 50% exactly
            "n16": [0] * 16,  # a x4 (25% exactly), b x5 (31%), c x7 (44%)
            "one": [0],  # one sample: a singleton
            "major": [0] * 3,  # 2 of 3 > 50%
        },
        answer=["a", "a", "b", None]
        + ["a", "a", "b", "b", "b", "b", "c", None]
        + ["a"] * 4
        + ["b"] * 5
        + ["c"] * 7
        + ["a"]
        + ["z", "z", "y"],
    )
    got = answer_share_buckets(rows).tolist()
    assert got[:4] == [2, 2, 0, -1]
    assert got[4:12] == [1, 1, 2, 2, 2, 2, 0, -1]
    assert got[12:28] == [1] * 4 + [2] * 5 + [2] * 7
    assert got[28] == 0 and got[29:] == [3, 3, 0]
    # the same answer text under another prompt is counted there, not here
    two = frame({"p": [0, 0], "q": [0, 0]}, answer=["a", "b", "a", "a"])
    assert answer_share_buckets(two).tolist() == [0, 0, 3, 3]


def test_rare_answer_recall_hand_values():
    rows = frame(
        {
            # four samples: the right answer "7" twice (<= 50%), a wrong "8" once, no answer once
            "A": [1, 1, 0, 0],
            # the right answer alone (singleton) among three wrong "3"s (> 50%)
            "B": [1, 0, 0, 0],
            # one sample, right: a singleton
            "C": [1],
            # nothing right, nothing extracted
            "D": [0, 0],
        },
        answer=["7", "7", "8", None, "4", "3", "3", "3", "5", None, None],
    )
    kept = np.array([1, 0, 1, 0] + [0, 1, 1, 0] + [1] + [1, 1], dtype=float)
    r = rare_answer_recall(rows, kept, n_boot=200)
    assert list(r) == [*ANSWER_SHARE_BUCKETS, "all"]
    # singleton: B's "4" (dropped) and C's "5" (kept): 1 of 2
    assert (r["singleton"]["correct"], r["singleton"]["kept"], r["singleton"]["prompts"]) == (2, 1, 2)
    assert r["singleton"]["recall"]["value"] == pytest.approx(0.5)
    assert r["le_50pct"]["correct"] == 2 and r["le_50pct"]["recall"]["value"] == pytest.approx(0.5)
    # no correct sample is rare (<= 25%, not alone) or common (> 50%): no recall, counts 0
    for name in ("le_25pct", "gt_50pct"):
        assert r[name]["correct"] == r[name]["kept"] == r[name]["prompts"] == 0
        assert math.isnan(r[name]["recall"]["value"])
    assert r["all"]["correct"] == 4 and r["all"]["recall"]["value"] == pytest.approx(0.5)
    # pooled over samples, resampled over prompts: the interval holds the value and stays in [0, 1]
    lo, hi = r["all"]["recall"]["ci_low"], r["all"]["recall"]["ci_high"]
    assert 0 <= lo <= 0.5 <= hi <= 1
    # a reweighting filter: any weight > 0 keeps the sample
    assert rare_answer_recall(rows, kept * 0.3, n_boot=0)["all"]["kept"] == 2


def test_rare_answer_recall_without_correct_samples_or_answers():
    none = frame({"p": [0, 0, 0], "q": [0]}, answer=[None, None, None, None])
    assert answer_share_buckets(none).tolist() == [-1] * 4
    r = rare_answer_recall(none, np.ones(4), n_boot=100)
    for name in (*ANSWER_SHARE_BUCKETS, "all"):
        assert r[name]["correct"] == r[name]["kept"] == 0
        assert all(math.isnan(r[name]["recall"][k]) for k in ("value", "ci_low", "ci_high"))
    e = kept_answer_entropy(none, np.ones(4), n_boot=100)  # None answers are one category: entropy 0
    assert e["sampled"]["value"] == e["kept"]["value"] == e["change"]["value"] == 0.0
    assert json.loads(json.dumps(json_safe(r)))["all"]["recall"]["value"] is None


def test_kept_answer_entropy_hand_values():
    rows = frame(
        {"p": [0] * 4, "q": [0] * 4, "r": [0] * 2},
        answer=["a", "a", "b", "b", "a", "b", "c", "d", "x", None],
    )
    kept = np.array([1, 0, 1, 0] + [1, 1, 0, 0] + [0, 0], dtype=float)
    e = kept_answer_entropy(rows, kept, n_boot=100)
    # p: sampled {a, a, b, b} ln 2, kept {a, b} ln 2; q: sampled 4 answers ln 4, kept {a, b} ln 2;
    # r: its filter kept nothing, so it has no kept entropy and is left out of all three
    assert e["prompts"] == 2 and e["prompts_empty"] == 1
    assert e["sampled"]["value"] == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert e["kept"]["value"] == pytest.approx(math.log(2))
    assert e["change"]["value"] == pytest.approx(-math.log(2) / 2)
    assert e["change"]["ci_low"] == pytest.approx(-math.log(2)) and e["change"]["ci_high"] == pytest.approx(0)
    # weights weigh the answers: q keeps a with 3 and b with 1
    weighted = answer_entropy_per_prompt(rows, np.array([0] * 4 + [3, 1, 0, 0] + [0, 0], dtype=float))
    assert weighted["q"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert math.isnan(weighted["p"]) and math.isnan(weighted["r"])
    # all samples weighted alike: the sampled entropy of the diversity metrics
    np.testing.assert_allclose(
        answer_entropy_per_prompt(rows).to_numpy(), diversity_per_prompt(rows)["answer_entropy"].to_numpy()
    )
    # one sample, kept: entropy 0 on both sides
    single = kept_answer_entropy(frame({"p": [1]}, answer=["3"]), np.ones(1), n_boot=10)
    assert single["sampled"]["value"] == single["kept"]["value"] == 0.0 and single["prompts"] == 1


def test_auroc_difference_is_paired():
    rows = frame({f"p{i}": [1, 0, 0] for i in range(6)})
    rows["score_good"] = [0.9, 0.1, 0.2] * 6
    rows["score_coin"] = [0.5, 0.5, 0.5] * 6
    d = auroc_difference(rows, "good", "coin", n_boot=200)
    assert d["value"] == pytest.approx(0.5)
    # every resample holds both verifiers on the same prompts: the difference never varies here
    assert d["ci_low"] == pytest.approx(0.5) and d["ci_high"] == pytest.approx(0.5)


# ---------------------------------------------------------------- JSON


def test_json_safe():
    obj = {
        "a": float("nan"),
        "b": [np.float64(np.inf), np.int64(3), 1.5],
        2: {"c": np.bool_(True)},
        "d": None,
    }
    assert json_safe(obj) == {"a": None, "b": [None, 3, 1.5], 2: {"c": True}, "d": None}
    json.dumps(json_safe(obj), allow_nan=False)


def test_gap_table_counts_unparseable_verifications():
    from rich.console import Console

    from eval.gap import gap_table, summarize

    df = frame({"a": [1, 0, 1, 0], "b": [0, 0, 1, 1]}, answer=["1", "2", "1", "2", "3", "3", "4", "4"])
    df["n_tokens"] = 10
    df["score_cot"] = [0.9, np.nan, 0.8, 0.1, np.nan, np.nan, 0.7, 0.6]  # abstained on three rows
    df["kept_cot"] = df["score_cot"].fillna(0) > 0.5
    df["score_rej"] = df["score_cot"].fillna(0.0)  # "reject" rule: no NaN left, but four were unparseable
    df["kept_rej"] = df["score_rej"] > 0.5
    metrics = summarize(df, ["cot", "rej"], costs={"rej": {"unparseable": 4, "tokens": 80}}, n_boot=50)
    assert metrics["verifiers"]["cot"]["unparseable"] == 3
    console = Console(width=250, record=True)
    console.print(gap_table(metrics))
    rows = [
        [c.strip() for c in line.replace("┃", "│").split("│")]
        for line in console.export_text().splitlines()
        if "│" in line or "┃" in line
    ]
    cells = {row[1]: row for row in rows}
    col = cells["verifier"].index("unparseable")
    assert cells["cot"][col] == "3" and cells["rej"][col] == "4"


# ---------------------------------------------------------------- intervals on every headline number


def test_cluster_bootstrap_resamples_prompts_as_the_mean_does():
    values = np.random.default_rng(2).random(40)
    # a statistic over prompt indices that happens to be the mean: the same interval as bootstrap_ci
    mean = cluster_bootstrap_ci(lambda idx: values[idx].mean(), 40, n_boot=300, seed=5)
    assert mean == pytest.approx(bootstrap_ci(values, n_boot=300, seed=5))
    assert math.isnan(cluster_bootstrap_ci(lambda idx: 1.0, 1, n_boot=50)["ci_low"])  # one prompt
    bca = bootstrap_ci(values, n_boot=300, seed=5, method="bca")
    assert bca["ci_low"] < bca["value"] < bca["ci_high"]


def test_single_prompt_has_no_interval():
    one = bootstrap_ci(np.array([0.4]), n_boot=100)
    assert one["value"] == 0.4 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


def test_maj_at_k_per_prompt_and_paired_difference():
    df = frame({"a": [1, 0, 0], "b": [0, 1, 1]}, answer=["7", "8", "8", "9", "5", "5"])
    assert maj_at_k_per_prompt(df).tolist() == [0.0, 1.0]
    d = paired_difference_ci(np.array([1.0, 0.5, 0.0, 1.0]), np.array([0.5, 0.5, 0.0, 0.5]), n_boot=200)
    assert d["value"] == pytest.approx(0.25) and d["ci_low"] >= 0.0
    with pytest.raises(ValueError):
        paired_difference_ci(np.ones(3), np.ones(4))


def test_summarize_gives_every_headline_number_an_interval():
    from eval.gap import summarize

    rng = np.random.default_rng(0)
    rows = frame({f"p{i}": rng.integers(0, 2, 4).tolist() for i in range(12)})
    rows["answer"] = [str(x) for x in rng.integers(0, 3, len(rows))]
    rows["score_mc"] = rng.random(len(rows))
    rows["kept_mc"] = rows["score_mc"] > 0.5
    m = summarize(rows, ["mc"], n_boot=100, confidence=0.8)
    ci = {"value", "ci_low", "ci_high"}
    for key in ("generation_utility", "gap", "relative_gap", "maj_at_k", "verifier_auroc"):
        assert ci <= set(m[key]), key
    assert all(ci <= set(v) for v in m["pass_at_k"].values())
    assert ci <= set(m["verifiers"]["mc"]["kept_precision"]) and ci <= set(m["verifier_auroc_per_prompt"])
    assert all(ci <= set(v) for v in m["answer_diversity"].values())
    recall, entropy = m["rare_answer_recall"], m["kept_answer_entropy"]
    assert list(recall) == [*ANSWER_SHARE_BUCKETS, "all"] and all(
        ci <= set(b["recall"]) for b in recall.values()
    )
    assert recall["all"]["correct"] == int(rows["correct"].sum())
    assert recall["all"]["kept"] == int((rows["correct"] & rows["kept_mc"]).sum())
    assert ci <= set(entropy["change"]) and entropy["prompts"] + entropy["prompts_empty"] == 12
    assert recall == m["verifiers"]["mc"]["rare_answer_recall"]
    assert m["ci"] == {"method": "percentile", "confidence": 0.8, "n_boot": 100, "resampled": "prompts"}
    pp = m["per_prompt"]
    assert pp["prompt_id"] == sorted(pp["prompt_id"]) and len(pp["n"]) == 12
    assert sum(pp["correct"]) == int(rows["correct"].sum())
    assert m["pass_at_k"]["1"]["value"] == pytest.approx(rows["correct"].mean())
