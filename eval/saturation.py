"""When to stop self-improvement: the round-by-round metrics say it has saturated or collapsed.

Each rule reads the held-out per-prompt records of every round so far (paired: the same prompts every
round) and fires only where a one-sided bound excludes its null:

- relative gap: in each of the last `relative_gap_rounds` rounds the upper bound of the relative gap
  is below `relative_gap_below` (the verifier confidently adds less than that);
- pass@k at the largest k: it fell by more than `pass_at_k_drop` below the best earlier round, and
  the lower bound of that fall is above 0. The best earlier round is picked by the data, so the bound
  holds for every earlier round at once (max-t bootstrap: the studentized falls from all earlier
  rounds share one critical value, the quantile of their maximum);
- diversity (`diversity_metric`): it fell by more than the fraction `diversity_drop` of round 0's
  value, and the upper bound of its change from round 0 is below 0. The default metric,
  `distinct_wrong`, is the spread of the wrong answers, which a model that only gets more accurate
  does not lose (the distinct answers of all samples fall as accuracy rises).

The study's error rate. A rule is checked after every round, so a study gives it many chances to
fire on noise. Each rule spends α = 1 − confidence over the rounds it can fire on: after every round
it tests at level α/m, m = the study's rounds (rounds − relative_gap_rounds + 1 for the relative-gap
rule, which needs that many rounds first). By the union bound a rule fires on a study whose model
does not change (a verifier whose relative gap stays at or above ε) with probability at most α,
whatever the number of rounds and however the rounds depend on each other. `docs/null_study.py`
simulates such studies through `judge` and measures each rule's study-wise false-fire rate.

`judge` reports every rule after the last round: its numbers, its bound, whether it fired, and a
line that says what the rule needs and what was seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.config import knob
from core.errors import UserError

DIVERSITY_METRICS = ("distinct_wrong", "distinct_answers", "answer_entropy", "distinct_1", "distinct_2")

# Resamples behind a one-sided bound at level `a`: at least this many draws beyond the quantile, so a
# study-wise correction over many rounds does not read its bound off a handful of draws.
TAIL_DRAWS = 20


@dataclass
class SaturationConfig:
    """Stopping rules, each off when set to null. They read the held-out metrics of each round."""

    relative_gap_below: float | None = knob(
        0.01, "stop when the relative gap's upper bound stays below this for relative_gap_rounds rounds"
    )
    relative_gap_rounds: int = knob(2, "consecutive rounds for the relative-gap rule")
    pass_at_k_drop: float | None = knob(
        0.1,
        "stop when held-out pass@k at the largest k fell this far below its best earlier round (lower bound above 0)",
    )
    diversity_drop: float | None = knob(
        0.5, "stop when diversity fell by this fraction of round 0's (upper bound of the change below 0)"
    )
    diversity_metric: str = knob(
        "distinct_wrong",
        "distinct_wrong (spread of the wrong answers; does not fall when only accuracy rises) | "
        "distinct_answers | answer_entropy | distinct_1 | distinct_2",
    )
    stop: bool = knob(
        True, "stop the study when a rule fires; false: record every verdict and run all rounds"
    )

    def validate(self, key: str) -> None:
        if self.relative_gap_rounds < 1:
            raise UserError(f"{key}.relative_gap_rounds: must be >= 1, got {self.relative_gap_rounds}")
        if self.diversity_drop is not None and not 0 < self.diversity_drop <= 1:
            raise UserError(f"{key}.diversity_drop: must be in (0, 1], got {self.diversity_drop}")
        if self.pass_at_k_drop is not None and not 0 <= self.pass_at_k_drop < 1:
            raise UserError(f"{key}.pass_at_k_drop: must be in [0, 1), got {self.pass_at_k_drop}")
        if self.diversity_metric not in DIVERSITY_METRICS:
            raise UserError(
                f"{key}.diversity_metric: unknown value '{self.diversity_metric}'; choose one of "
                f"{', '.join(DIVERSITY_METRICS)}"
            )


def check(
    history: list[dict],
    cfg: SaturationConfig,
    rounds: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> str | None:
    """The reason to stop after the last round in `history` (one metrics dict per round), or None."""
    for verdict in judge(history, cfg, rounds, n_boot, confidence, seed).values():
        if verdict["fired"]:
            return verdict["reason"]
    return None


def judge(
    history: list[dict],
    cfg: SaturationConfig,
    rounds: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """Every enabled rule after the last round of `history` in a study of `rounds` rounds (after round
    0): its statistic, bound, whether it fired, and `reason` (what it needs and what was seen; for a
    rule that fired, the reason to stop)."""
    if len(history) < 2:
        return {}
    rounds = max(int(rounds), len(history) - 1)  # a study cut short on a resume was checked this often
    alpha = 1.0 - confidence
    out = {}
    if cfg.relative_gap_below is not None:
        checks = max(1, rounds - cfg.relative_gap_rounds + 1)
        out["relative_gap"] = _relative_gap_rule(history, cfg, _Level(alpha, checks), n_boot, seed)
    if cfg.pass_at_k_drop is not None:
        out["pass_at_k"] = _pass_at_k_rule(history, cfg, _Level(alpha, rounds), n_boot, seed)
    if cfg.diversity_drop is not None:
        out["diversity"] = _diversity_rule(history, cfg, _Level(alpha, rounds), n_boot, seed)
    return out


def stop_reason(verdicts: dict[str, dict], cfg: SaturationConfig) -> str | None:
    """The first fired rule's reason, where the config stops on it."""
    if not cfg.stop:
        return None
    return next((v["reason"] for v in verdicts.values() if v["fired"]), None)


