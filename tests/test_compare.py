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
            "per_prompt": {"prompt_id": [f"p{i}" for i in range(len(c))], "n": [n] * len(c), "correct": c},
        }
        for t, c in enumerate(correct_by_round)
    ]


def test_differences_are_paired_over_the_same_prompts():
    control = history([[1, 2, 0, 4] * 5, [1, 2, 0, 4] * 5])
    better = history([[1, 2, 0, 4] * 5, [2, 3, 1, 4] * 5])  # +1 correct of 4 on 15 of 20 prompts
    diffs = differences({"random": [control], "self": [better]}, control="random", n_boot=300)
    assert [(d["condition"], d["round"]) for d in diffs] == [("self", 0), ("self", 1)]
    r0, r1 = diffs
    # the same round 0: no difference on any of 20 prompts, which bounds it (count_ci), not [0, 0]
    assert r0["accuracy"]["value"] == 0.0 and r0["accuracy"]["p"] == 1.0
    assert (
        r0["accuracy"]["ci_low"] == pytest.approx(-r0["accuracy"]["ci_high"])
        and r0["accuracy"]["ci_high"] > 0
    )
    assert r1["accuracy"]["value"] == pytest.approx(0.1875) and r1["accuracy"]["ci_low"] > 0
    assert r1["prompts"] == 20 and r1["accuracy"]["family"] == 1  # round 0 is not a comparison
    assert verdict(r1, "self", "random").startswith("self beats random on held-out accuracy after round 1")
    # prompts listed in another order pair up all the same
    shuffled = history([[1, 2, 0, 4] * 5, [2, 3, 1, 4] * 5])
    for h in shuffled:
        pp = h["per_prompt"]
        order = np.random.default_rng(0).permutation(20)
        h["per_prompt"] = {k: [pp[k][i] for i in order] for k in pp}
    again = differences({"random": [control], "self": [shuffled]}, control="random", n_boot=300)
    assert again[1]["accuracy"]["value"] == pytest.approx(r1["accuracy"]["value"])
    # the paired count is the prompts both hold
    fewer = history([[1, 2, 0, 4] * 4, [2, 3, 1, 4] * 4])
    assert differences({"random": [control], "self": [fewer]}, "random", n_boot=300)[1]["prompts"] == 16


def test_a_replicated_difference_carries_the_variance_between_seeds():
    from scipy import stats

    from eval.compare import replicated_difference

    # every prompt moves with its run: the prompts add nothing, and the interval is the t interval of
    # the three runs' mean differences (two degrees of freedom)
    runs = np.array([0.10, -0.04, 0.07])
    a = np.tile(runs[:, None], (1, 50)) + 0.3
    b = np.full((3, 50), 0.3)
    d = replicated_difference(a, b)
    ci = stats.ttest_1samp(runs, 0).confidence_interval(0.95)
    assert d["value"] == pytest.approx(runs.mean())
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert d["p"] == pytest.approx(stats.ttest_1samp(runs, 0).pvalue)
    assert d["seed_sd"] == pytest.approx(runs.std(ddof=1)) and d["replicates"] == 3
    # the same mean from one run: a prompt bootstrap, far narrower, that leaves the seeds out
    one = replicated_difference(a[:1], b[:1])
    assert one["replicates"] == 1 and one["seed_sd"] is None


def test_a_replicated_difference_holds_its_level_in_the_tail_where_seeds_dominate():
    """Null differences whose spread is mostly between training runs (3 seeds x 192 prompts): the
    p-value is valid at 5% and at the Holm tail of six comparisons (5%/6), within 3 simulation SDs.
    Satterthwaite's estimated degrees of freedom gave 0.067 and 0.026 here."""
    from eval.compare import replicated_difference

    rng = np.random.default_rng(0)
    sims = 3000
    d = rng.normal(0, 0.05, (sims, 3, 1)) + rng.normal(0, 0.3, (sims, 3, 192))
    p = np.array([replicated_difference(x, np.zeros_like(x))["p"] for x in d])
    for level in (0.05, 0.05 / 6):
        assert (p < level).mean() <= level + 3 * np.sqrt(level * (1 - level) / sims), level


