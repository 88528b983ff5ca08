"""Filters on constructed scores with known answers, and the properties every filter must hold on any
scores: it never keeps a sample while dropping a higher-scored one of the same prompt, and the oracle
under it is the ceiling."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eval.metrics import gap_metrics
from trainer.config import FilterConfig
from trainer.filters import select


def rows(prompts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": prompts, "sample_idx": range(len(prompts))})


def test_quantile_keeps_top_per_prompt():
    df = rows(["a"] * 4 + ["b"] * 4)
    scores = np.array([0.1, 0.9, 0.5, 0.3, 5, 6, 7, 8])
    w = select(df, scores, FilterConfig("quantile", q=0.75))
    assert w.tolist() == [0, 1, 0, 0, 0, 0, 0, 1]
    w = select(df, scores, FilterConfig("quantile", q=0.5))
    assert w.tolist() == [0, 1, 1, 0, 0, 0, 1, 1]
    assert select(df, scores, FilterConfig("quantile", q=0.0)).sum() == 8
    assert select(df, scores, FilterConfig("quantile", q=1.0)).tolist() == [0, 1, 0, 0, 0, 0, 0, 1]


def test_quantile_keeps_or_drops_ties_whole():
    df = rows(["a"] * 4)
    q = FilterConfig("quantile", q=0.5)  # k = 2 of 4
    # The case: the oracle's one right sample, not all four (the cut lands on the 0s).
    assert select(df, np.array([1.0, 0, 0, 0]), q).tolist() == [1, 0, 0, 0]
    # The best score is tied beyond k: the whole best group is kept.
    assert select(df, np.array([1.0, 1, 1, 0]), q).tolist() == [1, 1, 1, 0]
    # A tie straddling the cut below the best: dropped whole (fewer than k kept, never a coin flip).
    assert select(df, np.array([0.9, 0.6, 0.6, 0.2]), q).tolist() == [1, 0, 0, 0]
    # Nothing to choose by: all kept.
    assert select(df, np.array([0.5, 0.5, 0.5, 0.5]), q).tolist() == [1, 1, 1, 1]
    # (1 - 0.9) * 10 is 0.9999999999999998 in floating point: still k = 1; and k = floor((1 - q) * n).
    ten = rows(["a"] * 10)
    assert select(ten, np.arange(10.0), FilterConfig("quantile", q=0.9)).tolist() == [0] * 9 + [1]
    assert select(ten, np.arange(10.0), FilterConfig("quantile", q=0.25)).tolist() == [0] * 3 + [1] * 7


def test_quantile_ties_and_nan():
    df = rows(["a"] * 4 + ["b"] * 2)
    scores = np.array([0.5, 0.5, 0.5, np.nan, np.nan, np.nan])
    w = select(df, scores, FilterConfig("quantile", q=0.9))
    assert w.tolist() == [1, 1, 1, 0, 0, 0]  # the best group is kept whole; abstentions never


def test_threshold_is_global():
    df = rows(["a", "a", "b", "b"])
    w = select(df, np.array([0.2, 0.7, 0.5, np.nan]), FilterConfig("threshold", tau=0.5))
    assert w.tolist() == [0, 1, 1, 0]


FILTERS = [
    FilterConfig("quantile", q=0.25),
    FilterConfig("quantile", q=0.5),
    FilterConfig("quantile", q=0.75),
    FilterConfig("quantile", q=1.0),
    FilterConfig("threshold", tau=0.5),
    FilterConfig("threshold", tau=1.0),
    FilterConfig("tournament"),
]


def random_case(rng, discrete: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Prompts of 1..9 samples with random correctness and scores (few distinct values when
    `discrete`: ties everywhere), some NaN."""
    prompts, correct, scores = [], [], []
    for p in range(30):
        n = int(rng.integers(1, 10))
        prompts += [f"p{p}"] * n
        correct += rng.random(n).round().astype(bool).tolist()
        s = rng.integers(0, 3, n) / 2 if discrete else rng.random(n)
        s = np.where(rng.random(n) < 0.1, np.nan, s)
        scores += s.tolist()
    df = rows(prompts)
    df["correct"] = correct
    return df, np.array(scores), np.array(correct)


@pytest.mark.parametrize("cfg", FILTERS, ids=lambda c: f"{c.name}-{c.q if c.name == 'quantile' else c.tau}")
@pytest.mark.parametrize("discrete", [True, False])
def test_no_filter_keeps_a_sample_while_dropping_a_higher_scored_one(cfg, discrete):
    rng = np.random.default_rng(7)
    for _ in range(20):
        df, scores, _ = random_case(rng, discrete)
        kept = select(df, scores, cfg) > 0
        for _, idx in df.groupby("prompt_id").indices.items():
            s, k = scores[idx], kept[idx]
            assert not k[np.isnan(s)].any(), "an abstention was kept"
            if k.any() and (~k & ~np.isnan(s)).any():
                assert s[k].min() > s[~k & ~np.isnan(s)].max(), (s, k)


@pytest.mark.parametrize("cfg", FILTERS, ids=lambda c: f"{c.name}-{c.q if c.name == 'quantile' else c.tau}")
def test_the_oracle_is_the_ceiling_under_every_filter(cfg):
    rng = np.random.default_rng(11)
    for _ in range(20):
        df, _, correct = random_case(rng, discrete=True)
        weights = select(df, correct.astype(float), cfg)
        kept = weights > 0
        has_right = df.assign(c=correct).groupby("prompt_id")["c"].transform("any").to_numpy()
        assert not (kept & ~correct & has_right).any(), "a wrong sample kept beside a right one"
        m = gap_metrics(df, weights, n_boot=0)
        share = df.assign(c=correct).groupby("prompt_id")["c"].any().mean()
        assert math.isclose(m["verification_utility"]["value"], share), cfg


def test_random_control_keeps_as_many_as_its_reference_at_random():
    rng = np.random.default_rng(3)
    df, scores, _ = random_case(rng, discrete=False)
    cfg = FilterConfig("random", q=0.5, reference="quantile")
    ref = select(df, scores, FilterConfig("quantile", q=0.5))
    w = select(df, scores, cfg, seed=1)
    per_prompt = df.assign(w=w, ref=ref).groupby("prompt_id")[["w", "ref"]].sum()
    assert (per_prompt["w"] == per_prompt["ref"]).all()  # the matched budget, prompt by prompt
    assert not np.array_equal(w, ref)  # but not the verifier's choice
    assert np.array_equal(select(df, scores, cfg, seed=1), w)  # seeded
    assert not np.array_equal(select(df, scores, cfg, seed=2), w)
    # the draw is the prompt's own: shuffling the rows does not change which samples are kept
    order = rng.permutation(len(df))
    shuffled = select(df.iloc[order].reset_index(drop=True), scores[order], cfg, seed=1)
    assert np.array_equal(shuffled, w[order])
    # against a threshold reference it matches the threshold's per-prompt counts
    tau = FilterConfig("random", tau=0.6, reference="threshold")
    by_tau = (
        df.assign(
            w=select(df, scores, tau, seed=0), ref=select(df, scores, FilterConfig("threshold", tau=0.6))
        )
        .groupby("prompt_id")[["w", "ref"]]
        .sum()
    )
    assert (by_tau["w"] == by_tau["ref"]).all()
