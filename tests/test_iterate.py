"""recipes/iterate.py end to end: a 2-round study, resume after kill -9, and 2 processes on CPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from eval.gap import fmt_ci
from tests.conftest import ROOT, needs_vllm
from tests.helpers import markdown_tables

# Keys of a round's metrics that measure the machine, not the study.
VOLATILE = {"rss_mb", "gpu_mb", "checkpoint"}


def _drop_timings(obj):
    if isinstance(obj, dict):
        return {
            k: _drop_timings(v)
            for k, v in obj.items()
            if k not in VOLATILE and "seconds" not in k and "per_second" not in k
        }
    return obj


def study_args(model: Path | str, out: Path, backend: str = "hf", rounds: int = 2) -> list[str]:
    return [
        "--model",
        str(model),
        "--output_dir",
        str(out),
        "--rounds",
        str(rounds),
        "--report_to",
        "none",
        "--engine.backend",
        backend,
        "--task.train_size",
        "6",
        "--task.test_size",
        "4",
        "--sampling.n",
        "4",
        "--sampling.max_tokens",
        "16",
        "--eval_sampling.n",
        "2",
        "--eval_sampling.max_tokens",
        "16",
        "--filter.q",
        "0.5",
        "--sft.batch_size",
        "4",
        "--sft.epochs",
        "1",
        "--sft.max_length",
        "256",
        "--bootstrap",
        "100",
        "--saturation.relative_gap_below",
        "null",
        "--saturation.pass_at_k_drop",
        "null",
        "--saturation.diversity_drop",
        "null",
        # the tiny random model never ends a sample: train on them as they stand
        "--sft.train_on_truncated",
        "true",
    ]


def launch(args: list[str], log: Path | None = None, cwd: Path = ROOT, **kw) -> subprocess.Popen:
    """The recipe in its own session; its output goes to `log` when given (a pipe nobody reads while
    waiting would fill up and stall the study), else to a pipe for `communicate`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    sink = subprocess.PIPE if log is None else log.open("a")
    try:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "recipes" / "iterate.py"), *args],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            **kw,
        )
    finally:
        if log is not None:
            sink.close()  # the child holds its own copy


def run(args: list[str], timeout: int = 900, cwd: Path = ROOT) -> str:
    proc = launch(args, cwd=cwd)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def stable(metrics_jsonl: Path) -> list[dict]:
    lines = [json.loads(line) for line in metrics_jsonl.read_text().splitlines()]
    return [_drop_timings(m) for m in lines]


