"""Merging the ranks' verification cost records (trainer.loop._merge_costs)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.loop import _merge_costs, share_of


def test_verdict_mass_is_the_mean_over_all_rows_of_four_ranks():
    # 10 prompts x 4 samples split over 4 ranks by whole prompts, as Study.verify splits them:
    # 3, 3, 2, 2 prompts -> 12, 12, 8, 8 rows, each rank's record the mean of its rows' masses (mc).
    rng = np.random.default_rng(0)
    prompts = list(range(10))
    mass_of_row = {(p, i): float(rng.uniform(0.05, 0.9)) for p in prompts for i in range(4)}
    per_rank = []
    for rank in range(4):
        rows = [(p, i) for p in share_of(prompts, rank, 4) for i in range(4)]
        masses = [mass_of_row[r] for r in rows]
        per_rank.append(
            {
                "mc": {"tokens": 100 * len(rows), "seconds": 1.0 + rank, "rows": len(rows)}
                | {"verdict_mass": float(np.mean(masses))},
                "oracle": {"tokens": 0, "seconds": 0.0, "rows": len(rows)},
            }
        )
    assert [r["mc"]["rows"] for r in per_rank] == [12, 12, 8, 8]
    merged = _merge_costs(per_rank)
    assert merged["mc"]["verdict_mass"] == pytest.approx(np.mean(list(mass_of_row.values())), rel=1e-12)
    assert merged["mc"]["rows"] == merged["oracle"]["rows"] == 40
    assert merged["mc"]["tokens"] == 4000 and merged["mc"]["seconds"] == 4.0  # sums; the slowest rank
    assert "verdict_mass" not in merged["oracle"]


def test_verdict_mass_weighs_a_tournaments_ranks_by_their_calls_and_skips_empty_ranks():
    per_rank = [
        {"t": {"tokens": 10, "seconds": 1.0, "rows": 8, "calls": 12, "verdict_mass": 0.2}},
        {"t": {"tokens": 10, "seconds": 1.0, "rows": 8, "calls": 4, "verdict_mass": 0.6}},
        {"t": {"tokens": 0, "seconds": 0.0, "rows": 0, "calls": 0, "verdict_mass": None}},
        {"t": {"tokens": 10, "seconds": 2.0, "rows": 4, "calls": 4, "verdict_mass": 0.4}},
    ]
    merged = _merge_costs(per_rank)["t"]
    assert merged["verdict_mass"] == pytest.approx((12 * 0.2 + 4 * 0.6 + 4 * 0.4) / 20)
    assert merged["calls"] == 20 and merged["rows"] == 20
    nothing = _merge_costs([{"t": {"rows": 0, "verdict_mass": None}}] * 4)["t"]
    assert nothing["verdict_mass"] is None
