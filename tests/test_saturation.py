"""Stopping rules on constructed round histories: they fire on a real change and not on noise."""

from __future__ import annotations

import numpy as np

from eval.saturation import SaturationConfig, check, judge

N_PROMPTS, N = 32, 4


def round_metrics(
    t: int, correct: list[int], relative_gap=(0.2, 0.1, 0.3), distinct: list[float] | None = None
):
    """A round's metrics as the loop records them: per-prompt correct counts of N samples."""
    from eval.metrics import pass_at_k_per_prompt

    c = np.array(correct)
    n = np.full(len(c), N)
    distinct = distinct if distinct is not None else [2.0] * len(c)
    pass_n = float(pass_at_k_per_prompt(n, c, N).mean())
    value, low, high = relative_gap
    return {
        "round": t,
        "relative_gap": {"value": value, "ci_low": low, "ci_high": high},
        "pass_at_k": {str(N): {"value": pass_n, "ci_low": None, "ci_high": None}},
        "answer_diversity": {"distinct_answers": {"value": float(np.mean(distinct))}},
        "ci": {"confidence": 0.95},
        "per_prompt": {
            "prompt_id": [f"p{i:02d}" for i in range(len(c))],
            "n": n.tolist(),
            "correct": c.tolist(),
            "distinct_answers": list(distinct),
        },
    }


OFF = {"relative_gap_below": None, "pass_at_k_drop": None, "diversity_drop": None}


def test_a_pass_at_k_drop_within_its_noise_does_not_stop():
    # 32 prompts x 4: pass@4 falls 0.5 -> 0.344 (0.156 > the 0.1 threshold) as 10 prompts lose their
    # correct sample and 5 others gain one: the paired interval of the fall spans 0.
    before = [1] * 16 + [0] * 16
    after = [0] * 10 + [1] * 6 + [1] * 5 + [0] * 11
    history = [round_metrics(0, before), round_metrics(1, after)]
    cfg = SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})
    verdict = judge(history, cfg)["pass_at_k"]
    assert verdict["drop"]["value"] > 0.1 and verdict["drop"]["ci_low"] < 0 < verdict["drop"]["ci_high"]
    assert not verdict["fired"] and check(history, cfg) is None


def test_a_pass_at_k_collapse_stops_with_its_numbers():
    before = [1] * 20 + [0] * 12
    after = [0] * 12 + [1] * 8 + [0] * 12  # 12 prompts lose every correct sample, none gain one
    history = [round_metrics(0, before), round_metrics(1, before), round_metrics(2, after)]
    cfg = SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})
    reason = check(history, cfg)
    assert reason is not None and reason.startswith("pass@4: held-out pass@4 fell from 0.625 (round 0)")
    assert "95% CI" in reason and "effective diversity collapsed" in reason
    verdict = judge(history, cfg)["pass_at_k"]
    assert verdict["fired"] and verdict["drop"]["ci_low"] > 0


def test_relative_gap_rule_reads_the_upper_bound():
    cfg = SaturationConfig(**{**OFF, "relative_gap_below": 0.05, "relative_gap_rounds": 2})
    flat = [1] * 32
    # point estimates below 0.05 but intervals reaching above it: the verifier may still add signal
    noisy = [round_metrics(t, flat, relative_gap=(0.01, -0.1, 0.12)) for t in range(3)]
    assert check(noisy, cfg) is None
    sure = [round_metrics(0, flat)] + [
        round_metrics(t, flat, relative_gap=(0.0, -0.02, 0.03)) for t in (1, 2)
    ]
    reason = check(sure, cfg)
    assert reason is not None and "upper 95% bound stayed below 0.05 for 2 rounds" in reason
    assert check(sure[:2], cfg) is None  # one round after round 0 is not two


def test_diversity_rule_needs_its_interval_below_zero():
    cfg = SaturationConfig(**{**OFF, "diversity_drop": 0.3})
    rng = np.random.default_rng(0)
    first = rng.integers(1, 5, N_PROMPTS).astype(float)
    collapsed = np.ones(N_PROMPTS)
    history = [
        round_metrics(0, [1] * 32, distinct=first.tolist()),
        round_metrics(1, [1] * 32, distinct=collapsed.tolist()),
    ]
    verdict = judge(history, cfg)["diversity"]
    assert verdict["fired"] and verdict["change"]["ci_high"] < 0
    # a 10% fall (past the 5% threshold) made of prompts moving both ways: its interval spans 0
    first, now = [1.0, 4.0] * 16, [3.5, 1.0] * 16
    noisy = [round_metrics(0, [1] * 32, distinct=first), round_metrics(1, [1] * 32, distinct=now)]
    v = judge(noisy, SaturationConfig(**{**OFF, "diversity_drop": 0.05}))["diversity"]
    assert -v["change"]["value"] / v["first"] > 0.05 and v["change"]["ci_low"] < 0 < v["change"]["ci_high"]
    assert not v["fired"]


def test_rules_without_per_prompt_records_do_not_fire():
    history = [round_metrics(0, [1] * 32), round_metrics(1, [0] * 32)]
    for h in history:
        del h["per_prompt"]
    assert check(history, SaturationConfig(**{**OFF, "pass_at_k_drop": 0.1})) is None