@pytest.mark.slow
def test_two_round_study(tmp_path, smollm2_dir):
    out = tmp_path / "study"
    finished = ["--sampling.max_tokens", "48", "--sft.train_on_truncated", "false"]
    log = run(study_args(smollm2_dir, out) + ["--report_to", "wandb"] + finished)
    history = stable(out / "metrics.jsonl")
    assert [m["round"] for m in history] == [0, 1, 2]
    for t in (1, 2):
        rd = out / f"round_{t:03d}"
        for name in (
            "generations.parquet",
            "verification.parquet",
            "selection.parquet",
            "eval.parquet",
            "metrics.json",
            "checkpoint/config.json",
        ):
            assert (rd / name).exists(), rd / name
        sel = pd.read_parquet(rd / "selection.parquet")
        assert {"prompt_id", "sample_idx", "completion", "answer", "correct", "score_mc", "kept"} <= set(
            sel.columns
        )
        train = history[t]["train"]
        assert train["kept"] == int(sel["kept"].sum()) > 0
        assert train["sft_loss"] is not None
        # truncated samples are counted, and not distilled
        truncated = sel["finish_reason"] == "length"
        assert train["truncated_sampled"] == int(truncated.sum())
        assert train["truncated_kept"] == int((truncated & sel["kept"]).sum())
        assert train["distilled"] == train["kept"] - train["truncated_kept"]
        assert json.loads((rd / "sft.json").read_text())["samples"] == train["distilled"]
    assert (out / "round_000" / "eval.parquet").exists() and not (out / "round_000" / "checkpoint").exists()
    for m in history:
        assert set(m["pass_at_k"]) == {"1", "2"} and "gap" in m and "answer_diversity" in m
    tables = markdown_tables((out / "report.md").read_text())
    table, entropy_table = tables[0], tables[-1]
    rare = tables[1] if len(tables) == 3 else []  # no table where no sample was right
    assert [row["round"] for row in table] == ["0", "1", "2"]
    for row, m in zip(table, history):
        accuracy = m["generation_utility"]
        assert (
            row["accuracy"]
            == f"{accuracy['value']:.3f} [{accuracy['ci_low']:.3f}, {accuracy['ci_high']:.3f}]"
        )
        assert row["kept / sampled"] == (
            f"{m['train']['kept']} / {m['train']['sampled']}" if m["round"] else "– / –"
        )
    # rare correct answers: recall by answer share beside its no-signal and oracle baselines, and the
    # kept-set entropy, held-out every round and train from round 1, in metrics.jsonl and in the
    # report's second and third tables
    assert [(row["round"], row["samples"]) for row in entropy_table] == [
        ("0", "held-out"), ("1", "held-out"), ("1", "train"), ("2", "held-out"), ("2", "train")
    ]  # fmt: skip
    entropy_rows, recall_rows = iter(entropy_table), iter(rare)
    for m in history:
        for where, rec in (("held-out", m), ("train", m["train"])):
            if where == "train" and m["round"] == 0:
                assert "rare_answer_recall" not in rec
                continue
            row = next(entropy_rows)
            recall, entropy = rec["rare_answer_recall"], rec["kept_answer_entropy"]
            assert set(recall) == {"singleton", "le_25pct", "le_50pct", "gt_50pct", "all"}
            for bucket in [b for b in recall if recall[b]["correct"]]:
                r, shown = recall[bucket], next(recall_rows)
                assert (shown["round"], shown["samples"]) == (str(m["round"]), where)
                assert shown["kept / correct"] == f"{r['kept']} / {r['correct']}"
                assert shown["lift over no signal"] == fmt_ci(r["lift"], signed=True, digits=2)
                assert r["lift"]["value"] == pytest.approx(r["recall"]["value"] - r["no_signal"]["value"])
            counted = entropy["prompts"] + entropy["prompts_one"] + entropy["prompts_empty"]
            assert counted == (4 if where == "held-out" else 6)
            if entropy["prompts"]:
                assert row["sampled"] == fmt_ci(entropy["sampled"], signed=False, digits=2)
            else:
                assert row["kept"].startswith("n/a: the filter") and row["sampled"] == "n/a"
    train1 = pd.read_parquet(out / "round_001" / "selection.parquet")
    assert history[1]["train"]["rare_answer_recall"]["all"]["correct"] == int(train1["correct"].sum())
    for png in ("accuracy_gap.png", "pass_at_k.png", "diversity.png", "rare_answers.png"):
        assert (out / "plots" / png).stat().st_size > 1000
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    for chart in ("pass_at_k_curves", "rare_answer_recall_curves"):  # W&B line series, one per round so far
        assert list((run_dir / "files" / "media" / "table").glob(f"{chart}_table_*.table.json")), chart
    study = json.loads((out / "study.json").read_text())
    assert study["config"]["rounds"] == 2 and "torch" in study["versions"] and study["wandb_run_id"]
    assert list((out / "wandb").glob("offline-run-*")), "W&B offline run directory missing"
    assert re.search(r"^round 2: accuracy", log, re.M)
    raw = json.loads((out / "round_001" / "metrics.json").read_text())
    import torch

    assert raw["rss_mb"] > 100 and (raw["gpu_mb"] is None) == (not torch.cuda.is_available())
    # round 2's model is round 1's checkpoint trained further: the weights moved
    from safetensors.torch import load_file

    w1 = load_file(out / "round_001" / "checkpoint" / "model.safetensors")
    w2 = load_file(out / "round_002" / "checkpoint" / "model.safetensors")
    assert any(not (w1[k] == w2[k]).all() for k in w1)


def wait_for(proc: subprocess.Popen, path: Path, log: Path, timeout: float = 600) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, f"study exited before {path} appeared: {log.read_text()[-3000:]}"
        assert time.time() - start < timeout, f"{path} did not appear: {log.read_text()[-3000:]}"
        time.sleep(0.2)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_model_dir) -> tuple[Path, list[str]]:
    """A finished 2-round study of the tiny model (the reference the kill and damage tests compare
    with, and the folder they damage copies of), and the arguments that made it."""
    ref = tmp_path_factory.mktemp("finished") / "ref"
    args = study_args(tiny_model_dir, ref)
    run(args)
    return ref, args


def copy_of(study: Path, to: Path, args: list[str]) -> list[str]:
    """A copy of a study folder to damage, and the same arguments pointed at it."""
    shutil.copytree(study, to)
    return _with(args, ["--output_dir", str(to)])


