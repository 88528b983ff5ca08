"""The gap against pretraining compute: the fit on constructed data (hand-computed), its edge cases, the
config's errors, and recipes/scaling.py end to end on the tiny random model under two names."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.errors import UserError
from eval.gap import summarize
from eval.scaling import ScalingPoint, fit_scaling, relative_gaps_per_prompt, scaling_markdown
from tests.conftest import ROOT
from tests.helpers import markdown_tables
from trainer.config import ScalingConfig

N = 1e8  # parameters of every constructed model; tokens are chosen for the compute wanted


def point(name: str, log10_compute: float, gaps) -> ScalingPoint:
    """A model at 10**log10_compute FLOPs (6·N·D) with these per-prompt relative gaps."""
    return ScalingPoint(name, N, 10**log10_compute / (6 * N), np.asarray(gaps, dtype=float))


# ---------------------------------------------------------------- the fit


def test_relative_gaps_per_prompt_from_metrics_records():
    per_prompt = {
        "n": [4, 4, 4, 2],
        "correct": [1, 4, 0, 1],
        "verification_utility": {"mc": [0.5, 1.0, 0.0, 0.0]},
    }
    got = relative_gaps_per_prompt(per_prompt, "mc")
    # (0.5 - 0.25) / 0.75; undefined where every sample is correct; (0 - 0) / 1; (0 - 0.5) / 0.5
    np.testing.assert_allclose(got, [1 / 3, np.nan, 0.0, -1.0])


def test_relative_gaps_per_prompt_average_to_the_measured_relative_gap():
    """From metrics.json's per-prompt records, the model's relative gap is summarize's own."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "prompt_id": np.repeat([f"p{i}" for i in range(12)], 4),
            "sample_idx": np.tile(np.arange(4), 12),
            "correct": rng.random(48) < 0.4,
            "answer": "1",
            "completion": "Answer: 1",
            "score_mc": rng.random(48),
        }
    )
    rows["kept_mc"] = rows["score_mc"] > 0.5
    metrics = summarize(rows, ["mc"], n_boot=50)
    gaps = relative_gaps_per_prompt(metrics["per_prompt"], "mc")
    assert np.isnan(gaps).sum() == metrics["prompts_excluded_relative"]
    assert np.nanmean(gaps) == pytest.approx(metrics["relative_gap"]["value"], abs=1e-12)


def test_exact_line_has_its_slope_and_a_zero_width_interval():
    # y = 0.1 + 0.05 (x - 20) at x = 20, 21, 22, every prompt alike: nothing for the bootstrap to move
    points = [point(f"m{i}", 20 + i, [0.1 + 0.05 * i] * 6) for i in range(3)]
    result = fit_scaling(points, n_boot=200)
    fit = result["fit"]
    assert fit["slope"] == pytest.approx(0.05, abs=1e-12)
    assert fit["intercept"] == pytest.approx(0.1 - 0.05 * 20, abs=1e-10)
    assert fit["r_squared"] == pytest.approx(1.0)
    assert fit["slope_ci"]["ci_low"] == pytest.approx(0.05, abs=1e-12)
    assert fit["slope_ci"]["ci_high"] == pytest.approx(0.05, abs=1e-12)
    assert fit["n_points"] == 3 and result["undefined"] == []
    assert [p["log10_compute"] for p in result["points"]] == pytest.approx([20, 21, 22])
    assert result["points"][0]["compute"] == pytest.approx(1e20)
    assert "grows" in result["verdict"]


def test_hand_computed_slope_from_noisy_prompts_and_its_interval_covers_it():
    # model means 0.1, 0.2, 0.2 at x = 20, 21, 22: slope = ((-1)(-1/15) + 0 + (1)(1/30)) / 2 = 0.05,
    # intercept = mean(y) - 0.05 * 21 = 1/6 - 1.05
    spread = np.array([-0.2, 0.2, -0.1, 0.1])
    points = [point("a", 20, 0.1 + spread), point("b", 21, 0.2 + spread), point("c", 22, 0.2 + spread)]
    fit = fit_scaling(points, n_boot=2000)["fit"]
    assert fit["slope"] == pytest.approx(0.05, abs=1e-12)
    assert fit["intercept"] == pytest.approx(1 / 6 - 1.05, abs=1e-10)
    assert fit["r_squared"] == pytest.approx(0.75)  # r = 0.1 / sqrt(2 · 1/150) = sqrt(3)/2
    assert fit["slope_ci"]["ci_low"] < 0.05 < fit["slope_ci"]["ci_high"]


