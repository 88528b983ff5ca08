"""Stopping rules: they fire on a real change, not on noise, and hold their error rate over a study.

The constructed histories check each rule's arithmetic; the null studies (trainer/null_study.py) check
the study-wise false-fire rate through the same code the loop judges with: simulated studies where
nothing changes may stop at most 1 − confidence of the time, whatever the number of rounds.
"""

from __future__ import annotations

import numpy as np
import pytest

from eval.saturation import SaturationConfig, check, judge, stop_reason
from trainer.null_study import NullSetup, oracle_relative_gap, run_scenario

N_PROMPTS, N = 32, 4


def round_metrics(
    t: int, correct: list[int], ver: list[float] | None = None, distinct: list[float] | None = None
):
    """A round's metrics as the loop records them: per-prompt correct counts of N samples, the primary
    verifier's verification utility per prompt (default: the generation utility, no gap)."""
    c = np.array(correct)
    distinct = distinct if distinct is not None else [2.0] * len(c)
    ver = ver if ver is not None else (c / N).tolist()
    return {
        "round": t,
        "primary_verifier": "mc",
        "per_prompt": {
            "prompt_id": [f"p{i:02d}" for i in range(len(c))],
            "n": [N] * len(c),
            "correct": c.tolist(),
            "distinct_answers": list(distinct),
            "verification_utility": {"mc": list(ver)},
        },
    }


OFF = {"relative_gap_below": None, "pass_at_k_drop": None, "diversity_drop": None}


def test_a_pass_at_k_drop_within_its_noise_does_not_stop():
    # 32 prompts x 4: pass@4 falls 0.5 -> 0.344 (0.156 > the 0.1 threshold) as 10 prompts lose their
    # correct sample and 5 others gain one: the lower bound of the fall is below 0.
    before = [1] * 16 + [0] * 16
    after = [0] * 10 + [1] * 6 + [1] * 5 + [0] * 11
    history = [round_metrics(0, before), round_metrics(1, after)]
    cfg = SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})
    verdict = judge(history, cfg, rounds=1)["pass_at_k"]
    assert verdict["drop"]["value"] > 0.1 and verdict["drop"]["ci_low"] < 0
    assert not verdict["fired"] and check(history, cfg, rounds=1) is None
    assert verdict["reason"].startswith("pass@4: needs a fall > 0.1 below the best earlier round")
    assert "lower bound" in verdict["reason"] and "fall +0.156" in verdict["reason"]


def test_a_pass_at_k_collapse_stops_with_its_numbers():
    before = [1] * 20 + [0] * 12
    after = [0] * 12 + [1] * 8 + [0] * 12  # 12 prompts lose every correct sample, none gain one
    history = [round_metrics(0, before), round_metrics(1, before), round_metrics(2, after)]
    cfg = SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})
    reason = check(history, cfg, rounds=3)
    assert reason is not None and reason.startswith("pass@4: held-out pass@4 fell from 0.625 (round 0)")
    assert "over the study's 3 checks" in reason and "effective diversity collapsed" in reason
    verdict = judge(history, cfg, rounds=3)["pass_at_k"]
    assert verdict["fired"] and verdict["drop"]["ci_low"] > 0
    assert verdict["level"]["per_round"] == pytest.approx(0.05 / 3)


def test_the_pass_at_k_bound_is_corrected_for_the_rounds_of_the_study():
    # the same fall is judged at 1 − 0.05/m after each round: a longer study needs a clearer fall
    before = [1] * 20 + [0] * 12
    after = [0] * 5 + [1] * 15 + [0] * 12
    history = [round_metrics(0, before), round_metrics(1, after)]
    cfg = SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})
    bounds = [judge(history, cfg, rounds=m)["pass_at_k"]["drop"]["ci_low"] for m in (1, 3, 10)]
    assert bounds[0] > bounds[1] > bounds[2]


def test_relative_gap_rule_reads_the_upper_bound_at_its_corrected_level():
    cfg = SaturationConfig(**{**OFF, "relative_gap_below": 0.05, "relative_gap_rounds": 2})
    correct = [1, 2] * 16  # every prompt has room to improve
    # a verifier that adds signal on half the prompts: relative gap ~0.5, far above 0.05
    helpful = [1.0, 0.5] * 16
    noisy = [round_metrics(0, correct)] + [round_metrics(t, correct, ver=helpful) for t in (1, 2)]
    verdict = judge(noisy, cfg, rounds=2)["relative_gap"]
    assert not verdict["fired"] and verdict["reason"].startswith("relative gap: needs its upper bound")
    assert "round 2's is" in verdict["reason"]
    # no signal at all: per-prompt relative gap exactly 0, so its upper bound is 0 < 0.05
    flat = [round_metrics(0, correct)] + [round_metrics(t, correct) for t in (1, 2)]
    reason = check(flat, cfg, rounds=2)
    assert reason is not None and "upper bound stayed below 0.05 for 2 rounds" in reason
    assert check(flat[:2], cfg, rounds=2) is None  # one round after round 0 is not two