def user_error(args: list[str]) -> str:
    """The one line a study refuses to resume with (in this process: the checks come first)."""
    from core.config import load_config
    from trainer.config import IterateConfig
    from trainer.loop import run_study

    with pytest.raises(UserError) as e:
        run_study(
            load_config(IterateConfig, args, default_config=str(ROOT / "recipes/configs/quickstart.yaml"))
        )
    (line,) = str(e.value).splitlines()
    return line


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(tmp_path, finished_study):
    ref, ref_args = finished_study
    expected = stable(ref / "metrics.jsonl")

    out = tmp_path / "killed"
    args = _with(ref_args, ["--output_dir", str(out)])
    # 1. between stages: right after round 1's verification file lands
    log = tmp_path / "killed.log"
    proc = launch(args, log)
    wait_for(proc, out / "round_001" / "verification.parquet", log)
    kill(proc)
    # 2. inside a stage: while round 1 distills (its selection exists, its checkpoint does not yet)
    proc = launch(args, log)
    wait_for(proc, out / "round_001" / "selection.parquet", log)
    time.sleep(1.0)
    kill(proc)
    assert not (out / "round_001" / "sft.json").exists()
    # 3. inside the evaluation of round 2
    proc = launch(args, log)
    wait_for(proc, out / "round_002" / "eval_generations.parquet", log)
    kill(proc)
    # what a kill inside a write leaves (whether this one landed inside one is up to timing)
    (out / "round_002" / ".eval.parquet.k1ll3d00.tmp").write_text("half a file")
    # a finished stage of the unfinished round damaged meanwhile: named, not read (main: ArrowInvalid)
    damaged = out / "round_002" / "selection.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    proc = launch(args)
    said, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in said, said[-3000:]
    assert f"error: {damaged}: holds 100 bytes where" in said and f"--redo {damaged} to make" in said
    run(args + ["--redo", str(damaged)])  # that stage, and what was made from it, made again
    assert stable(out / "metrics.jsonl") == expected
    assert not list(out.rglob("*.tmp")), "a temp file was left behind as if it were output"


@pytest.mark.slow
def test_a_damaged_or_changed_finished_study_is_refused_by_name(tmp_path, finished_study):
    """A finished study's file truncated or deleted, and study.json deleted before a changed setting:
    each is one line naming the file or the key (main: 'finished before', exit 0, and the broken folder
    kept; the changed setting accepted). Each check runs before any model loads."""
    ref, args = finished_study
    a = copy_of(ref, tmp_path / "truncated", args)
    table = tmp_path / "truncated" / "round_001" / "generations.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    line = user_error(a)
    assert line.startswith(f"{table}: holds {table.stat().st_size} bytes where ")
    assert line.endswith(
        f"rerun with --redo {table} to make stage round_001/generations again and every stage made from it"
    )

    b = copy_of(ref, tmp_path / "deleted", args)
    config = tmp_path / "deleted" / "round_001" / "checkpoint" / "config.json"
    config.unlink()
    assert user_error(b).startswith(
        f"{config}: is missing (written by stage round_001/distill); restore it, or rerun with --redo {config}"
    )

    c = copy_of(ref, tmp_path / "no_study_json", args)
    (tmp_path / "no_study_json" / "study.json").unlink()
    line = user_error(c + ["--sampling.temperature", "0.5"])
    assert "holds an earlier run with a different 'sampling.temperature' (0.8 in " in line
    assert f"{tmp_path / 'no_study_json' / 'round_000' / 'stages.json'}, now 0.5)" in line