def test_where_prompts_dominate_the_interval_is_the_prompts_and_null_differences_hold_their_level():
    """A condition's accuracy (prompts differ, seeds barely: round 0) gets about the prompts' own t
    interval, not one stretched by the seeds' t(2) = 4.3; null differences that mix a small seed
    spread with a large prompt spread stay valid at 5% (Banerjee's interval is conservative)."""
    from scipy import stats

    from eval.compare import replicated_difference, replicated_mean

    rng = np.random.default_rng(1)
    prompts = rng.normal(0.35, 0.4, 96)
    values = np.tile(prompts, (3, 1)) + rng.normal(0, 0.01, (3, 1))
    m = replicated_mean(values)
    prompt_half = stats.t.ppf(0.975, 95) * values.mean(axis=0).std(ddof=1) / np.sqrt(96)
    assert prompt_half <= (m["ci_high"] - m["ci_low"]) / 2 < 1.1 * prompt_half
    sims = 2000
    d = rng.normal(0, 0.02, (sims, 3, 1)) + rng.normal(0, 0.3, (sims, 3, 96))
    p = np.array([replicated_difference(x, np.zeros_like(x))["p"] for x in d])
    assert (p < 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)
    x = d[0]  # the p-value is where the interval reaches 0
    r = replicated_difference(x, np.zeros_like(x), confidence=1 - p[0])
    assert min(abs(r["ci_low"]), abs(r["ci_high"])) == pytest.approx(0, abs=1e-9)


def test_holm_adjusts_step_down():
    from eval.compare import holm

    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4])


