"""The stages of a round that both recipes share: generate, verify, select.

Each takes and returns a DataFrame of generation rows; stages add columns and never reshape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.filters import FilterConfig, select
from trainer.samplers.base import EngineConfig, Sampler, SamplingConfig
from trainer.verifiers import VERIFIERS, VerifierResult, VerifyContext, make_verifier
from trainer.verifiers.base import VerifierConfig


def generate_rows(
    sampler: Sampler, task, problems: list, prompts: list[str], sampling: SamplingConfig, seed: int
) -> pd.DataFrame:
    """Sample `sampling.n` completions per prompt and check each against the task's reference. A
    few-shot prompted (base) model's completion ends where it starts the next example."""
    from eval.prompts import resolve_prompt_style, stop_strings

    outs = sampler.generate(
        prompts,
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        seed=seed,
        stop=stop_strings(resolve_prompt_style(task.cfg.prompt_style, sampler.tokenizer)),
    )
    records = []
    for problem, prompt, completions in zip(problems, prompts, outs):
        for j, c in enumerate(completions):
            answer = task.extract_answer(c.text, finished=c.finish_reason != "length")
            records.append(
                {
                    "prompt_id": str(problem.id),
                    "sample_idx": j,
                    "question": problem.question,
                    "reference": str(problem.answer),
                    "prompt": prompt,
                    "completion": c.text,
                    "n_tokens": c.n_tokens,
                    "finish_reason": c.finish_reason,
                    "answer": answer,
                    "correct": bool(task.check(answer, problem)),
                }
            )
    return pd.DataFrame.from_records(records)


@dataclass
class VerifierPool:
    """Verifiers with the samplers they run on; a cross-verifier model gets its own, shared by name."""

    generator: Sampler | None
    generator_dir: Path | None
    engine: EngineConfig
    task: object
    shots: list
    seed: int
    samplers: dict = field(default_factory=dict)  # model dir -> (sampler, tokenizer, style)

    def context(self, cfg: VerifierConfig, key: str = "verifiers") -> VerifyContext:
        from transformers import AutoTokenizer

        from eval.prompts import resolve_prompt_style
        from trainer.models import resolve_model
        from trainer.samplers import build_sampler, check_second_engine

        cls = VERIFIERS[cfg.name]
        if not cls.needs_model:
            return VerifyContext(None, None, "chat", self.task, self.shots, self.seed)
        model_dir = resolve_model(cfg.model) if cfg.model else self.generator_dir
        key = str(model_dir)
        if key not in self.samplers:
            if model_dir == self.generator_dir and self.generator is not None:
                sampler = self.generator
            else:
                check_second_engine(self.engine, f"{key}.model")
                sampler = build_sampler(model_dir, self.engine, self.seed)
            tok = AutoTokenizer.from_pretrained(model_dir)
            self.samplers[key] = (sampler, tok, resolve_prompt_style("auto", tok))
        sampler, tok, style = self.samplers[key]
        return VerifyContext(sampler, tok, style, self.task, self.shots, self.seed)

    def engines(self) -> list[Sampler]:
        """Every distinct sampler of the pool, the generator's first."""
        out = [self.generator] if self.generator is not None else []
        for sampler, _, _ in self.samplers.values():
            if all(sampler is not s for s in out):
                out.append(sampler)
        return out

    def sleep(self) -> None:
        """Free every engine's accelerator memory while SFT runs (a no-op where nothing is held)."""
        for sampler in self.engines():
            sampler.sleep()

    def wake_up(self) -> None:
        for sampler in self.engines():
            sampler.wake_up()

    def close(self) -> None:
        """Close the samplers this pool started (not the generator's)."""
        for sampler, _, _ in self.samplers.values():
            if sampler is not self.generator:
                sampler.close()
        self.samplers.clear()


def verify_rows(
    rows: pd.DataFrame,
    verifiers: list[VerifierConfig],
    pool: VerifierPool,
    keys: list[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Add a score column per verifier; return the rows and each verifier's cost (tokens, seconds, the
    rows it scored, and the verifier's own diagnostics). `keys` are the
    verifiers' config keys that run-time errors name (default `verifiers.<i>`). A verifier that samples
    its verifications (cot_binary, cot_score) also adds each one's score and token cost as list columns
    `verdicts_<id>` and `verdict_tokens_<id>` (score_<id> is the mean of the parsed ones)."""
    rows = rows.copy()
    costs = {}
    for i, cfg in enumerate(verifiers):
        key = keys[i] if keys else f"verifiers.{i}"
        verifier = make_verifier(cfg, pool.context(cfg, key), key)
        start = time.perf_counter()
        result: VerifierResult = verifier.score(rows)
        rows[cfg.column] = np.asarray(result.scores, dtype=float)
        if result.verdicts is not None:
            vid = cfg.id or cfg.name
            rows[f"verdicts_{vid}"] = [np.asarray(v, dtype=float) for v in result.verdicts]
            rows[f"verdict_tokens_{vid}"] = [np.asarray(t, dtype=int) for t in result.verdict_tokens]
        costs[cfg.id or cfg.name] = {
            "tokens": int(result.tokens),
            "seconds": round(result.seconds or time.perf_counter() - start, 3),
            "rows": len(rows),  # what the record's means (verdict_mass) are over, to weigh ranks by
            **result.extra,
        }
    return rows, costs


def select_rows(
    rows: pd.DataFrame, verifiers: list[VerifierConfig], filt: FilterConfig, seed: int = 0
) -> pd.DataFrame:
    """Add `kept_<id>` per verifier (under its own `filter`, else `filt`) and `kept` for the first
    (primary) verifier; `seed` draws the random control's choice."""
    rows = rows.copy()
    for i, cfg in enumerate(verifiers):
        weights = select(rows, rows[cfg.column].to_numpy(), cfg.filter or filt, seed)
        rows[f"kept_{cfg.id or cfg.name}"] = weights > 0
        if i == 0:
            rows["kept"] = weights > 0
    return rows


class OneEngine:
    """At most one loaded model: asking for another closes the current one first."""

    def __init__(self, engine: EngineConfig, seed: int, log_dir: Path | None = None):
        self.engine, self.seed = engine, seed
        self.log_dir = log_dir  # where a vLLM server started here writes its output
        self.model_dir: Path | None = None
        self.sampler: Sampler | None = None

    def get(self, model_dir: Path) -> Sampler:
        if self.model_dir != model_dir:
            self.close()
            from trainer.samplers import build_sampler

            self.sampler = build_sampler(model_dir, self.engine, self.seed, log_dir=self.log_dir)
            self.model_dir = model_dir
        return self.sampler

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
        self.sampler, self.model_dir = None, None
