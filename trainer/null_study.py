"""Null studies: simulated studies in which nothing happens, judged by the loop's own code.

A verdict mindgap prints ("diversity collapsed at round 3", "self-verification beats the random
control") must hold its stated error rate when nothing is going on. A null study checks it: each
round's held-out rows (answers, correctness, completions, verifier scores) are drawn from a model the
scenario defines, filtered by the loop's filter (`trainer.stages.select_rows`), summarised by the
per-prompt record of the loop's `eval.gap.summarize` and judged after every round by `eval.saturation.judge`, as
`Study.judge` does; a comparison's rounds go through `eval.compare.differences` with its Holm
correction. A rule that fires in a null study is a false alarm, and the share of null studies with
one is the study-wise false-fire rate, which must be at most 1 − confidence.

Scenarios (the model of a prompt: its chance of a right answer p_x ~ Beta with the given mean, its
wrong answers drawn from a few values of Zipf-like popularity, some wrong samples with no answer;
the answer-based rules are judged, not the text-based distinct-n):

- `unchanged`: the same model every round, a verifier with no signal: the pass@k and diversity rules
  may not fire;
- `accuracy_rises`: accuracy climbs from the start to `final_accuracy` while every wrong answer stays
  distinct: no diversity rule may fire on `distinct_wrong` (`distinct_answers` does: the confound);
- `verifier_at_epsilon`: the same model, a verifier whose true relative gap is exactly the rule's ε
  (an oracle on a share ε / R of the prompts, R the oracle's relative gap, no signal elsewhere): the
  relative-gap rule may not fire;
- `comparison`: conditions that differ in nothing; each training run drifts by its own random effect
  (a random walk on the logit of every prompt's accuracy) plus noise per prompt; replicate r of every
  condition starts from the same round 0 (one starting model, one seed): no "beats" or "worse than"
  verdict may be printed.

    rates = run_scenario(NullSetup(prompts=32, rounds=10), "unchanged", studies=200)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from eval.gap import per_prompt_record
from eval.saturation import SaturationConfig, judge
from trainer.filters import FilterConfig
from trainer.stages import select_rows
from trainer.verifiers.base import VerifierConfig

SCENARIOS = ("unchanged", "accuracy_rises", "verifier_at_epsilon", "comparison")


@dataclass
class NullSetup:
    """The sizes and rules of the simulated studies (a study config's, by default the IterateConfig's)."""

    prompts: int = 32
    samples: int = 4
    rounds: int = 10
    accuracy: float = 0.3  # the mean chance of a right answer at round 0
    concentration: float = 1.5  # of the Beta of the prompts' accuracies (small: prompts differ a lot)
    wrong_values: int = 6  # distinct wrong answers a prompt draws from
    no_answer: float = 0.05  # share of wrong samples that state no answer
    final_accuracy: float = 0.85  # accuracy_rises: the last round's mean accuracy
    filter: FilterConfig = field(default_factory=lambda: FilterConfig("quantile", q=0.75))
    saturation: SaturationConfig = field(default_factory=SaturationConfig)
    n_boot: int = 1000
    confidence: float = 0.95
    # comparison
    conditions: int = 3
    replicates: int = 3
    run_drift: float = 0.25  # SD of a training run's step on the logit scale, per round
    prompt_noise: float = 0.3  # SD of a run's per-prompt deviation on the logit scale


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@dataclass
class _Model:
    """One simulated model's prompts: accuracies and wrong-answer popularity."""

    p: np.ndarray
    wrong: np.ndarray  # prompts × wrong_values probabilities


def _model(setup: NullSetup, rng: np.random.Generator) -> _Model:
    a = setup.accuracy * setup.concentration
    b = (1 - setup.accuracy) * setup.concentration
    p = rng.beta(a, b, setup.prompts)
    zipf = 1 / np.arange(1, setup.wrong_values + 1)
    wrong = np.stack([rng.permutation(zipf) for _ in range(setup.prompts)])
    return _Model(p, wrong / wrong.sum(axis=1, keepdims=True))


