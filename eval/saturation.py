"""When to stop self-improvement: the round-by-round metrics say it has saturated or collapsed."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.errors import UserError


@dataclass
class SaturationConfig:
    """Stopping rules, each off when set to null. They read the held-out metrics of each round."""

    relative_gap_below: float | None = 0.01  # stop when the relative gap stays below this ...
    relative_gap_rounds: int = 2  # ... for this many consecutive rounds
    pass_at_k_drop: float | None = 0.1  # stop when pass@k at the largest k falls this far below its best
    diversity_drop: float | None = 0.5  # stop when diversity falls by this fraction of round 0's
    diversity_metric: str = (
        "distinct_answers"  # a key of answer_diversity (distinct_answers, answer_entropy, ...)
    )

    def validate(self, key: str) -> None:
        if self.relative_gap_rounds < 1:
            raise UserError(f"{key}.relative_gap_rounds: must be >= 1, got {self.relative_gap_rounds}")
        if self.diversity_drop is not None and not 0 < self.diversity_drop <= 1:
            raise UserError(f"{key}.diversity_drop: must be in (0, 1], got {self.diversity_drop}")


def check(history: list[dict], cfg: SaturationConfig) -> str | None:
    """The reason to stop after the last round in `history` (one metrics dict per round), or None."""
    if len(history) < 2:
        return None
    last = history[-1]
    if cfg.relative_gap_below is not None and len(history) > cfg.relative_gap_rounds:
        recent = [_value(h["relative_gap"]) for h in history[-cfg.relative_gap_rounds :]]
        if all(r is not None and r < cfg.relative_gap_below for r in recent):
            return (
                f"relative gap below {cfg.relative_gap_below} for {cfg.relative_gap_rounds} rounds "
                f"({', '.join(f'{r:.3f}' for r in recent)}): the verifier no longer adds signal"
            )
    if cfg.pass_at_k_drop is not None:
        kmax = max(last["pass_at_k"], key=int)
        best = max(h["pass_at_k"].get(kmax, 0.0) for h in history[:-1])
        now = last["pass_at_k"][kmax]
        if best - now > cfg.pass_at_k_drop:
            return f"held-out pass@{kmax} fell from its best {best:.3f} to {now:.3f}: effective diversity collapsed"
    if cfg.diversity_drop is not None:
        first = history[0]["answer_diversity"].get(cfg.diversity_metric)
        now = last["answer_diversity"].get(cfg.diversity_metric)
        if first and now is not None and now < (1 - cfg.diversity_drop) * first:
            return (
                f"{cfg.diversity_metric} fell from {first:.3f} to {now:.3f} "
                f"(more than {cfg.diversity_drop:.0%}): diversity collapsed"
            )
    return None


def _value(m):
    return m.get("value") if isinstance(m, dict) else m
