"""Filters turn verifier scores into weights: which generations are kept for distillation.

A NaN score is an abstention (an unparseable verification) and is never kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.config import FilterConfig


def quantile_filter(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Per prompt: keep scores >= the q-quantile of that prompt's scores (the top 1-q)."""
    scores = np.asarray(scores, dtype=float)
    weights = np.zeros(len(scores))
    for idx in rows.groupby("prompt_id", sort=False).indices.values():
        s = scores[idx]
        valid = ~np.isnan(s)
        if not valid.any():
            continue
        cut = np.quantile(s[valid], cfg.q)
        weights[idx] = (valid & (np.nan_to_num(s, nan=-np.inf) >= cut)).astype(float)
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


FILTERS = {
    "quantile": quantile_filter,
    "threshold": threshold_filter,
    "tournament": tournament_filter,
}


def select(rows: pd.DataFrame, scores: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Weights (0/1) for `rows` under the filter named in `cfg`."""
    return FILTERS[cfg.name](rows, scores, cfg)