def round_rows(
    setup: NullSetup,
    model: _Model,
    rng: np.random.Generator,
    p: np.ndarray | None = None,
    distinct_wrong: bool = False,
    oracle_prompts: np.ndarray | None = None,
    tag: str = "",
) -> pd.DataFrame:
    """A round's held-out rows as the loop's evaluation holds them, scored by a verifier with no signal
    (an oracle on `oracle_prompts`); `p` replaces the model's accuracies, `distinct_wrong` makes every
    wrong answer a new one."""
    p = model.p if p is None else p
    n = setup.samples
    correct = rng.random((setup.prompts, n)) < p[:, None]
    scores = rng.random((setup.prompts, n))
    if oracle_prompts is not None:
        scores[oracle_prompts] = correct[oracle_prompts] + 0.01 * scores[oracle_prompts]
    records = []
    for x in range(setup.prompts):
        picks = rng.choice(setup.wrong_values, size=n, p=model.wrong[x])
        silent = rng.random(n) < setup.no_answer
        for i in range(n):
            if correct[x, i]:
                answer = f"g{x}"
            elif silent[i]:
                answer = None
            else:
                answer = f"u{tag}_{x}_{i}" if distinct_wrong else f"x{x}_{picks[i]}"
            records.append(
                {
                    "prompt_id": f"p{x:04d}",
                    "sample_idx": i,
                    "n_tokens": 7,
                    "finish_reason": "stop",
                    "answer": answer,
                    "correct": bool(correct[x, i]),
                    "score_mc": float(scores[x, i]),
                }
            )
    return pd.DataFrame.from_records(records)


def evaluate(setup: NullSetup, rows: pd.DataFrame, t: int, seed: int) -> dict:
    """What the stopping rules and comparisons read of a round, made by the loop's own code: the
    filter's kept flags, then the per-prompt record `eval.gap.summarize` stores in metrics.json (the
    headline numbers and their intervals are left out: the rules compute their own bounds)."""
    rows = select_rows(rows, [VerifierConfig("mc")], setup.filter, seed)
    return {"round": t, "primary_verifier": "mc", "train": {}, "per_prompt": per_prompt_record(rows, ["mc"])}


def oracle_relative_gap(setup: NullSetup) -> float:
    """The expected relative gap of an oracle under the setup's filter (keep k of n, the best score a
    right sample) on prompts with J(f) < 1: exactly, over the Beta-binomial of correct counts."""
    from scipy.stats import betabinom

    n = setup.samples
    a = setup.accuracy * setup.concentration
    b = (1 - setup.accuracy) * setup.concentration
    c = np.arange(n)  # J(f) < 1: fewer than n right
    weight = betabinom.pmf(c, n, a, b)
    # it keeps only right samples where a prompt has one (J(f[w]) = 1, a relative gap of 1), else 0
    return float(weight[c >= 1].sum() / weight.sum())


def study_fires(setup: NullSetup, scenario: str, seed: int) -> dict[str, bool]:
    """Simulate one null study of `scenario`; which rules fired in any round."""
    rng = np.random.default_rng(seed)
    model = _model(setup, rng)
    cfg = setup.saturation
    variants = {"": cfg}
    if scenario == "unchanged":
        variants = {
            "pass_at_k": replace(cfg, relative_gap_below=None, diversity_drop=None),
            **{
                f"diversity:{m}": replace(
                    cfg, relative_gap_below=None, pass_at_k_drop=None, diversity_metric=m
                )
                for m in ("distinct_wrong", "distinct_answers", "answer_entropy")
            },
        }
    elif scenario == "accuracy_rises":
        variants = {
            f"diversity:{m}": replace(cfg, relative_gap_below=None, pass_at_k_drop=None, diversity_metric=m)
            for m in ("distinct_wrong", "distinct_answers")
        }
    elif scenario == "verifier_at_epsilon":
        variants = {"relative_gap": replace(cfg, pass_at_k_drop=None, diversity_drop=None)}
    eps = cfg.relative_gap_below or 0.0
    share = eps / oracle_relative_gap(setup) if scenario == "verifier_at_epsilon" else 0.0
    # accuracy_rises: every prompt's chance of a wrong answer shrinks by the same factor each round,
    # so the mean accuracy goes from `accuracy` to `final_accuracy` in `rounds` rounds
    shrink = ((1 - setup.final_accuracy) / (1 - setup.accuracy)) ** (1 / max(setup.rounds, 1))
    history, fired = [], dict.fromkeys(variants, False)
    for t in range(setup.rounds + 1):
        p = None
        if scenario == "accuracy_rises":
            p = 1 - (1 - model.p) * shrink**t
        oracle = rng.random(setup.prompts) < share if share else None
        rows = round_rows(
            setup,
            model,
            rng,
            p,
            distinct_wrong=scenario == "accuracy_rises",
            oracle_prompts=oracle,
            tag=str(t),
        )
        history.append(evaluate(setup, rows, t, seed))
        if t == 0:
            continue
        for name, rules in variants.items():
            verdicts = judge(history, rules, setup.rounds, setup.n_boot, setup.confidence, seed)
            fired[name] |= any(v["fired"] for v in verdicts.values())
    return fired


