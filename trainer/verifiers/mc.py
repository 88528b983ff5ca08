"""Multiple-choice verification: P("Correct") / (P("Correct") + P("Incorrect")) from log-probabilities.

No decoding, and one pass per row: both words are scored as whole continuations (so a word that the
tokenizer splits, SmolLM2's "In" + "correct", is compared fairly with a single-token one), and the
sampler reads both off one pass over the prompt + the longer word (`Sampler.score`, `plan_carriers`).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from trainer.verifiers.base import Verifier, VerifierResult


class MCVerifier(Verifier):
    def score(self, rows: pd.DataFrame) -> VerifierResult:
        yes = self.cfg.options.get("yes", "Correct")
        no = self.cfg.options.get("no", "Incorrect")
        template = self.template("mc.txt")
        prefix = self.fewshot_prefix(template, yes, no)
        prompts = [
            self.render(template.format(question=q, completion=c.strip()), prefix)
            for q, c in zip(rows["question"], rows["completion"])
        ]
        if self.ctx.prompt_style != "chat":
            prompts = [p.rstrip() + "\nVerdict:" for p in prompts]
            yes, no = " " + yes, " " + no
        start = time.perf_counter()
        logps = np.asarray(self.ctx.sampler.score(prompts, [[yes, no]] * len(prompts)), dtype=np.float64)
        seconds = time.perf_counter() - start
        scores = 1.0 / (1.0 + np.exp(logps[:, 1] - logps[:, 0]))  # softmax over the two verdicts
        return VerifierResult(scores=scores, tokens=self.pass_tokens(prompts, [yes, no]), seconds=seconds)

    def pass_tokens(self, prompts: list[str], verdicts: list[str]) -> int:
        """Tokens the passes process: each prompt once per group of verdicts the sampler scores together."""
        from trainer.samplers.base import plan_carriers

        ids = self.ctx.tokenizer(verdicts, add_special_tokens=False)["input_ids"]
        carriers = plan_carriers(0, ids)
        return self.count_tokens(prompts) * len(carriers) + len(prompts) * sum(
            len(c.tokens) for c in carriers
        )

    def fewshot_prefix(self, template: str, yes: str, no: str) -> str:
        """Worked verification examples built from train problems: one right and one wrong answer each."""
        if not self.cfg.n_shots or not self.ctx.shots:
            return ""
        rng = np.random.default_rng(self.ctx.seed)
        shots = [self.ctx.shots[i] for i in rng.permutation(len(self.ctx.shots))[: self.cfg.n_shots]]
        parts = []
        for i, p in enumerate(shots):
            right = i % 2 == 0
            shown = p.answer if right else _wrong(p.answer)
            body = template.format(question=p.question, completion=f"The answer is {shown}.")
            parts.append(f"{body.rstrip()}\nVerdict: {yes if right else no}\n\n")
        return "".join(parts)


def _wrong(answer: str) -> str:
    try:
        return str(int(float(answer)) + 1)
    except ValueError:
        return answer + "0"