@dataclass(frozen=True)
class _Level:
    """A rule's share of the study's error rate: α spread over `checks` rounds."""

    alpha: float
    checks: int

    @property
    def per_round(self) -> float:
        return self.alpha / self.checks

    def draws(self, n_boot: int) -> int:
        return max(n_boot, math.ceil(TAIL_DRAWS / self.per_round))

    def text(self) -> str:
        each = f"{(1 - self.per_round) * 100:.4g}%"
        if self.checks == 1:
            return f"one-sided {each}"
        return f"one-sided {each} each, {(1 - self.alpha) * 100:g}% over the study's {self.checks} checks"

    def record(self) -> dict:
        return {"alpha": self.alpha, "checks": self.checks, "per_round": self.per_round}


def _resample_counts(rng: np.random.Generator, n_prompts: int, draws: int) -> np.ndarray:
    """How often each prompt is drawn in each of `draws` bootstrap resamples (draws × prompts)."""
    idx = rng.integers(0, n_prompts, size=(draws, n_prompts)) + n_prompts * np.arange(draws)[:, None]
    return np.bincount(idx.ravel(), minlength=draws * n_prompts).reshape(draws, n_prompts).astype(float)


def _paired_rows(history: list[dict]) -> tuple[list[str], list[dict]] | None:
    """The prompts every round evaluated, and each round's per-prompt record aligned to them
    (list values as arrays; each verifier's verification utility under `verification_utility.<id>`)."""
    records = [h.get("per_prompt") for h in history]
    if any(r is None for r in records):
        return None
    common = set(records[0]["prompt_id"])
    for r in records[1:]:
        common &= set(r["prompt_id"])
    prompts = sorted(common)
    if len(prompts) < 2:
        return None
    aligned = []
    for r in records:
        pos = {p: i for i, p in enumerate(r["prompt_id"])}
        order = [pos[p] for p in prompts]
        row = {}
        for k, v in r.items():
            if isinstance(v, list) and k != "prompt_id":
                row[k] = np.asarray([np.nan if x is None else x for x in v], dtype=float)[order]
            elif isinstance(v, dict):  # verification_utility: {verifier id: per-prompt list}
                for vid, vals in v.items():
                    row[f"{k}.{vid}"] = np.asarray([np.nan if x is None else x for x in vals], dtype=float)[
                        order
                    ]
        aligned.append(row)
    return prompts, aligned