def comparison_fires(setup: NullSetup, seed: int, replicates: int | None = None) -> dict[str, bool]:
    """Simulate one null comparison (conditions that differ in nothing); whether the comparison printed
    a verdict (`holm`: mindgap's; `bootstrap`: a plain two-level bootstrap's percentile interval at
    the same level without correction, for contrast)."""
    from eval.compare import common_prompts, differences, matrix

    reps = replicates or setup.replicates
    rng = np.random.default_rng(seed)
    model = _model(setup, rng)
    start = [evaluate(setup, round_rows(setup, model, rng), 0, seed + r) for r in range(reps)]
    histories = {}
    for c in range(setup.conditions):
        runs = []
        for r in range(reps):
            drift, history = np.zeros(setup.prompts), [start[r]]
            for t in range(1, setup.rounds + 1):
                drift = drift + rng.normal(0, setup.run_drift)
                p = _sigmoid(_logit(model.p) + drift + rng.normal(0, setup.prompt_noise, setup.prompts))
                history.append(evaluate(setup, round_rows(setup, model, rng, p), t, seed + r))
            runs.append(history)
        histories[f"c{c}"] = runs
    alpha = 1 - setup.confidence
    diffs = differences(histories, "c0", setup.n_boot, setup.confidence, seed)
    holm_fired = any(
        d["accuracy"].get("p_holm") is not None and d["accuracy"]["p_holm"] < alpha for d in diffs
    )
    boot_fired = False
    if reps > 1:
        for d in diffs:
            if d["round"] == 0:
                continue
            t, name = d["round"], d["condition"]
            prompts = common_prompts(histories, t)
            a, b = (
                matrix(histories[name], t, "accuracy", prompts),
                matrix(histories["c0"], t, "accuracy", prompts),
            )
            low, high = two_level_bootstrap(a - b, setup.confidence, setup.n_boot, rng)
            boot_fired |= low > 0 or high < 0
    return {"holm": holm_fired, "bootstrap": boot_fired}


def two_level_bootstrap(
    d: np.ndarray, confidence: float, n_boot: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The percentile interval of a seeds × prompts mean resampling seeds and prompts (the plain
    hierarchical bootstrap), for contrast with the interval mindgap uses."""
    r, p = d.shape
    seeds = rng.multinomial(r, [1 / r] * r, size=n_boot)
    prompts = rng.multinomial(p, [1 / p] * p, size=n_boot)
    means = ((seeds @ d) * prompts).sum(axis=1) / (r * p)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def rate(hits: int, total: int, confidence: float = 0.95) -> dict:
    """A false-fire rate with its Clopper–Pearson interval."""
    from scipy.stats import binomtest

    ci = binomtest(hits, total).proportion_ci(confidence_level=confidence, method="exact")
    return {
        "rate": hits / total,
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "hits": hits,
        "studies": total,
    }


def run_scenario(setup: NullSetup, scenario: str, studies: int, seed: int = 0) -> dict[str, dict]:
    """Each rule's (or verdict's) study-wise false-fire rate over `studies` simulated null studies."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: one of {SCENARIOS}, got {scenario!r}")
    counts: dict[str, int] = {}
    for i in range(studies):
        if scenario == "comparison":
            fired = comparison_fires(setup, seed + i)
            if setup.replicates > 1:
                one = comparison_fires(setup, seed + i, replicates=1)
                fired["holm, one run per condition"] = one["holm"]
        else:
            fired = study_fires(setup, scenario, seed + i)
        for name, hit in fired.items():
            counts[name] = counts.get(name, 0) + int(hit)
    return {name: rate(hits, studies) for name, hits in counts.items()}
