"""recipes/cross_verify.py: a generator × verifier matrix as a user runs it (real subprocess, real models),
resuming from its files, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from eval.gap import fmt_ci
from tests.conftest import ROOT
from tests.helpers import markdown_tables

SCRIPT = ROOT / "recipes" / "cross_verify.py"


def run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_shipped_configs_load():
    from trainer.config import CrossVerifyConfig, GapConfig, load_config
    from trainer.verifiers import validate_verifiers

    cfg = load_config(CrossVerifyConfig, ["--config", str(ROOT / "recipes/configs/cross_verify.yaml")])
    assert cfg.verifier.name == "mc" and cfg.generators == cfg.verifier_models
    gap = load_config(GapConfig, ["--config", str(ROOT / "recipes/configs/gap_strategies.yaml")])
    validate_verifiers(gap.verifiers)
    names = {v.name for v in gap.verifiers}
    assert names == {"mc", "cot_binary", "cot_score", "tournament", "ensemble", "oracle"}


def test_model_folders_and_labels():
    from trainer import measure as recipe

    a, b = recipe.model_slug("/x/a/model"), recipe.model_slug("/x/b/model")
    assert a != b and a.startswith("model-") and recipe.model_slug("/x/a/model/") == a
    assert recipe.model_labels(["/x/a/model", "/x/b/model", "smollm2-135m-instruct"]) == {
        "/x/a/model": "/x/a/model",
        "/x/b/model": "/x/b/model",
        "smollm2-135m-instruct": "smollm2-135m-instruct",
    }


@pytest.fixture(scope="module")
def perturbed_tiny_dir(tmp_path_factory, tiny_model_dir):
    """A second tiny generator: tiny_model_dir's weights plus noise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-perturbed")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.mark.slow
def test_matrix_of_two_generators_by_two_verifiers_resumes(
    tmp_path, smollm2_dir, tiny_model_dir, perturbed_tiny_dir
):
    """Two tiny generators (sampling is cheap) verified by themselves and by the packaged model."""
    out = tmp_path / "cv"
    generators, verifiers = [tiny_model_dir, perturbed_tiny_dir], [tiny_model_dir, smollm2_dir]
    args = [
        "--generators", f"[{generators[0]}, {generators[1]}]",
        "--verifier_models", f"[{verifiers[0]}, {verifiers[1]}]",
        "--verifier", "mc",
        "--engine.backend", "hf", "--engine.dtype", "float32",
        "--task.test_size", "2", "--task.train_size", "2", "--sampling.n", "2", "--sampling.max_tokens", "8",
        "--bootstrap", "50", "--output_dir", str(out),
    ]  # fmt: skip
    r = run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    records = json.loads((out / "gap_table.json").read_text())
    assert len(records) == 4
    assert [(x["generator"], x["verifier_model"]) for x in records] == [
        (g.name, v.name) for g in generators for v in verifiers
    ]
    assert [x["self_verification"] for x in records] == [True, False, False, False]
    for x in records:
        assert set(x["gap"]) == {"value", "ci_low", "ci_high"} and x["verification_tokens"] > 0
        assert x["strategy"] == "mc"
    gens = sorted(out.glob("*/generations.parquet"))
    cells = sorted(out.glob("*/*/verification.parquet"))
    assert len(gens) == 2 and len(cells) == 4
    # each generator sampled once; a different verifier model scores the same samples differently
    by_cell = {(p.parent.parent.name, p.parent.name): pd.read_parquet(p) for p in cells}
    gen_dir = next(p.parent.name for p in gens if p.parent.name.startswith(tiny_model_dir.name))
    one, other = (by_cell[(gen_dir, c)] for c in sorted(c for g, c in by_cell if g == gen_dir))
    assert one["completion"].tolist() == other["completion"].tolist()
    assert not one["score_mc"].equals(other["score_mc"])
    (table,) = markdown_tables((out / "gap_table.md").read_text())
    assert [(row["generator"], row["verifier model"]) for row in table] == [
        (x["generator"], x["verifier_model"] + (" (self)" if x["self_verification"] else "")) for x in records
    ]
    assert [row["gap [CI]"] for row in table] == [fmt_ci(x["gap"]) for x in records]
    assert (out / "plots" / "cross_verify_gap.png").stat().st_size > 1000
    assert "gap" in r.stdout and "(self)" in r.stdout

    stamps = {p: p.stat().st_mtime_ns for p in gens + cells}
    again = run(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in gens + cells} == stamps  # nothing recomputed
    assert json.loads((out / "gap_table.json").read_text()) == records
    changed = run(args + ["--sampling.temperature", "0.1"])
    assert changed.returncode == 2 and "sampling" in changed.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--verifier", "{name: tournament, options: {rounds: 0}}"], "verifier.options.rounds: must be >= 1"),
        (["--generators", "[]"], "generators: list at least one model"),
        (["--verifier_models", "[./no/such/model]"], "model: path ./no/such/model does not exist"),
        (["--verifier.model", "other"], "verifier.model: the verifier models come from `verifier_models`"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    r = run(args + ["--output_dir", str(tmp_path / "x")], timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
