"""recipes/compare.py: one study under several conditions, and the comparison it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eval.compare import differences, verdict
from tests.conftest import ROOT
from tests.helpers import markdown_tables


def history(correct_by_round: list[list[int]], n: int = 4) -> list[dict]:
    return [
        {
            "round": t,
            "pass_at_k": {str(n): {"value": 0.0}},
            "per_prompt": {"prompt_id": [f"p{i}" for i in range(len(c))], "n": [n] * len(c), "correct": c},
        }
        for t, c in enumerate(correct_by_round)
    ]


def test_differences_are_paired_over_the_same_prompts():
    control = history([[1, 2, 0, 4] * 5, [1, 2, 0, 4] * 5])
    better = history([[1, 2, 0, 4] * 5, [2, 3, 1, 4] * 5])  # +1 correct of 4 on 15 of 20 prompts
    diffs = differences({"random": control, "self": better}, control="random", n_boot=300)
    assert [(d["condition"], d["round"]) for d in diffs] == [("self", 0), ("self", 1)]
    r0, r1 = diffs
    assert r0["accuracy"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}  # the same round 0
    assert r1["accuracy"]["value"] == pytest.approx(0.1875) and r1["accuracy"]["ci_low"] > 0
    assert verdict(r1, "self", "random").startswith("self beats random on held-out accuracy after round 1")
    assert "cannot be told apart" in verdict(r0, "self", "random")
    # prompts listed in another order pair up all the same
    shuffled = history([[1, 2, 0, 4] * 5, [2, 3, 1, 4] * 5])
    for h in shuffled:
        pp = h["per_prompt"]
        order = np.random.default_rng(0).permutation(20)
        h["per_prompt"] = {k: [pp[k][i] for i in order] for k in pp}
    again = differences({"random": control, "self": shuffled}, control="random", n_boot=300)
    assert again[1]["accuracy"]["value"] == pytest.approx(r1["accuracy"]["value"])


@pytest.mark.slow
def test_three_conditions_resume_and_compare(tmp_path, tiny_model_dir):
    out = tmp_path / "cmp"
    study = {
        "model": str(tiny_model_dir),
        "rounds": 1,
        "report_to": "none",
        "engine": {"backend": "hf"},
        "task": {"train_size": 6, "test_size": 4},
        "sampling": {"n": 4, "max_tokens": 16},
        "eval_sampling": {"n": 2, "max_tokens": 16},
        "filter": {"name": "quantile", "q": 0.5},
        "sft": {"batch_size": 4, "epochs": 1, "max_length": 256, "train_on_truncated": True},
        "bootstrap": 100,
        "saturation": {"relative_gap_below": None, "pass_at_k_drop": None, "diversity_drop": None},
    }
    config = tmp_path / "compare.yaml"
    config.write_text(
        json.dumps(
            {
                "study": study,
                "conditions": [
                    {"name": "self_mc"},
                    {
                        "name": "oracle",
                        "overrides": {"verifiers": ["oracle", "mc"], "filter": {"name": "threshold"}},
                    },
                    {"name": "random", "overrides": {"filter": {"name": "random"}}},
                ],
                "control": "random",
                "output_dir": str(out),
            }
        )
    )
    cmd = [sys.executable, str(ROOT / "recipes" / "compare.py"), "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    for name in ("self_mc", "oracle", "random"):
        rounds = [json.loads(x)["round"] for x in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert rounds == [0, 1], name
    # the random control distilled as many samples per prompt as MC's quantile kept, others at random
    import pandas as pd

    mc = pd.read_parquet(out / "self_mc" / "round_001" / "selection.parquet")
    rnd = pd.read_parquet(out / "random" / "round_001" / "selection.parquet")
    assert mc["completion"].tolist() == rnd["completion"].tolist()  # the same samples from round 0's model
    assert (mc.groupby("prompt_id")["kept"].sum() == rnd.groupby("prompt_id")["kept"].sum()).all()
    oracle = pd.read_parquet(out / "oracle" / "round_001" / "selection.parquet")
    assert not (oracle["kept"] & ~oracle["correct"]).any()

    result = json.loads((out / "comparison.json").read_text())
    assert {(d["condition"], d["round"]) for d in result["differences"]} == {
        (c, t) for c in ("self_mc", "oracle") for t in (0, 1)
    }
    text = (out / "comparison.md").read_text()
    tables = markdown_tables(text)
    assert [(row["condition"], row["round"]) for row in tables[0]] == [
        (c, t) for c in ("self_mc", "oracle", "random") for t in ("0", "1")
    ]
    assert sum("random" in line for line in text.splitlines() if line.startswith("- ")) == 2
    for png in ("compare_accuracy_gap.png", "compare_pass_at_k.png", "compare_diversity.png"):
        assert (out / "plots" / png).stat().st_size > 1000

    # the same command again: every condition resumes finished, nothing is sampled again
    stamp = (out / "random" / "round_001" / "generations.parquet").stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "random" / "round_001" / "generations.parquet").stat().st_mtime_ns == stamp
    assert json.loads((out / "comparison.json").read_text()) == result


@pytest.mark.parametrize(
    "conditions, needle",
    [
        ([{"name": "a"}], "conditions: list at least two conditions"),
        ([{"name": "a"}, {"name": "b"}], "control: 'random' is not one of the conditions"),
        (
            [{"name": "random"}, {"name": "b", "overrides": {"task": {"test_size": 3}}}],
            "conditions.1.overrides.task: the conditions must share it",
        ),
        (
            [{"name": "random"}, {"name": "b", "overrides": {"filter": {"nam": "x"}}}],
            "conditions.1 (b): unknown config key 'filter.nam'",
        ),
    ],
)
def test_bad_comparison_is_one_line_exit_2(tmp_path, conditions, needle):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"conditions": conditions, "output_dir": str(tmp_path / "o")}))
    r = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "compare.py"), "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert needle in line, line
