"""recipes/measure_gap.py end to end, as a user runs it: a real subprocess, real model, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from eval.gap import fmt_ci
from tests.conftest import ROOT, needs_vllm
from tests.helpers import console_table, markdown_tables

TINY = [
    "--task.test_size",
    "4",
    "--task.train_size",
    "4",
    "--sampling.n",
    "3",
    "--sampling.max_tokens",
    "24",
    "--bootstrap",
    "200",
]


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "measure_gap.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_outputs(out, n_prompts: int, n: int) -> dict:
    gen = pd.read_parquet(out / "generations.parquet")
    ver = pd.read_parquet(out / "verification.parquet")
    assert len(gen) == len(ver) == n_prompts * n
    for col in (
        "prompt_id",
        "sample_idx",
        "completion",
        "answer",
        "correct",
        "score_mc",
        "score_oracle",
        "kept",
    ):
        assert col in ver.columns, col
    assert ver["score_mc"].between(0, 1).all()
    assert (ver["score_oracle"] == ver["correct"].astype(float)).all()
    m = json.loads((out / "metrics.json").read_text())
    for key in ("generation_utility", "verification_utility", "gap", "relative_gap"):
        assert set(m[key]) == {"value", "ci_low", "ci_high"}
    assert m["generation_utility"]["value"] == pytest.approx(ver["correct"].mean())
    assert m["n_prompts"] == n_prompts and m["n_samples_per_prompt"] == n
    assert set(m["pass_at_k"]) == {"1", "2", "3"}
    for key in (
        "maj_at_k",
        "answer_diversity",
        "verifier_auroc",
        "prompts_empty_filter",
        "prompts_excluded_relative",
        "config",
    ):
        assert key in m
    # the oracle is the ceiling: it keeps a prompt's right samples where it has any, never a wrong one
    # beside them, so its verification utility is the share of prompts with a right sample
    has_right = ver.groupby("prompt_id")["correct"].transform("any")
    assert not (ver["kept_oracle"] & ~ver["correct"] & has_right).any()
    share = ver.groupby("prompt_id")["correct"].any().mean()
    assert m["verifiers"]["oracle"]["verification_utility"]["value"] == pytest.approx(share)
    assert m["engine_dtype"] in ("float32", "bfloat16")
    # the kept set's recall on correct samples by how common their answer is, and its answer entropy
    recall = m["rare_answer_recall"]
    assert list(recall) == ["singleton", "le_25pct", "le_50pct", "gt_50pct", "all"]
    assert recall["all"]["correct"] == int(ver["correct"].sum())
    assert recall["all"]["kept"] == int((ver["correct"] & ver["kept"]).sum())
    assert sum(recall[b]["correct"] for b in list(recall)[:-1]) == recall["all"]["correct"]
    assert {"sampled", "kept", "change", "prompts", "prompts_empty"} <= set(m["kept_answer_entropy"])
    assert m["verifiers"]["oracle"]["rare_answer_recall"]["all"]["recall"]["value"] in (1.0, None)
    return m


@pytest.mark.slow
def test_measure_gap_hf(tmp_path):
    out = tmp_path / "gap"
    r = run(TINY + ["--engine.backend", "hf", "--output_dir", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    m = check_outputs(out, 4, 3)
    printed = {row[0]: row for row in console_table(r.stdout) if row[0] in m["verifiers"]}
    assert set(printed) == {"mc", "oracle"}
    for vid, row in printed.items():
        assert fmt_ci(m["verifiers"][vid]["gap"]) in row
    # re-running resumes from the files: same metrics, nothing sampled again
    before = (out / "generations.parquet").stat().st_mtime_ns
    r2 = run(TINY + ["--engine.backend", "hf", "--output_dir", str(out)])
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (out / "generations.parquet").stat().st_mtime_ns == before
    assert json.loads((out / "metrics.json").read_text())["gap"] == m["gap"]
    # a changed sampling config refuses to mix with the old files
    r3 = run(TINY + ["--engine.backend", "hf", "--output_dir", str(out), "--sampling.temperature", "0.1"])
    assert r3.returncode == 2 and "different 'sampling.temperature' (0.7 in " in r3.stderr
    # a finished stage's file changed since: named, with the flag that makes it again
    ver = out / "verification.parquet"
    ver.write_bytes(ver.read_bytes()[:-8] + bytes(8))
    r4 = run(TINY + ["--engine.backend", "hf", "--output_dir", str(out)])
    assert r4.returncode == 2 and "Traceback" not in r4.stderr
    assert (
        f"error: {ver}: changed since it was written (SHA-256 differs); restore it, or rerun with --redo"
        in r4.stderr
    )


@pytest.mark.slow
@needs_vllm
def test_measure_gap_vllm(tmp_path):
    out = tmp_path / "gap"
    r = run(TINY + ["--engine.backend", "vllm", "--output_dir", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    m = check_outputs(out, 4, 3)
    # the console is as quiet as the loop's: a line per stage, the table, where things are; vLLM's,
    # torch's and Python's warnings and progress bars go to the run's log
    printed = r.stdout + r.stderr
    lines = printed.strip().splitlines()
    assert len(lines) <= 15, printed
    for noise in ("WARNING", "Processed prompts", "FutureWarning", "UserWarning", "leaked", "Triton"):
        assert noise not in printed, (noise, printed)
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert len(table) == 6 and max(len(line) for line in table) <= 200, printed  # fits a 200-column terminal
    log = (out / "logs" / "run.log").read_text()
    assert "vllm" in log.lower()  # what the terminal no longer shows
    assert "sample: " in r.stderr and "verify: " in r.stderr
    # every column of the table, in the run's own file
    (table,) = markdown_tables((out / "gap_table.md").read_text())
    assert [row["verifier"] for row in table] == list(m["verifiers"])
    assert table[0]["unparseable"] == "0" and table[0]["gap [CI]"] == fmt_ci(m["verifiers"]["mc"]["gap"])


@pytest.mark.slow
@pytest.mark.parametrize("config", ["gap_open_qa.yaml", "gap_sudoku.yaml"])
def test_unimprovable_task_configs_run(tmp_path, tiny_model_dir, config):
    """The shipped configs of open-domain QA (a JSONL file of gold-answer lists, read from the
    repository root) and 4×4 sudoku run end to end, here on the tiny model at a tiny size."""
    out = tmp_path / "gap"
    tiny = ["--task.test_size", "2", "--sampling.n", "3", "--sampling.max_tokens", "8", "--bootstrap", "50"]
    r = run(
        ["--config", f"recipes/configs/{config}", "--model", str(tiny_model_dir), "--engine.backend", "hf"]
        + tiny
        + ["--output_dir", str(out)]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = check_outputs(out, 2, 3)
    ver = pd.read_parquet(out / "verification.parquet")
    if config == "gap_open_qa.yaml":
        golds = {
            json.loads(line)["id"]: json.loads(line)["answers"]
            for line in (ROOT / "recipes/data/open_qa.jsonl").open()
        }
        assert all(ref == golds[pid][0] for pid, ref in zip(ver["prompt_id"], ver["reference"]))
        assert "Question: " in ver["prompt"][0] and ver["prompt"][0].count("\nAnswer: ") == 4  # 4 shots
    else:
        assert all(len(ref.split("\n")) == 4 for ref in ver["reference"])
    assert m["config"]["task"]["prompt_style"] == "fewshot"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--sampling.temprature", "0.5"], "unknown config key 'sampling.temprature'"),
        (["--task", "no_such_task"], "no_such_task"),
        (["--verifiers", "[psychic]"], "verifiers.0.name: unknown value 'psychic'"),
        (["--model", "./no/such/model"], "model: path ./no/such/model does not exist"),
        (["--config", "missing.yaml"], "--config: file missing.yaml does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    r = run(args + ["--output_dir", str(tmp_path / "x")], timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_file_task_bad_row(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"q": "1+1", "a": "2"}\n{"q": "2+2"}\n')
    r = run(
        [
            "--task.name",
            "file",
            "--task.path",
            str(data),
            "--task.fields",
            "{question: q, answer: a}",
            "--task.test_size",
            "1",
            "--task.train_size",
            "1",
            "--output_dir",
            str(tmp_path / "x"),
        ],
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert str(data) in line and "line 2" in line and "'a'" in line, r.stderr[-2000:]


def test_a_prompt_past_the_context_is_refused_before_the_engine_starts(tmp_path):
    """A 1 MiB question is named by its file and line before any engine starts, not found by the
    engine as 'prompt 3' of a batch minutes later."""
    data = tmp_path / "data.jsonl"
    rows = [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(4)]
    rows[2]["question"] = "1 + 1? " * ((1 << 20) // 7)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "--task.name",
        "file",
        "--task.path",
        str(data),
        "--task.test_size",
        "4",
        "--task.train_size",
        "0",
    ]
    r = run(args + ["--task.shots_size", "0", "--output_dir", str(tmp_path / "x")], timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {data}: line 3: its prompt is ") and "engine.max_model_len (1024)" in line
    assert not (tmp_path / "x" / "logs").exists() and not (tmp_path / "x" / "config.json").exists()


def test_output_dir_that_is_a_file_and_a_budget_past_the_context_are_one_line_errors(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("not a folder")
    for args, needle in (
        (["--output_dir", str(afile)], f"output_dir: {afile} is a file, not a folder"),
        (["--output_dir", str(afile / "sub")], f"output_dir: cannot create {afile / 'sub'} (Not a directory"),
        (
            ["--output_dir", str(tmp_path / "y"), "--sampling.max_tokens", "2048"],
            "sampling.max_tokens: 2048 tokens do not fit engine.max_model_len (1024)",
        ),
    ):
        r = run(args, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
        assert needle in line, line
