"""recipes/verify_compute.py: the gap against k sampled verdicts averaged, the k's read from one set of
sampled verdicts (nested subsets), end to end on a real model, and its pieces against hand values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.errors import UserError
from tests.conftest import ROOT
from tests.helpers import console_table, markdown_tables
from trainer.config import VerifyComputeConfig
from trainer.measure import first_k_scores, first_k_tokens


def test_first_k_scores_average_the_parsed_verdicts_among_the_first_k():
    verdicts = pd.Series(
        [np.array([1.0, 0.0, 1.0, 1.0]), np.array([np.nan, 1.0, 0.0, 0.0]), np.array([np.nan] * 4)]
    )
    np.testing.assert_allclose(first_k_scores(verdicts, 1), [1.0, np.nan, np.nan])
    np.testing.assert_allclose(first_k_scores(verdicts, 2), [0.5, 1.0, np.nan])
    np.testing.assert_allclose(first_k_scores(verdicts, 4), [0.75, 1 / 3, np.nan])
    tokens = pd.Series([np.array([10, 11, 12, 13]), np.array([5, 5, 5, 5]), np.array([1, 2, 3, 4])])
    assert [first_k_tokens(tokens, k) for k in (1, 2, 4)] == [10 + 5 + 1, 21 + 10 + 3, 46 + 20 + 10]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--verifier.name", "mc"], "verifier.name: 'mc' gives one score per generation"),
        (
            ["--verifier.options", "{samples: 4, temperature: 0.7}"],
            "verifier.options.samples: set by `verdicts`",
        ),
        (["--ks", "[1, 16]"], "ks: must rise strictly, each between 1 and verdicts (8)"),
        (["--ks", "[4, 2]"], "ks: must rise strictly"),
        (["--verifier.options", "{temperature: 0}"], "set verifier.options.temperature above 0"),
        (["--filters", "[{name: quantile}, {name: quantile, q: 0.5}]"], "filters.1: the same filter"),
        (["--filters", "[{name: random}]"], "filters.0.name: the random control"),
    ],
)
def test_config_mistakes_name_the_key(args, needle):
    with pytest.raises(UserError) as e:
        load_config(
            VerifyComputeConfig, ["--config", str(ROOT / "recipes/configs/verify_compute.yaml"), *args]
        )
    assert needle in str(e.value)


def test_shipped_config_loads():
    cfg = load_config(VerifyComputeConfig, ["--config", str(ROOT / "recipes/configs/verify_compute.yaml")])
    assert cfg.verifier.name == "cot_binary" and cfg.ks == [1, 2, 4, 8] and cfg.verdicts == 8
    assert cfg.sampled_verifier.options["samples"] == 8 and "samples" not in cfg.verifier.options
    assert [f.label for f in cfg.filters] == ["threshold0.5", "quantile0.5"]


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "verify_compute.py"), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_verify_compute_end_to_end(tmp_path, tiny_model_dir):
    out = tmp_path / "vc"
    args = [
        "--model", str(tiny_model_dir),
        "--engine.backend", "hf",
        "--output_dir", str(out),
        "--task.test_size", "3",
        "--sampling.n", "2",
        "--sampling.max_tokens", "8",
        "--verdicts", "4",
        "--ks", "[1, 2, 4]",
        "--verifier.n_shots", "0",
        "--verifier.options", "{max_tokens: 6, temperature: 0.9, unparseable: abstain}",
        "--bootstrap", "100",
    ]  # fmt: skip
    proc = run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ver = pd.read_parquet(out / "verification.parquet")
    assert len(ver) == 6
    # every verdict is kept beside the verifier's own score, which is the mean of its parsed ones
    verdicts = ver["verdicts_cot_binary"]
    assert all(len(v) == 4 for v in verdicts) and all(len(t) == 4 for t in ver["verdict_tokens_cot_binary"])
    np.testing.assert_allclose(first_k_scores(verdicts, 4), ver["score_cot_binary"])
    costs = json.loads((out / "verification_costs.json").read_text())["cot_binary"]
    assert sum(int(t.sum()) for t in ver["verdict_tokens_cot_binary"]) == costs["tokens"] > 0
    sel = pd.read_parquet(out / "selection.parquet")
    for k in (1, 2, 4):
        np.testing.assert_allclose(sel[f"score_k{k}"], first_k_scores(verdicts, k))
    np.testing.assert_array_equal(sel["kept_k1_threshold0.5"], sel["score_k1"].fillna(-1) >= 0.5)

    records = json.loads((out / "compute_table.json").read_text())
    assert [(r["filter"], r["k"]) for r in records] == [
        (f, k) for f in ("threshold0.5", "quantile0.5") for k in (1, 2, 4, None)
    ]
    for f in ("threshold0.5", "quantile0.5"):
        mine = [r for r in records if r["filter"] == f]
        tokens = [r["verification_tokens"] for r in mine[:3]]
        assert tokens == [first_k_tokens(ver["verdict_tokens_cot_binary"], k) for k in (1, 2, 4)]
        assert tokens[0] < tokens[1] < tokens[2] == costs["tokens"]
        for r in mine[1:3]:  # each k after the first: paired differences from k = 1, with CIs
            for key in ("gap_vs_k1", "relative_gap_vs_k1", "auroc_vs_k1"):
                assert set(r[key]) == {"value", "ci_low", "ci_high"}, (key, r)
            assert r["gap_vs_k1"]["value"] == pytest.approx(r["gap"]["value"] - mine[0]["gap"]["value"])
        assert mine[-1]["verifier"] == "oracle" and mine[-1]["auroc"]["value"] in (1.0, None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["filters"]) == {"threshold0.5", "quantile0.5"} and metrics["compute"] == records
    (table,) = markdown_tables((out / "compute_table.md").read_text())
    assert [(row["filter"], row["k"]) for row in table] == [
        (r["filter"], str(r["k"]) if r["k"] else "oracle") for r in records
    ]
    printed = [row for row in console_table(proc.stdout) if row[0] in ("threshold0.5", "quantile0.5")]
    assert len(printed) == 8 and "filter quantile0.5, k=4 against k=1: gap" in proc.stdout
    assert (out / "plots" / "verify_compute.png").stat().st_size > 10_000

    # other k's and filters re-read the stored verdicts: nothing is sampled or verified again
    before = {
        name: (out / name).stat().st_mtime_ns for name in ("generations.parquet", "verification.parquet")
    }
    r2 = run([*args, "--ks", "[2, 4]", "--filters", "[{name: quantile, q: 0.75}]"])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before
    again = json.loads((out / "compute_table.json").read_text())
    assert [(r["filter"], r["k"]) for r in again] == [
        ("quantile0.75", 2),
        ("quantile0.75", 4),
        ("quantile0.75", None),
    ]
    assert "gap_vs_k2" in again[1]
    # sampling more verdicts is a different measurement: refused
    r3 = run([*args, "--verdicts", "8", "--ks", "[1, 8]"])
    assert r3.returncode == 2 and "holds an earlier run with a different 'verdicts'" in r3.stderr