def test_an_output_dir_that_cannot_be_created_is_one_line(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("a file")
    line = user_error(study_args("no-model-needed", afile / "study"))
    assert line.startswith(f"output_dir: cannot create {afile / 'study'} (Not a directory")


@pytest.mark.slow
def test_a_study_from_before_stage_records_resumes_and_is_recorded(tmp_path, finished_study):
    """A study folder as the code before stage records left it (no stages.json, study.json without the
    marker) resumes to the same metrics; its finished stages are recorded on the way, and said so."""
    ref, args = finished_study
    old = copy_of(ref, tmp_path / "old", args)
    for record in (tmp_path / "old").rglob("stages.json"):
        record.unlink()
    meta = json.loads((tmp_path / "old" / "study.json").read_text())
    del meta["stage_records"]
    (tmp_path / "old" / "study.json").write_text(json.dumps(meta))
    said = " ".join(run(old).split())  # as the console wrapped it
    assert (
        "made before mindgap recorded its stages; recorded the 20 finished stages found as they are" in said
    )
    assert stable(tmp_path / "old" / "metrics.jsonl") == stable(ref / "metrics.jsonl")
    record = json.loads((tmp_path / "old" / "round_002" / "stages.json").read_text())
    assert (
        record["stages"]["distill"]["adopted"]
        and "checkpoint/model.safetensors" in record["stages"]["distill"]["files"]
    )


@pytest.mark.slow
def test_accelerate_two_processes_cpu(tmp_path, tiny_model_dir):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--config_file",
        str(ROOT / "launch" / "cpu_2proc.yaml"),
        str(ROOT / "recipes" / "iterate.py"),
        *study_args(tiny_model_dir, out, rounds=1),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    history = stable(out / "metrics.jsonl")
    assert [m["round"] for m in history] == [0, 1]
    gen = pd.read_parquet(out / "round_001" / "generations.parquet")
    assert len(gen) == 6 * 4 and gen["prompt_id"].nunique() == 6  # both ranks' shards gathered
    assert (out / "round_001" / "checkpoint" / "config.json").exists()


@pytest.mark.slow
@needs_vllm
def test_one_round_on_vllm(tmp_path, tiny_model_dir):
    out = tmp_path / "vllm"
    log = run(study_args(tiny_model_dir, out, backend="vllm", rounds=1))
    history = stable(out / "metrics.jsonl")
    assert [m["round"] for m in history] == [0, 1]
    m1 = json.loads((out / "round_001" / "metrics.json").read_text())
    assert m1["swap_seconds"] is not None and m1["swap_seconds"] < 30  # swapped in place, no new engine
    assert re.search(r"^round 1: accuracy", log, re.M)


def test_empty_kept_set_stops_cleanly(tmp_path, tiny_model_dir):
    out = tmp_path / "empty"
    log = run(
        study_args(tiny_model_dir, out, rounds=2)
        + ["--verifiers", "[oracle]", "--filter.name", "threshold", "--filter.tau", "2.0"]
    )
    m = json.loads((out / "round_001" / "metrics.json").read_text())
    assert "kept none" in m["stop"] and "kept none" in log
    assert not (out / "round_002").exists()
    assert f"**Stopped:** {m['stop']}" in (out / "report.md").read_text().splitlines()


@pytest.mark.slow
def test_resume_from_another_directory_rejudges_changed_stopping_rules(tmp_path, tiny_model_dir):
    """A study folder given relatively resumes from any working directory (checkpoints are recorded
    relative to it), and stopping rules changed on a resume judge the finished rounds again."""
    (tmp_path / "a").mkdir()
    args = [a for a in study_args(tiny_model_dir, Path("study"), rounds=1)]
    run(args, cwd=tmp_path / "a")
    out = tmp_path / "a" / "study"
    m1 = json.loads((out / "round_001" / "metrics.json").read_text())
    assert m1["checkpoint"] == "round_001/checkpoint" and m1["stop"] is None

    moved = ["--output_dir", "a/study"]
    strict = ["--saturation.relative_gap_below", "1000", "--saturation.relative_gap_rounds", "1"]
    log = run(_with(args, moved + ["--rounds", "3"] + strict), cwd=tmp_path)
    m1 = json.loads((out / "round_001" / "metrics.json").read_text())
    assert m1["stop"].startswith("relative gap: its upper bound stayed below 1000")
    assert m1["saturation"]["relative_gap"]["fired"] and "stopped: relative gap" in log
    assert not (out / "round_002").exists()

    run(_with(args, moved + ["--rounds", "2"]), cwd=tmp_path)  # the rules off again: it goes on
    assert json.loads((out / "round_001" / "metrics.json").read_text())["stop"] is None
    m2 = json.loads((out / "round_002" / "metrics.json").read_text())
    assert m2["checkpoint"] == "round_002/checkpoint" and (out / "round_002" / "checkpoint").is_dir()
    assert [m["round"] for m in stable(out / "metrics.jsonl")] == [0, 1, 2]


def _with(args: list[str], overrides: list[str]) -> list[str]:
    """`args` with the --key value pairs of `overrides` replacing their earlier values."""
    pairs = dict(zip(args[::2], args[1::2]))
    pairs.update(dict(zip(overrides[::2], overrides[1::2])))
    return [x for kv in pairs.items() for x in kv]


@pytest.mark.parametrize("config, lines", [("one_process.yaml", 1), ("cpu_2proc.yaml", None)])
def test_a_user_error_under_accelerate_launch_is_one_line(tmp_path, config, lines):
    """The documented entry point, `accelerate launch -q --config_file launch/one_process.yaml
    recipes/iterate.py`, shows a config mistake as its one line and exits non-zero. Two ranks: the
    line once (torchrun then adds its own failure summary)."""
    cmd = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "-q",
        "--config_file",
        str(ROOT / "launch" / config),
        str(ROOT / "recipes" / "iterate.py"),
        "--rounds",
        "-1",
        "--output_dir",
        str(tmp_path / "x"),
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: rounds: must be >= 0, got -1"], r.stderr[-3000:]
    if lines is not None:
        assert r.stderr.strip().splitlines() == errors and r.stdout.strip() == "", r.stderr[-3000:]