def test_diversity_rule_needs_its_upper_bound_below_zero():
    cfg = SaturationConfig(**{**OFF, "diversity_drop": 0.3, "diversity_metric": "distinct_answers"})
    rng = np.random.default_rng(0)
    first = rng.integers(1, 5, N_PROMPTS).astype(float)
    collapsed = np.ones(N_PROMPTS)
    history = [
        round_metrics(0, [1] * 32, distinct=first.tolist()),
        round_metrics(1, [1] * 32, distinct=collapsed.tolist()),
    ]
    verdict = judge(history, cfg, rounds=3)["diversity"]
    assert verdict["fired"] and verdict["change"]["ci_high"] < 0
    # a 10% fall (past the 5% threshold) made of prompts moving both ways: its bound is above 0
    first, now = [1.0, 4.0] * 16, [3.5, 1.0] * 16
    noisy = [round_metrics(0, [1] * 32, distinct=first), round_metrics(1, [1] * 32, distinct=now)]
    cfg = SaturationConfig(**{**OFF, "diversity_drop": 0.05, "diversity_metric": "distinct_answers"})
    v = judge(noisy, cfg, rounds=3)["diversity"]
    assert -v["change"]["value"] / v["first"] > 0.05 and v["change"]["ci_high"] > 0
    assert not v["fired"] and v["reason"].startswith("distinct_answers: needs a fall by > 5% of round 0's")


def test_rules_without_per_prompt_records_do_not_fire():
    history = [round_metrics(0, [1] * 32), round_metrics(1, [0] * 32)]
    for h in history:
        del h["per_prompt"]
    assert check(history, SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1}), rounds=1) is None


def test_a_rule_that_fires_stops_only_where_the_config_says_so():
    before, after = [1] * 20 + [0] * 12, [0] * 32
    history = [round_metrics(0, before), round_metrics(1, after)]
    cfg = SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})
    verdicts = judge(history, cfg, rounds=1)
    assert verdicts["pass_at_k"]["fired"] and stop_reason(verdicts, cfg).startswith("pass@4")
    assert stop_reason(verdicts, SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1, "stop": False})) is None


def test_the_default_diversity_metric_is_the_spread_of_the_wrong_answers():
    import pandas as pd

    from eval.metrics import diversity_per_prompt

    rows = pd.DataFrame(
        {
            "prompt_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
            "sample_idx": list(range(4)) * 3,
            # a: 3 wrong, all different; b: 3 wrong, all "7"; c: one wrong (undefined)
            "answer": ["1", "2", "3", "9", "7", "7", "7", "9", "5", "9", "9", "9"],
            "correct": [False, False, False, True, False, False, False, True, False, True, True, True],
        }
    )
    spread = diversity_per_prompt(rows)["distinct_wrong"]
    assert spread["a"] == 1.0 and spread["b"] == 0.0 and np.isnan(spread["c"])
    assert SaturationConfig().diversity_metric == "distinct_wrong"


# ---------------------------------------------------------------- null studies


def _assert_held(rates: dict, name: str, alpha: float = 0.05) -> None:
    """The rate is not above alpha beyond the simulation's noise: its one-sided lower bound (the
    Clopper–Pearson interval of the simulated studies) stays under alpha."""
    r = rates[name]
    assert r["ci_low"] < alpha, f"{name}: fired in {r['hits']} of {r['studies']} null studies"


def test_an_unchanged_model_does_not_stop_a_ten_round_study():
    # Before this rule was corrected over rounds, ~80% of 10-round studies of an unchanged model stopped
    rates = run_scenario(NullSetup(prompts=32, rounds=10), "unchanged", studies=25)
    _assert_held(rates, "pass_at_k")
    _assert_held(rates, "diversity:distinct_wrong")
    assert rates["pass_at_k"]["hits"] <= 3


def test_accuracy_rising_alone_does_not_collapse_diversity():
    rates = run_scenario(NullSetup(prompts=32, rounds=3, final_accuracy=0.85), "accuracy_rises", studies=20)
    _assert_held(rates, "diversity:distinct_wrong")
    assert rates["diversity:distinct_wrong"]["hits"] == 0
    # the distinct answers of all samples fall with accuracy alone: the confound the default avoids
    assert rates["diversity:distinct_answers"]["rate"] > 0.5


def test_a_verifier_at_epsilon_does_not_stop_the_study():
    setup = NullSetup(prompts=32, rounds=5)
    assert 0 < oracle_relative_gap(setup) < 1
    rates = run_scenario(setup, "verifier_at_epsilon", studies=30)
    _assert_held(rates, "relative_gap")
