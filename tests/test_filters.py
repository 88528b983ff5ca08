"""Filters on constructed scores with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def test_quantile_ties_and_nan():
    df = rows(["a"] * 4 + ["b"] * 2)
    scores = np.array([0.5, 0.5, 0.5, np.nan, np.nan, np.nan])
    w = select(df, scores, FilterConfig("quantile", q=0.9))
    assert w.tolist() == [1, 1, 1, 0, 0, 0]  # ties at the cut are all kept; abstentions never


def test_threshold_is_global():
    df = rows(["a", "a", "b", "b"])
    w = select(df, np.array([0.2, 0.7, 0.5, np.nan]), FilterConfig("threshold", tau=0.5))
    assert w.tolist() == [0, 1, 1, 0]
