"""When to stop self-improvement: the round-by-round metrics say it has saturated or collapsed.

Each rule reads the held-out metrics of every round so far and fires only where its confidence
interval excludes the null, so a rule does not stop a study on noise:

- relative gap: its upper CI bound is below `relative_gap_below` in each of the last
  `relative_gap_rounds` rounds (the verifier confidently adds less than that);
- pass@k at the largest k: it fell by more than `pass_at_k_drop` from the best earlier round, and the
  paired bootstrap CI of that fall (same held-out prompts; the best round is chosen again in every
  resample, so picking the best does not inflate the fall) lies above 0;
- diversity (`diversity_metric`): it fell by more than the fraction `diversity_drop` of round 0's,
  and the paired CI of its change from round 0 lies below 0.

`judge` reports every rule with its numbers and interval, fired or not; `check` gives the reason of
the first rule that fired. Paired rules need each round's `per_prompt` record (eval/gap.summarize).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.config import knob
from core.errors import UserError

DIVERSITY_METRICS = ("distinct_answers", "answer_entropy", "distinct_1", "distinct_2")


@dataclass
class SaturationConfig:
    """Stopping rules, each off when set to null. They read the held-out metrics of each round."""

    relative_gap_below: float | None = knob(
        0.01, "stop when the relative gap's upper CI bound stays below this for relative_gap_rounds rounds"
    )
    relative_gap_rounds: int = knob(2, "consecutive rounds for the relative-gap rule")
    pass_at_k_drop: float | None = knob(
        0.1,
        "stop when held-out pass@k at the largest k fell this far below its best round (paired CI above 0)",
    )
    diversity_drop: float | None = knob(
        0.5, "stop when diversity fell by this fraction of round 0's (paired CI below 0)"
    )
    diversity_metric: str = knob(
        "distinct_answers", "distinct_answers | answer_entropy | distinct_1 | distinct_2"
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


def check(history: list[dict], cfg: SaturationConfig, n_boot: int = 1000, seed: int = 0) -> str | None:
    """The reason to stop after the last round in `history` (one metrics dict per round), or None."""
    for verdict in judge(history, cfg, n_boot, seed).values():
        if verdict["fired"]:
            return verdict["reason"]
    return None


def judge(history: list[dict], cfg: SaturationConfig, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Every enabled rule after the last round: its statistic, interval, whether it fired, and why."""
    if len(history) < 2:
        return {}
    out = {}
    if cfg.relative_gap_below is not None:
        out["relative_gap"] = _relative_gap_rule(history, cfg)
    if cfg.pass_at_k_drop is not None:
        out["pass_at_k"] = _pass_at_k_rule(history, cfg, n_boot, seed)
    if cfg.diversity_drop is not None:
        out["diversity"] = _diversity_rule(history, cfg, n_boot, seed)
    return out


def _level(history: list[dict]) -> float:
    return float((history[-1].get("ci") or {}).get("confidence", 0.95))


def _fmt(m: dict) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:+.3f}"

    return f"{f(m.get('value'))} [{f(m.get('ci_low'))}, {f(m.get('ci_high'))}]"


def _relative_gap_rule(history: list[dict], cfg: SaturationConfig) -> dict:
    rounds = history[-cfg.relative_gap_rounds :]
    eps = cfg.relative_gap_below
    enough = len(history) > cfg.relative_gap_rounds  # round 0 (the starting model) never counts
    highs = [(h.get("relative_gap") or {}).get("ci_high") for h in rounds]
    fired = enough and all(x is not None and x < eps for x in highs)
    level = f"{_level(history) * 100:g}%"
    shown = "; ".join(f"round {h['round']} {_fmt(h['relative_gap'])}" for h in rounds)
    return {
        "fired": bool(fired),
        "rounds": [h["round"] for h in rounds],
        "ci_high": highs,
        "threshold": eps,
        "reason": (
            f"relative gap: its upper {level} bound stayed below {eps} for {cfg.relative_gap_rounds} "
            f"rounds ({shown}): the verifier no longer adds signal"
        ),
    }