def test_interval_covers_the_true_slope_of_a_simulated_family():
    """Per-prompt relative gaps drawn around a true line (slope 0.04 per decade, 200 prompts a model): the
    bootstrap interval covers the true slope and excludes 0."""
    rng = np.random.default_rng(1)
    xs = [20.0, 21.0, 22.0, 23.0]
    points = [point(f"m{x:g}", x, rng.normal(0.02 + 0.04 * (x - 20), 0.2, size=200)) for x in xs]
    result = fit_scaling(points, n_boot=2000, seed=3)
    ci = result["fit"]["slope_ci"]
    assert ci["ci_low"] < 0.04 < ci["ci_high"]
    assert ci["ci_low"] > 0 and "grows" in result["verdict"]


def test_no_trend_claimed_when_the_interval_holds_zero():
    spread = np.array([-0.5, 0.5, -0.4, 0.4])
    points = [point("a", 20, 0.10 + spread), point("b", 21, 0.12 + spread), point("c", 22, 0.11 + spread)]
    result = fit_scaling(points, n_boot=1000)
    ci = result["fit"]["slope_ci"]
    assert ci["ci_low"] < 0 < ci["ci_high"]
    assert result["verdict"].startswith("3 models: no trend")
    assert "grows" not in result["verdict"] and "shrinks" not in result["verdict"]


def test_one_model_fits_no_line():
    result = fit_scaling([point("only", 21, [0.1, 0.3])], n_boot=100)
    fit = result["fit"]
    assert fit["n_points"] == 1
    assert fit["slope"] is None and fit["intercept"] is None and fit["slope_ci"]["ci_low"] is None
    assert result["points"][0]["relative_gap"]["value"] == pytest.approx(0.2)
    assert "no line to fit" in result["verdict"]
    assert "n/a" in scaling_markdown(result)  # the table still renders


def test_two_models_make_a_line_not_a_law():
    result = fit_scaling([point("small", 20, [0.0, 0.2]), point("large", 20.5, [0.3, 0.5])], n_boot=500)
    fit = result["fit"]
    assert fit["slope"] == pytest.approx((0.4 - 0.1) / 0.5)
    assert fit["r_squared"] is None  # a line through two points always fits
    assert fit["slope_ci"]["ci_low"] is not None and fit["slope_ci"]["ci_low"] > 0  # reported all the same
    assert result["verdict"].startswith("Two points make a line, not a law")
    assert "no evidence of a trend" in result["verdict"]
    assert "grows" not in result["verdict"] and "shrinks" not in result["verdict"]


def test_a_model_whose_relative_gap_is_undefined_is_left_out_and_named():
    points = [
        point("a", 20, [0.1, 0.1]),
        point("all-correct", 21, [np.nan, np.nan, np.nan]),  # every prompt's samples all correct
        point("c", 22, [0.3, 0.3]),
    ]
    result = fit_scaling(points, n_boot=100)
    assert result["undefined"] == ["all-correct"]
    assert result["fit"]["n_points"] == 2
    assert result["fit"]["slope"] == pytest.approx(0.1)
    row = result["points"][1]
    assert row["relative_gap"]["value"] is None and row["prompts_excluded_relative"] == 3
    assert "Two points" in result["verdict"]
    assert "all-correct" in scaling_markdown(result)


def test_models_at_one_compute_fit_no_line():
    result = fit_scaling([point("a", 21, [0.1]), point("b", 21, [0.2])], n_boot=100)
    assert result["fit"]["slope"] is None and "no line to fit" in result["verdict"]


def test_a_model_without_parameters_is_an_error():
    with pytest.raises(ValueError, match="bad"):
        fit_scaling([ScalingPoint("bad", 0, 1e12, np.array([0.1]))])


# ---------------------------------------------------------------- the config


def _load(tmp_path, text: str) -> ScalingConfig:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return load_config(ScalingConfig, ["--config", str(path)])


