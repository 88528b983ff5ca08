"""Intervals where the bootstrap sees no spread: a proportion from a small count says how little it tells."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from eval.gap import fmt_ci, summarize
from eval.metrics import (
    bootstrap_ci,
    cluster_bootstrap_ci,
    count_ci,
    gap_metrics,
    paired_difference_ci,
    rare_answer_recall,
    wilson_interval,
)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return ci.low, ci.high


def rows_of(correct: dict[str, list[int]], answers: dict[str, list[str]] | None = None) -> pd.DataFrame:
    records = [
        {
            "prompt_id": p,
            "sample_idx": i,
            "correct": bool(c),
            "answer": (answers or {}).get(p, [str(i) for i in range(len(cs))])[i],
        }
        for p, cs in correct.items()
        for i, c in enumerate(cs)
    ]
    return pd.DataFrame(records)


def test_wilson_interval_is_scipys():
    for n in (1, 3, 4, 17, 192):
        for k in sorted({0, 1, n // 2, n - 1, n}):
            for confidence in (0.8, 0.95):
                assert wilson_interval(k, n, confidence) == pytest.approx(wilson(k, n, confidence), abs=1e-12)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


@pytest.mark.parametrize("value", [0.0, 1.0])
@pytest.mark.parametrize("n", [1, 4, 32])
def test_a_proportion_of_all_equal_prompts_gets_wilsons_interval_on_the_prompts(value, n):
    for method in ("percentile", "bca"):
        ci = bootstrap_ci(np.full(n, value), n_boot=200, method=method, proportion=True)
        assert ci["value"] == value
        assert (ci["ci_low"], ci["ci_high"]) == pytest.approx(wilson(int(value) * n, n))
        assert ci["ci_high"] - ci["ci_low"] > 0.05  # 0/4 is far from certain: [0, 0.49]
    # no intervals asked for: none given (not a zero-width one)
    off = bootstrap_ci(np.full(n, value), n_boot=0, proportion=True)
    assert off["value"] == value and math.isnan(off["ci_low"]) and math.isnan(off["ci_high"])


def test_pooled_ratios_take_their_denominator_as_the_count():
    # kept precision of 4 kept samples, all right, in one prompt and spread over two
    one = rows_of({"a": [1, 1, 1, 1, 0, 0]})
    kept = np.array([1, 1, 1, 1, 0, 0], dtype=float)
    for df, w in ((one, kept), (rows_of({"a": [1, 1, 0], "b": [1, 1, 0]}), np.array([1, 1, 0, 1, 1, 0.0]))):
        for method in ("percentile", "bca"):
            m = gap_metrics(df, w, n_boot=200, method=method)
            assert m["kept_precision"]["value"] == 1.0
            assert (m["kept_precision"]["ci_low"], m["kept_precision"]["ci_high"]) == pytest.approx(
                wilson(4, 4)
            )
    # a recall bucket with 3 correct samples, every one kept: Wilson on 3, not [1, 1]
    three = rows_of({"a": [1, 0, 0], "b": [1, 0, 0], "c": [1, 0, 0]}, {p: ["7", "1", "2"] for p in "abc"})
    r = rare_answer_recall(three, np.array([1, 0, 0] * 3, dtype=float), n_boot=200)["singleton"]
    assert r["correct"] == 3 and r["recall"]["value"] == 1.0
    assert (r["recall"]["ci_low"], r["recall"]["ci_high"]) == pytest.approx(wilson(3, 3))


def test_a_difference_no_prompt_moves_is_bounded_by_the_share_of_prompts_that_could():
    # every prompt's gap is 0 (the filter keeps all): at most u = z²/(n + z²) of such prompts could
    # differ unseen, each by at most 1
    df = rows_of({f"p{i}": [1, 0, 0, 1] for i in range(10)})
    gap = gap_metrics(df, np.ones(len(df)), n_boot=200)["gap"]
    u = wilson(0, 10)[1]
    assert gap["value"] == 0.0 and (gap["ci_low"], gap["ci_high"]) == pytest.approx((-u, u))
    same = paired_difference_ci(np.full(10, 0.5), np.full(10, 0.5), n_boot=200)
    assert (same["ci_low"], same["ci_high"]) == pytest.approx((-u, u))
    # the general rule: a value v of units in [lo, hi], none seen to move
    assert count_ci(0.5, 10, bounds=(0.0, 1.0)) == pytest.approx(
        {"value": 0.5, "ci_low": 0.5 - 0.5 * u, "ci_high": 0.5 + 0.5 * u}
    )
    # without bounds or a proportion, nothing is invented: no interval
    assert math.isnan(count_ci(2.0, 10)["ci_low"])
    # one prompt of a pooled statistic: its count still gives the interval
    single = cluster_bootstrap_ci(lambda idx: 0.5, 1, n_boot=100, count=4, proportion=True)
    assert (single["ci_low"], single["ci_high"]) == pytest.approx(wilson(2, 4))


def test_no_zero_width_interval_for_a_finite_sample():
    """Every interval of metrics.json, on sets where everything agrees (all wrong, all right, one
    prompt), is either absent or has width: nothing prints [0.00, 0.00]."""
    cases = {
        "all wrong": rows_of(
            {f"p{i}": [0, 0, 0, 0] for i in range(4)}, {f"p{i}": ["1"] * 4 for i in range(4)}
        ),
        "all right": rows_of(
            {f"p{i}": [1, 1, 1, 1] for i in range(4)}, {f"p{i}": ["7"] * 4 for i in range(4)}
        ),
        "one prompt": rows_of({"p": [1, 0, 1, 0]}, {"p": ["7", "8", "7", "9"]}),
    }
    for name, df in cases.items():
        df["score_mc"] = np.where(df["correct"], 0.9, 0.2)
        df["kept_mc"] = df["score_mc"] > 0.5
        df["score_const"] = 0.5
        df["kept_const"] = True
        m = summarize(df, ["mc", "const"], n_boot=200)
        intervals = list(walk(m))
        assert len(intervals) > 20, name
        for where, ci in intervals:
            assert ci["ci_low"] is None or ci["ci_high"] > ci["ci_low"], (name, where, ci)
            shown = fmt_ci(ci, digits=2)
            assert "[0.00, 0.00]" not in shown and "[+0.00, +0.00]" not in shown, (name, where, shown)
        if name != "one prompt":
            acc = m["generation_utility"]
            assert (acc["ci_low"], acc["ci_high"]) == pytest.approx(wilson(4 * int(name == "all right"), 4))
    assert {"all wrong", "all right"} <= set(cases)


def walk(obj, where: str = ""):
    """Every {value, ci_low, ci_high} with a defined value in a nested record."""
    if isinstance(obj, dict):
        if {"value", "ci_low", "ci_high"} <= set(obj) and obj["value"] is not None:
            yield where, obj
        for key, value in obj.items():
            yield from walk(value, f"{where}.{key}")
