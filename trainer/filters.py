"""Filters turn verifier scores into weights: which generations are kept for distillation.

A NaN score is an abstention (an unparseable verification) and is never kept. Every filter keeps
whole groups of equal scores within a prompt, so none keeps a sample while dropping a higher-scored
one of the same prompt.

quantile   per prompt, the top k = max(1, floor((1 - q) * n)) of its n scored samples (at most the
           share 1 - q, so any q > 0 leaves something out of a prompt of two or more). Ties: a group of
           equal scores that the cut would split is dropped whole, unless it is the prompt's best
           score, which is then kept whole. So distinct scores keep exactly k, and binary scores
           (oracle, a CoT verdict) keep a prompt's 1s where it has any, and where its scores are all
           equal all of its samples (a relative filter has nothing to choose by; `threshold` drops
           them).
threshold  globally, scores >= tau (the natural filter of binary verifiers).
tournament per prompt, the samples with the prompt's best score: a tournament's survivors.
random     the control: per prompt, as many samples as the `reference` filter (quantile, threshold
           or tournament, with this config's q / tau) keeps on the same scores, chosen at random
           (seeded by the study seed, the round and the prompt): training on one's own samples at a
           matched budget, without verification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import knob, one_of
from core.errors import UserError


@dataclass
class FilterConfig:
    """Which generations a verifier's scores keep."""

    name: str = knob(
        "quantile", "quantile (per prompt) | threshold (global) | tournament | random (the control)"
    )
    q: float = knob(0.5, "quantile: keep the top max(1, floor((1 - q) * n)) of each prompt's n samples")
    tau: float = knob(0.5, "threshold: keep scores >= tau")
    reference: str = knob("quantile", "random: keep as many per prompt as this filter would (with q / tau)")

    @property
    def label(self) -> str:
        """`quantile0.5`, `threshold0.5`, `tournament`: the filter named with the knob it turns."""
        knob = {"quantile": self.q, "threshold": self.tau}.get(self.name)
        return f"{self.name}{knob:g}" if knob is not None else self.name

    def validate(self, key: str) -> None:
        one_of(f"{key}.name", self.name, FILTERS)
        one_of(f"{key}.reference", self.reference, tuple(REFERENCES))
        if not 0 <= self.q <= 1:
            raise UserError(f"{key}.q: must be in [0, 1], got {self.q}")


def top_k_without_splitting_ties(scores: np.ndarray, k: int) -> np.ndarray:
    """Mask of the top `k` of `scores` (no NaN), never splitting a group of equal scores: a group the
    cut falls inside is dropped, unless nothing scores above it (then it is kept whole)."""
    if k >= len(scores):
        return np.ones(len(scores), dtype=bool)
    if k <= 0:
        return np.zeros(len(scores), dtype=bool)
    cut = np.sort(scores)[::-1][k - 1]  # the k-th highest score
    above = scores > cut
    at_cut = scores == cut
    if above.sum() + at_cut.sum() <= k or not above.any():
        return above | at_cut
    return above


def quantile_filter(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Per prompt: keep the top max(1, floor((1 - q) * n)) scored samples, ties kept or dropped whole."""
    scores = np.asarray(scores, dtype=float)
    weights = np.zeros(len(scores))
    for idx in rows.groupby("prompt_id", sort=False).indices.values():
        s = scores[idx]
        valid = ~np.isnan(s)
        if not valid.any():
            continue
        # round() first: (1 - 0.9) * 10 is 0.9999999999999998 in floating point, whose floor is 0
        k = max(1, math.floor(round((1 - cfg.q) * int(valid.sum()), 9)))
        keep = np.zeros(len(s), dtype=bool)
        keep[valid] = top_k_without_splitting_ties(s[valid], k)
        weights[idx] = keep.astype(float)
    return weights


def threshold_filter(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Globally: keep scores >= tau."""
    scores = np.asarray(scores, dtype=float)
    return (np.nan_to_num(scores, nan=-np.inf) >= cfg.tau).astype(float)


def tournament_filter(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Per prompt: keep the rows with the prompt's best score (ties all kept).

    Under the `tournament` verifier these are the survivors of each prompt's bracket (the rows that
    went furthest); under any other verifier, each prompt's top-scored generations (best-of-n).
    """
    scores = np.asarray(scores, dtype=float)
    weights = np.zeros(len(scores))
    for idx in rows.groupby("prompt_id", sort=False).indices.values():
        s = scores[idx]
        valid = ~np.isnan(s)
        if valid.any():
            weights[idx] = (valid & (np.nan_to_num(s, nan=-np.inf) >= s[valid].max())).astype(float)
    return weights


def random_filter(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig, seed: int = 0) -> np.ndarray:
    """Per prompt: as many rows as `cfg.reference` keeps, drawn at random (the matched-budget control).

    Each prompt draws from its own generator, seeded by `seed` and the prompt id, so the choice does
    not depend on row order or on how rows are split across ranks.
    """
    budget = REFERENCES[cfg.reference](rows, scores, cfg)
    weights = np.zeros(len(budget))
    order = rows["sample_idx"].to_numpy() if "sample_idx" in rows else np.arange(len(rows))
    for pid, idx in rows.groupby("prompt_id", sort=False).indices.items():
        k = int((budget[idx] > 0).sum())
        if k:
            rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(str(pid))])
            by_sample = idx[np.argsort(order[idx], kind="stable")]
            weights[rng.choice(by_sample, size=k, replace=False)] = 1.0
    return weights


def stable_hash(text: str) -> int:
    """A 32-bit hash of `text` that is the same in every process (unlike `hash`)."""
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


REFERENCES = {
    "quantile": quantile_filter,
    "threshold": threshold_filter,
    "tournament": tournament_filter,
}
FILTERS = (*REFERENCES, "random")


def select(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig, seed: int = 0) -> np.ndarray:
    """Weights (0/1) for `rows` under the filter named in `cfg` (`seed` draws the random control's)."""
    if cfg.name == "random":
        return random_filter(rows, scores, cfg, seed)
    return REFERENCES[cfg.name](rows, scores, cfg)