def _f(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.3f}"


# ---------------------------------------------------------------- relative gap


def _relative_gap_rule(
    history: list[dict], cfg: SaturationConfig, level: _Level, n_boot: int, seed: int
) -> dict:
    r, eps = cfg.relative_gap_rounds, cfg.relative_gap_below
    rounds = history[-r:]
    needs = f"needs its upper bound ({level.text()}) < {eps} in {r} consecutive round{'s' * (r > 1)}"
    if len(history) <= r:  # round 0 (the starting model) never counts
        return {
            "fired": False,
            "threshold": eps,
            "level": level.record(),
            "reason": f"relative gap: {needs}; only {len(history) - 1} round(s) so far",
        }
    highs = [_relative_gap_upper(h, level, n_boot, seed) for h in rounds]
    fired = all(x is not None and x < eps for x in highs)
    seen = ", ".join(f"round {h['round']}'s is {_f(x)}" for h, x in zip(rounds, highs))
    if fired:
        reason = (
            f"relative gap: its upper bound stayed below {eps} for {r} round{'s' * (r > 1)} ({seen}; "
            f"{level.text()}): the verifier no longer adds signal"
        )
    else:
        reason = f"relative gap: {needs}; {seen}"
    return {
        "fired": bool(fired),
        "rounds": [h["round"] for h in rounds],
        "ci_high": highs,
        "threshold": eps,
        "level": level.record(),
        "reason": reason,
    }


def _relative_gap_upper(h: dict, level: _Level, n_boot: int, seed: int) -> float | None:
    """The one-sided upper bound of a round's relative gap, from its per-prompt records (the first
    verifier's verification utility against the generation utility)."""
    pp = h.get("per_prompt") or {}
    ver = (pp.get("verification_utility") or {}).get(h.get("primary_verifier"))
    if ver is None or n_boot == 0:
        return None
    n, c = np.asarray(pp["n"], dtype=float), np.asarray(pp["correct"], dtype=float)
    gen = c / n
    ver = np.asarray([np.nan if v is None else v for v in ver], dtype=float)
    open_ = (gen < 1) & np.isfinite(ver)
    rel = (ver[open_] - gen[open_]) / (1 - gen[open_])
    if len(rel) < 2:
        return None
    rng = np.random.default_rng(seed + int(h["round"]))
    means = _resample_counts(rng, len(rel), level.draws(n_boot)) @ rel / len(rel)
    return float(np.quantile(means, 1 - level.per_round))


# ---------------------------------------------------------------- pass@k


def _pass_at_k_rule(
    history: list[dict], cfg: SaturationConfig, level: _Level, n_boot: int, seed: int
) -> dict:
    from eval.metrics import pass_at_k_per_prompt

    paired = _paired_rows(history)
    if paired is None:
        return {"fired": False, "reason": "pass@k: no per-prompt records to pair rounds on"}
    prompts, rows = paired
    k = min(int(np.nanmin(r["n"])) for r in rows)  # the largest k every round's prompts allow
    values = np.stack([pass_at_k_per_prompt(r["n"], r["correct"], k) for r in rows])  # rounds × prompts
    falls = values[:-1] - values[-1]  # each earlier round minus the last, per prompt
    mean_falls = falls.mean(axis=1)
    best = int(np.argmax(mean_falls))
    drop = float(mean_falls[best])
    lower = _simultaneous_lower(falls, level, n_boot, seed)
    fired = lower is not None and drop > cfg.pass_at_k_drop and lower > 0
    best_round, best_value, now = history[best]["round"], float(values[best].mean()), float(values[-1].mean())
    seen = (
        f"best earlier round {best_round} {best_value:.3f}, now {now:.3f}: fall {drop:+.3f}, lower bound "
        f"{_f(lower)}"
    )
    if fired:
        reason = (
            f"pass@{k}: held-out pass@{k} fell from {best_value:.3f} (round {best_round}) to {now:.3f}, a "
            f"drop of {drop:.3f} (> {cfg.pass_at_k_drop}; lower bound {lower:+.3f} > 0, {level.text()}): "
            "effective diversity collapsed"
        )
    else:
        reason = (
            f"pass@{k}: needs a fall > {cfg.pass_at_k_drop} below the best earlier round with its lower "
            f"bound ({level.text()}) > 0; {seen}"
        )
    return {
        "fired": bool(fired),
        "k": k,
        "best_round": best_round,
        "best": best_value,
        "now": now,
        "drop": {"value": drop, "ci_low": lower, "ci_high": None},
        "threshold": cfg.pass_at_k_drop,
        "level": level.record(),
        "reason": reason,
    }