def test_a_comparison_of_identical_conditions_prints_no_verdict():
    """Null comparisons through eval.compare: three conditions that differ in nothing, each training
    run drifting on its own. With three seeds per condition and Holm's correction, a verdict is printed
    in at most 1 − confidence of them; with one run per condition (intervals over prompts only) far
    more often — the reversal a second seed showed."""
    from trainer.null_study import NullSetup, run_scenario

    rates = run_scenario(
        NullSetup(prompts=48, rounds=2, replicates=3, run_drift=0.3), "comparison", studies=16
    )
    assert rates["holm"]["ci_low"] < 0.05, rates["holm"]
    assert rates["holm"]["hits"] <= 2
    assert rates["holm, one run per condition"]["rate"] > 0.3


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

    # round 0's held-out samples are made once: the conditions after the first take them (and their
    # verification where their verifiers are the same), recorded as reused; round 0 agrees everywhere
    assert reused(out / "self_mc") == {}
    assert reused(out / "oracle") == {"eval_generations": str(out / "self_mc")}
    assert reused(out / "random") == dict.fromkeys(
        ["eval_generations", "eval_verification"], str(out / "self_mc")
    )
    round0 = [json.loads((out / n / "round_000" / "metrics.json").read_text()) for n in ("self_mc", "random")]
    assert [m["generation_utility"] for m in round0] == [round0[0]["generation_utility"]] * 2
    assert round0[0]["gap"] == round0[1]["gap"]

    result = json.loads((out / "comparison.json").read_text())
    # each condition's compute beside its accuracy: the train prompts' tokens sampled, verified, trained
    compute = {row["condition"]: row for row in result["compute"]}
    assert set(compute) == {"self_mc", "oracle", "random"} and {r["round"] for r in result["compute"]} == {1}
    sampled = pd.read_parquet(out / "random" / "round_001" / "generations.parquet")["n_tokens"].sum()
    assert compute["random"]["tokens generated"] == sampled > 0
    metrics = json.loads((out / "random" / "round_001" / "metrics.json").read_text())
    assert compute["random"]["tokens trained"] == metrics["train"]["sft_tokens"] > 0
    assert 0 < compute["random"]["seconds"] < sum(metrics["seconds"].values())  # the evaluation left out
    assert (
        "| condition | round | accuracy | seconds | tokens generated (k) |"
        in (out / "comparison.md").read_text()
    )
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
    assert "Each condition is one training run" in text

    # a second training seed for every condition: replicate 0 is the runs above, resumed untouched
    r = subprocess.run(
        cmd + ["--replicates", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "random" / "round_001" / "generations.parquet").stat().st_mtime_ns == stamp
    for name in ("self_mc", "oracle", "random"):
        meta = json.loads((out / f"{name}_rep1" / "study.json").read_text())
        assert meta["config"]["train_seed"] == 1 and meta["config"]["seed"] == 0
    assert reused(out / "self_mc_rep1") == {}  # its own seeds: replicate 0's round 0 is not its own
    assert reused(out / "random_rep1") == dict.fromkeys(
        ["eval_generations", "eval_verification"], str(out / "self_mc_rep1")
    )
    rep1 = pd.read_parquet(out / "random_rep1" / "round_001" / "generations.parquet")
    assert rep1["completion"].tolist() != rnd["completion"].tolist()  # another draw of the same experiment
    held_out = [
        pd.read_parquet(out / d / "round_000" / "eval.parquet")["prompt_id"]
        for d in ("random", "random_rep1")
    ]
    assert held_out[0].tolist() == held_out[1].tolist()  # the same held-out prompts
    text = (out / "comparison.md").read_text()
    assert "Each condition is 2 training runs" in text and "Holm" in text
    assert json.loads((out / "comparison.json").read_text())["replicates"] == 2


def reused(study) -> dict[str, str]:
    """The stages of a study's round 0 taken from another study, and from which."""
    record = json.loads((study / "round_000" / "stages.json").read_text())["stages"]
    return {name: s["reused_from"] for name, s in record.items() if "reused_from" in s}


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


def test_a_condition_may_have_its_own_control():
    base = history([[1, 2, 0, 4] * 5, [1, 2, 0, 4] * 5])
    dpo_random = history([[1, 2, 0, 4] * 5, [2, 2, 0, 4] * 5])
    dpo = history([[1, 2, 0, 4] * 5, [3, 3, 1, 4] * 5])
    hists = {"sft_random": [base], "dpo_random": [dpo_random], "dpo": [dpo]}
    diffs = differences(hists, "sft_random", n_boot=200, controls={"dpo": "dpo_random"})
    pairs = {(d["condition"], d["control"]) for d in diffs}
    assert pairs == {("dpo", "dpo_random"), ("dpo_random", "sft_random")}
    last = {d["condition"]: d for d in diffs if d["round"] == 1}
    assert last["dpo"]["accuracy"]["value"] == pytest.approx((1 + 1 + 1 + 0) / 4 / 4)
    assert last["dpo"]["accuracy"]["family"] == 2  # both comparisons after round 0 share Holm's family


def test_compute_sums_the_training_side_of_every_round_and_averages_the_replicates():
    """Each rule's own token keys (sft: sft_tokens; grpo: its rollouts and train tokens), the held-out
    evaluation's seconds left out, cumulative over rounds, the mean over replicates."""
    from eval.compare import compute_rows

    def study(rule, per_round, acc):
        rounds = [{"round": 0, "generation_utility": {"value": 0.2}, "seconds": {"evaluate": 50.0}}]
        for t, (tokens, secs) in enumerate(per_round, start=1):
            train = {"rule": rule, "generated_tokens": 100, "verification_tokens": 10}
            train.update({"sft_tokens": tokens} if rule == "sft" else {"grpo_train_tokens": tokens})
            if rule == "grpo":
                train["grpo_tokens_generated"] = 1000
            rounds.append(
                {
                    "round": t,
                    "generation_utility": {"value": acc[t - 1]},
                    "seconds": {"sample": secs, rule: secs, "evaluate": 50.0},
                    "train": train,
                }
            )
        return rounds

    rows = compute_rows(
        {
            "sft": [
                study("sft", [(40, 1.0), (60, 2.0)], [0.3, 0.4]),
                study("sft", [(20, 3.0), (20, 4.0)], [0.5, 0.6]),
            ],
            "grpo": [study("grpo", [(500, 10.0), (500, 10.0)], [0.25, 0.35])],
        }
    )
    by = {(r["condition"], r["round"]): r for r in rows}
    assert set(by) == {(c, t) for c in ("sft", "grpo") for t in (1, 2)}
    assert by["sft", 1] == pytest.approx(
        {"condition": "sft", "round": 1, "accuracy": 0.4, "seconds": (2 + 6) / 2, "tokens generated": 100,
         "tokens verified": 10, "tokens trained": (40 + 20) / 2}
    )  # fmt: skip
    assert by["sft", 2]["tokens trained"] == (100 + 40) / 2 and by["sft", 2]["seconds"] == (6 + 14) / 2
    assert by["grpo", 2]["tokens generated"] == 2 * 1100 and by["grpo", 2]["tokens trained"] == 1000


@pytest.mark.parametrize("n", [3, 10])
def test_many_conditions_share_one_legend_beside_the_panels(tmp_path, n):
    """A few conditions: a legend inside each panel. Ten (the update-rules comparison): one legend to
    the right of the figure, kept in the saved picture, where ten inside would cover the lines."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from eval.compare import legends
    from eval.report import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for i in range(n):
        for ax in axes:
            ax.plot([0, 1], [0, i], label=f"condition_{i}")
    legends(fig, list(axes), n)
    inside = [ax.get_legend() is not None for ax in axes]
    assert (inside, len(fig.legends)) == (([True, True], 0) if n <= 5 else ([False, False], 1))
    save_figure(fig, tmp_path / "f.png")
    width = Image.open(tmp_path / "f.png").size[0]
    assert (width > 6 * 110) == (n > 5)  # the legend beside the panels widens the picture