def test_shipped_scaling_config_loads_with_model_card_tokens():
    cfg = load_config(ScalingConfig, ["--config", str(ROOT / "recipes/configs/scaling.yaml")])
    assert [(m.model, m.pretraining_tokens) for m in cfg.models] == [
        ("smollm2-135m-instruct", 2.0e12),
        ("gemma3-270m", 6.0e12),
    ]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("models: []\n", "models: list at least one model"),
        ("models: [{model: a}]\n", "models.0.pretraining_tokens: give the tokens a was pretrained on"),
        (
            "models: [{model: a, pretraining_tokens: many}]\n",
            "models.0.pretraining_tokens: expected a number",
        ),
        ("models: [{pretraining_tokens: 1.0e+9}]\n", "models.0.model: name the model"),
        (
            "models: [{model: a, pretraining_tokens: 1.0e+9, n_params: -5}]\n",
            "models.0.n_params: must be > 0",
        ),
        ("models: [{model: a, pretraining_tokens: 1.0e+9, name: x/y}]\n", "models.0.name"),
        (
            "models: [{model: a, pretraining_tokens: 1.0e+9}, {model: a, pretraining_tokens: 1.0e+10}]\n",
            "'a' appears twice",
        ),
        (
            "models: [{model: a, pretraining_tokens: 1.0e+9, tokens: 3}]\n",
            "unknown config key 'models.0.tokens'",
        ),
        (
            "models: [{model: a, pretraining_tokens: 1.0e+9}]\nverifier: {name: mc, model: b}\n",
            "verifier.model",
        ),
    ],
)
def test_bad_scaling_config_names_the_key(tmp_path, text, needle):
    with pytest.raises(UserError) as e:
        _load(tmp_path, text)
    assert needle in str(e.value)


# ---------------------------------------------------------------- the recipe, end to end


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes/scaling.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_scaling_recipe_end_to_end_resumes_and_grows(tmp_path, tiny_model_dir):
    """The tiny random model under two names and made-up token counts (hf backend, 3 prompts x 2): each
    a measure_gap run of its own; the table, fit, plot; a re-run reuses both runs and a third model joins."""
    from trainer.models import count_parameters

    out = tmp_path / "scaling"
    tiny = str(tiny_model_dir)
    models = f"[{{model: {tiny}, pretraining_tokens: 1.0e+9, name: tiny-a}}, {{model: {tiny}, pretraining_tokens: 1.0e+11, name: tiny-b, n_params: 5.0e+6}}]"
    common = [
        "--task.test_size", "3", "--task.train_size", "0", "--task.shots_size", "0",
        "--sampling.n", "2", "--sampling.max_tokens", "8", "--engine.backend", "hf",
        "--bootstrap", "200", "--output_dir", str(out),
    ]  # fmt: skip
    proc = _run(["--models", models, *common])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "scaling.json").read_text())
    a, b = result["points"]
    assert (a["name"], b["name"]) == ("tiny-a", "tiny-b")
    assert a["n_params"] == count_parameters(tiny_model_dir) and a["n_params_from"] == "checkpoint"
    assert b["n_params"] == 5.0e6 and b["n_params_from"] == "config"
    assert a["compute"] == pytest.approx(6 * a["n_params"] * 1e9)
    assert b["log10_compute"] == pytest.approx(math.log10(6 * 5e6 * 1e11))
    for p in (a, b):  # each model's relative gap is its own measure_gap run's
        metrics = json.loads((out / p["name"] / "metrics.json").read_text())
        assert metrics["config"]["model"] == tiny and metrics["n_prompts"] == 3
        assert p["relative_gap"] == metrics["relative_gap"]
        assert p["gap"] == metrics["gap"]
    assert result["fit"]["n_points"] + len(result["undefined"]) == 2
    if result["fit"]["n_points"] == 2:
        assert result["verdict"].startswith("Two points make a line, not a law")
    md = (out / "scaling.md").read_text()
    (table,) = markdown_tables(md)
    assert [row["model"] for row in table] == ["tiny-a", "tiny-b"]
    assert result["verdict"] in md and result["verdict"] in proc.stdout
    assert (out / "plots" / "scaling.png").stat().st_size > 10_000

    # Re-run with a third model: the first two runs are reused, not recomputed.
    stamps = {n: (out / n / "generations.parquet").stat().st_mtime_ns for n in ("tiny-a", "tiny-b")}
    grown = models[:-1] + f", {{model: {tiny}, pretraining_tokens: 1.0e+13, name: tiny-c}}]"
    proc = _run(["--models", grown, *common])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {n: (out / n / "generations.parquet").stat().st_mtime_ns for n in stamps} == stamps
    assert "reusing" in proc.stderr  # the console's lines, as the loop's
    result = json.loads((out / "scaling.json").read_text())
    assert [p["name"] for p in result["points"]] == ["tiny-a", "tiny-b", "tiny-c"]

    # A change that would invalidate the finished runs is refused, naming the key.
    proc = _run(["--models", grown, *common, "--sampling.n", "3"])
    assert proc.returncode == 2
    assert "different 'sampling.n' (2 in " in proc.stderr