def _paired_rows(history: list[dict]) -> tuple[list[str], list[dict]] | None:
    """The prompts every round evaluated, and each round's per-prompt record aligned to them."""
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
        aligned.append(
            {
                k: np.asarray(v, dtype=float)[order]
                for k, v in r.items()
                if isinstance(v, list) and k != "prompt_id"
            }
        )
    return prompts, aligned


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return float("nan"), float("nan")
    alpha = 1 - level
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _pass_at_k_rule(history: list[dict], cfg: SaturationConfig, n_boot: int, seed: int) -> dict:
    from eval.metrics import pass_at_k_per_prompt

    level = _level(history)
    paired = _paired_rows(history)
    kmax = max((int(k) for k in history[-1]["pass_at_k"]), default=1)
    if paired is None:
        return {"fired": False, "reason": "pass@k: no per-prompt records to pair rounds on", "k": kmax}
    prompts, rows = paired
    k = min([kmax] + [int(r["n"].min()) for r in rows])
    values = np.stack([pass_at_k_per_prompt(r["n"], r["correct"], k) for r in rows])  # rounds × prompts
    means = values.mean(axis=1)
    best = int(np.argmax(means[:-1]))
    drop = float(means[:-1].max() - means[-1])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(prompts), size=(n_boot, len(prompts)))
    resampled = values[:, idx].mean(axis=2)  # rounds × resamples
    draws = resampled[:-1].max(axis=0) - resampled[-1]
    low, high = _interval(draws, level)
    fired = drop > cfg.pass_at_k_drop and low > 0
    best_round = history[best]["round"]
    return {
        "fired": bool(fired),
        "k": k,
        "best_round": best_round,
        "best": float(means[best]),
        "now": float(means[-1]),
        "drop": {"value": drop, "ci_low": low, "ci_high": high},
        "threshold": cfg.pass_at_k_drop,
        "reason": (
            f"pass@{k}: held-out pass@{k} fell from {means[best]:.3f} (round {best_round}) to "
            f"{means[-1]:.3f}, a drop of {drop:.3f} [{level * 100:g}% CI {low:+.3f}, {high:+.3f}] "
            f"(> {cfg.pass_at_k_drop}, interval above 0): effective diversity collapsed"
        ),
    }


def _diversity_rule(history: list[dict], cfg: SaturationConfig, n_boot: int, seed: int) -> dict:
    key = cfg.diversity_metric
    level = _level(history)
    paired = _paired_rows(history)
    if paired is None or key not in paired[1][0]:
        return {"fired": False, "reason": f"{key}: no per-prompt records to pair rounds on"}
    _, rows = paired
    first, now = rows[0][key], rows[-1][key]
    both = np.isfinite(first) & np.isfinite(now)
    first, now = first[both], now[both]
    if len(first) < 2 or first.mean() <= 0:
        return {"fired": False, "reason": f"{key}: undefined in round 0"}
    change = float(now.mean() - first.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(first), size=(n_boot, len(first)))
    low, high = _interval(now[idx].mean(axis=1) - first[idx].mean(axis=1), level)
    fell = -change / first.mean()
    fired = fell > cfg.diversity_drop and high < 0
    return {
        "fired": bool(fired),
        "metric": key,
        "first": float(first.mean()),
        "now": float(now.mean()),
        "change": {"value": change, "ci_low": low, "ci_high": high},
        "threshold": cfg.diversity_drop,
        "reason": (
            f"{key}: fell from {first.mean():.3f} (round 0) to {now.mean():.3f}, by {fell:.0%} of round 0's "
            f"(> {cfg.diversity_drop:.0%}; change {change:+.3f} [{level * 100:g}% CI {low:+.3f}, "
            f"{high:+.3f}], below 0): diversity collapsed"
        ),
    }
