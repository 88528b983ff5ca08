"""Rare-answer recall against what the filter's budget gives alone (no signal) and with a perfect verifier;
kept-answer entropy only where the filter keeps two or more a prompt."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from eval.metrics import (
    ANSWER_SHARE_BUCKETS,
    answer_share_buckets,
    json_safe,
    kept_answer_entropy,
    rare_answer_recall,
)
from eval.report import entropy_rows, plot_rare_answers, rare_rows, write_report
from tests.helpers import markdown_tables
from trainer.filters import FilterConfig, select

BUCKETS = (*ANSWER_SHARE_BUCKETS, "all")


def frame(prompts: dict[str, list[tuple[str | None, int]]]) -> pd.DataFrame:
    """Rows from {prompt_id: [(answer, correct), ...]}."""
    return pd.DataFrame(
        [
            {"prompt_id": p, "sample_idx": i, "answer": a, "correct": bool(c)}
            for p, samples in prompts.items()
            for i, (a, c) in enumerate(samples)
        ]
    )


def enumerated_baselines(df: pd.DataFrame, kept: np.ndarray) -> dict[str, tuple[float, float]]:
    """Each bucket's expected recall of a random choice of k_x samples and of a perfect choice of
    min(k_x, c_x) correct ones, by going through every such choice of every prompt."""
    bucket = answer_share_buckets(df)
    correct = df["correct"].to_numpy()
    sums = {b: [0.0, 0.0, 0] for b in BUCKETS}
    for _, idx in df.groupby("prompt_id").indices.items():
        k = int(kept[idx].sum())
        right = [i for i in idx if correct[i]]
        for b_i, name in enumerate(BUCKETS):
            mine = [i for i in right if name == "all" or bucket[i] == b_i]
            if not mine:
                continue
            random_sets = list(itertools.combinations(idx, k))
            perfect_sets = list(itertools.combinations(right, min(k, len(right))))
            sums[name][0] += sum(len(set(s) & set(mine)) for s in random_sets) / len(random_sets)
            sums[name][1] += sum(len(set(s) & set(mine)) for s in perfect_sets) / len(perfect_sets)
            sums[name][2] += len(mine)
    return {b: (s[0] / s[2], s[1] / s[2]) for b, s in sums.items() if s[2]}


def test_baselines_are_the_exact_expectations_of_random_and_perfect_choices_at_the_same_budget():
    df = frame(
        {
            # "7" right and common (3 of 4), one wrong; the filter kept one: a random one is right 3/4
            "a": [("7", 1), ("7", 1), ("7", 1), ("9", 0)],
            # a right singleton among wrong ones; kept two
            "b": [("5", 1), ("3", 0), ("3", 0), ("4", 0)],
            # right twice (<= 50%); kept all four (a prompt whose scores tie keeps them all)
            "c": [("2", 1), ("2", 1), ("8", 0), ("6", 0)],
            # 8 samples: the right answer twice (<= 25%), kept three
            "d": [("1", 1), ("1", 1), ("0", 0), ("0", 0), ("0", 0), ("3", 0), ("4", 0), ("5", 0)],
            # nothing right: no correct sample to recall
            "e": [("8", 0), ("9", 0)],
        }
    )
    kept = np.array(
        [0, 0, 1, 0] + [1, 0, 1, 0] + [1, 1, 1, 1] + [1, 0, 1, 1, 0, 0, 0, 0] + [1, 0], dtype=float
    )
    r = rare_answer_recall(df, kept, n_boot=200)
    expected = enumerated_baselines(df, kept)
    assert set(expected) == {b for b in BUCKETS if r[b]["correct"]} == set(BUCKETS)
    for b, (no_signal, oracle) in expected.items():
        assert r[b]["no_signal"]["value"] == pytest.approx(no_signal, abs=1e-12), b
        assert r[b]["oracle"]["value"] == pytest.approx(oracle, abs=1e-12), b
        assert r[b]["lift"]["value"] == pytest.approx(r[b]["recall"]["value"] - no_signal, abs=1e-12), b
    # by hand: a keeps 1 of 4 (3 right): no signal 1/4 each, a perfect verifier 1/3 each
    assert r["gt_50pct"]["no_signal"]["value"] == pytest.approx(0.25)
    assert r["gt_50pct"]["oracle"]["value"] == pytest.approx(1 / 3)
    assert r["gt_50pct"]["recall"]["value"] == pytest.approx(1 / 3)  # the filter kept one of the three
    # every interval holds its value; the lift's is paired with the recall's (same resamples)
    for b in expected:
        for key in ("recall", "no_signal", "oracle", "lift"):
            ci = r[b][key]
            assert ci["ci_low"] <= ci["value"] <= ci["ci_high"], (b, key, ci)


def test_a_verifier_without_signal_shows_no_lift_and_a_perfect_one_reaches_the_oracle():
    rng = np.random.default_rng(0)
    prompts = {}
    for p in range(300):  # 8 samples: the right answer "r" 1-6 times, wrong answers spread
        right = int(rng.integers(1, 7))
        wrong = [str(x) for x in rng.integers(0, 4, 8 - right)]
        prompts[f"p{p:03d}"] = [("r", 1)] * right + [(w, 0) for w in wrong]
    df = frame(prompts)
    cfg = FilterConfig("quantile", q=0.75)  # keep the top 2 of 8
    noise = select(df, rng.random(len(df)), cfg)
    r = rare_answer_recall(df, noise, n_boot=300)
    for b in BUCKETS:
        if r[b]["correct"] >= 50:
            lift = r[b]["lift"]
            assert lift["ci_low"] < 0 < lift["ci_high"], (b, lift)
            assert abs(lift["value"]) < 0.1
    # a perfect verifier (distinct scores, right above wrong) at the same budget: recall is the oracle's
    perfect = select(df, df["correct"].to_numpy() + 0.01 * rng.random(len(df)), cfg)
    r = rare_answer_recall(df, perfect, n_boot=300)
    for b in BUCKETS:
        if r[b]["correct"]:
            assert r[b]["recall"]["value"] == pytest.approx(r[b]["oracle"]["value"]), b
            assert r[b]["lift"]["ci_low"] > 0, b
    # the budget alone favours no bucket: no-signal recall is k/n = 2/8 in every one
    assert all(r[b]["no_signal"]["value"] == pytest.approx(0.25) for b in BUCKETS if r[b]["correct"])


def test_kept_entropy_is_na_with_the_reason_where_the_filter_keeps_one_a_prompt(tmp_path):
    df = frame({p: [("7", 1), ("8", 0), ("7", 1), ("9", 0)] for p in ("a", "b", "c")})
    one = np.array([1, 0, 0, 0] * 3, dtype=float)
    e = kept_answer_entropy(df, one, n_boot=100)
    assert (e["prompts"], e["prompts_one"], e["prompts_empty"]) == (0, 3, 0)
    assert all(math.isnan(e[k]["value"]) for k in ("sampled", "kept", "change"))
    two = kept_answer_entropy(df, np.array([1, 1, 0, 0] * 3, dtype=float), n_boot=100)
    assert two["prompts"] == 3 and two["kept"]["value"] == pytest.approx(math.log(2))

    def record(weights):
        return json_safe(
            {
                "rare_answer_recall": rare_answer_recall(df, weights, n_boot=100),
                "kept_answer_entropy": kept_answer_entropy(df, weights, n_boot=100),
            }
        )

    history = [
        {"round": 0, **record(one)},
        {"round": 1, **record(np.array([1, 1, 0, 0] * 3, dtype=float)), "train": record(one)},
    ]
    rows = entropy_rows(history)
    assert [(r["round"], r["samples"]) for r in rows] == [
        ("0", "held-out"),
        ("1", "held-out"),
        ("1", "train"),
    ]
    for row in (rows[0], rows[2]):
        assert row["kept"] == "n/a: the filter keeps one sample a prompt"
        assert row["sampled"] == row["kept − sampled"] == "n/a"
        assert row["prompts keeping ≥ 2"] == "0 of 3"
    assert rows[1]["kept"].startswith("0.69 [") and rows[1]["prompts keeping ≥ 2"] == "3 of 3"
    recall = rare_rows(history)
    assert {r["answer share"] for r in recall} == {"≤50%", "all correct"}  # buckets without correct: left out
    assert recall[0]["no signal"] == "0.25" and recall[0]["oracle"] == "0.50"
    plot_rare_answers(history, tmp_path / "rare.png")
    assert (tmp_path / "rare.png").stat().st_size > 1000


def test_the_report_shows_recall_beside_its_baselines(tmp_path):
    """report.md of a round whose filter keeps one sample a prompt: the recall table names no signal,
    oracle and the lift; the entropy table says n/a and why."""
    df = frame({p: [("7", 1), ("8", 0), ("7", 1), ("9", 0)] for p in ("a", "b", "c", "d")})

    one = np.array([1, 0, 0, 0] * 4, dtype=float)
    h = {
        "round": 0,
        "generation_utility": {"value": 0.5, "ci_low": 0.3, "ci_high": 0.7},
        "verification_utility": {"value": 1.0, "ci_low": 0.5, "ci_high": 1.0},
        "gap": {"value": 0.5, "ci_low": 0.2, "ci_high": 0.7},
        "relative_gap": {"value": 1.0, "ci_low": 0.5, "ci_high": 1.0},
        "pass_at_k": {"1": {"value": 0.5, "ci_low": 0.3, "ci_high": 0.7}},
        "answer_diversity": {"distinct_answers": {"value": 3.0, "ci_low": None, "ci_high": None}},
        "rare_answer_recall": json_safe(rare_answer_recall(df, one, n_boot=100)),
        "kept_answer_entropy": json_safe(kept_answer_entropy(df, one, n_boot=100)),
    }
    text = write_report(tmp_path, [h], "t").read_text()
    _, recall, entropy = markdown_tables(text)
    assert list(recall[0]) == [
        "round",
        "samples",
        "answer share",
        "kept / correct",
        "recall",
        "no signal",
        "oracle",
        "lift over no signal",
    ]
    # kept one of the two right "7"s in every prompt: recall 1/2, no signal 1/4, oracle 1/2
    row = recall[0]
    assert (row["answer share"], row["kept / correct"]) == ("≤50%", "4 / 8")
    assert row["recall"].startswith("0.50 [") and (row["no signal"], row["oracle"]) == ("0.25", "0.50")
    assert row["lift over no signal"].startswith("+0.25 [")
    assert entropy[0]["kept"] == "n/a: the filter keeps one sample a prompt"


def test_the_entropy_table_stands_without_correct_samples(tmp_path):
    df = frame({p: [("1", 0), ("2", 0), ("1", 0), ("3", 0)] for p in ("a", "b")})

    kept = np.array([1, 0, 1, 0] * 2, dtype=float)
    h = {
        "round": 0,
        "generation_utility": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.66},
        "verification_utility": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.66},
        "gap": {"value": 0.0, "ci_low": -0.66, "ci_high": 0.66},
        "relative_gap": {"value": 0.0, "ci_low": -0.66, "ci_high": 0.66},
        "pass_at_k": {"1": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.66}},
        "answer_diversity": {"distinct_answers": {"value": 3.0, "ci_low": None, "ci_high": None}},
        "rare_answer_recall": json_safe(rare_answer_recall(df, kept, n_boot=100)),
        "kept_answer_entropy": json_safe(kept_answer_entropy(df, kept, n_boot=100)),
    }
    text = write_report(tmp_path, [h], "t").read_text()
    assert "No correct sample to recall yet." in text
    _, entropy = markdown_tables(text)
    assert entropy[0]["prompts keeping ≥ 2"] == "2 of 2" and entropy[0]["kept"].startswith("0.00 [0.00, ")