def _simultaneous_lower(falls: np.ndarray, level: _Level, n_boot: int, seed: int) -> float | None:
    """A lower bound, at level 1 − level.per_round, on the largest true fall among the earlier rounds
    (`falls`: earlier rounds × prompts). Max-t: each fall is studentized by its bootstrap spread and the
    critical value is the quantile of the largest centred, studentized fall, so the bound holds for
    every earlier round at once and picking the best one does not inflate it."""
    if n_boot == 0:
        return None
    n_prompts = falls.shape[1]
    mean = falls.mean(axis=1)
    rng = np.random.default_rng(seed)
    draws = _resample_counts(rng, n_prompts, level.draws(n_boot)) @ falls.T / n_prompts  # draws × rounds
    se = draws.std(axis=0)
    varies = se > 0
    if not varies.any():  # every prompt fell by the same amount from each round: nothing to resample
        return float(mean.max())
    z = ((draws[:, varies] - mean[varies]) / se[varies]).max(axis=1)
    crit = float(np.quantile(z, 1 - level.per_round))
    bounds = np.where(varies, mean - crit * np.where(varies, se, 0.0), mean)
    return float(bounds.max())


# ---------------------------------------------------------------- diversity


def _diversity_rule(
    history: list[dict], cfg: SaturationConfig, level: _Level, n_boot: int, seed: int
) -> dict:
    key = cfg.diversity_metric
    paired = _paired_rows(history)
    if paired is None or key not in paired[1][0]:
        return {"fired": False, "metric": key, "reason": f"{key}: no per-prompt records to pair rounds on"}
    _, rows = paired
    first, now = rows[0][key], rows[-1][key]
    both = np.isfinite(first) & np.isfinite(now)
    first, now = first[both], now[both]
    if len(first) < 2 or first.mean() <= 0:
        return {
            "fired": False,
            "metric": key,
            "reason": f"{key}: undefined in round 0 (or on fewer than 2 prompts of both rounds)",
        }
    change = float(now.mean() - first.mean())
    fell = -change / first.mean()
    upper = None
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = _resample_counts(rng, len(first), level.draws(n_boot)) @ (now - first) / len(first)
        upper = float(np.quantile(draws, 1 - level.per_round))
    fired = upper is not None and fell > cfg.diversity_drop and upper < 0
    seen = (
        f"{first.mean():.3f} (round 0) → {now.mean():.3f} on {len(first)} prompts: change {change:+.3f}, "
        f"upper bound {_f(upper)}"
    )
    if fired:
        reason = (
            f"{key}: fell from {first.mean():.3f} (round 0) to {now.mean():.3f}, by {fell:.0%} of round 0's "
            f"(> {cfg.diversity_drop:.0%}; change {change:+.3f}, upper bound {upper:+.3f} < 0, "
            f"{level.text()}): diversity collapsed"
        )
    else:
        reason = (
            f"{key}: needs a fall by > {cfg.diversity_drop:.0%} of round 0's with the upper bound of the change "
            f"({level.text()}) < 0; {seen}"
        )
    return {
        "fired": bool(fired),
        "metric": key,
        "first": float(first.mean()),
        "now": float(now.mean()),
        "prompts": int(len(first)),
        "change": {"value": change, "ci_low": None, "ci_high": upper},
        "threshold": cfg.diversity_drop,
        "level": level.record(),
        "reason": reason,
    }
