"""Multiple-choice verification: P("Correct") / (P("Correct") + P("Incorrect")) from log-probabilities.

No decoding, and one pass per row: both words are scored as whole continuations (so a word that the
tokenizer splits, SmolLM2's "In" + "correct", is compared fairly with a single-token one), and the
sampler reads both off one pass over the prompt + the longer word (`Sampler.score`, `plan_carriers`).

Worked examples (`n_shots`) are shown the way the model is prompted: as earlier chat turns (the
filled template, then the verdict as the assistant's reply) for instruct models, as plain text ending
in `Verdict: <word>` for base models. Besides the score, the verifier reports the probability mass
the two verdicts hold, P(Correct) + P(Incorrect): where it is tiny, the model meant to say something
else and the score is noise.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from core.errors import UserError
from eval.prompts import text_start
from trainer.verifiers.base import Verifier, VerifierResult
from trainer.verifiers.registry import register


@register("mc")
class MCVerifier(Verifier):
    """MC: P(yes) / (P(yes) + P(no)) of the two verdict words after the verification prompt.

    Options (`verifiers.<i>.options`):
      yes, no   the verdict words (Correct, Incorrect)
    The template (default templates/mc.txt) needs {question} and {completion}.
    """

    option_names = ("yes", "no")

    def read_options(self, opts) -> None:
        self.yes, self.no = (
            self._word(opts, name, default) for name, default in (("yes", "Correct"), ("no", "Incorrect"))
        )
        if self.yes.lower() == self.no.lower():
            raise UserError(f"{opts.where('no')}: the no word equals the yes word {self.yes!r}")
        self.template("mc.txt")  # exists and holds its fields

    @staticmethod
    def _word(opts, name: str, default: str) -> str:
        words = opts.words(name, [default])
        if len(words) != 1:
            raise UserError(f"{opts.where(name)}: mc scores one word, got {words}")
        return words[0]

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        yes, no = self.words()
        prompts = self.prompts(rows)
        start = time.perf_counter()
        logps = np.asarray(self.ctx.sampler.score(prompts, [[yes, no]] * len(prompts)), dtype=np.float64)
        seconds = time.perf_counter() - start
        scores = 1.0 / (1.0 + np.exp(logps[:, 1] - logps[:, 0]))  # softmax over the two verdicts
        mass = np.exp(logps).sum(axis=1)
        tokens = getattr(self.ctx.sampler, "last_score_tokens", None)
        return VerifierResult(
            scores=scores,
            tokens=int(tokens) if tokens is not None else self.pass_tokens(prompts, [yes, no]),
            seconds=seconds,
            extra={"verdict_mass": float(mass.mean()) if len(mass) else None},
        )

    def words(self) -> tuple[str, str]:
        """The two verdict continuations as scored (a base model's get a leading space)."""
        yes, no = self.yes, self.no
        return (yes, no) if self.ctx.prompt_style == "chat" else (" " + yes, " " + no)

    def prompts(self, rows: pd.DataFrame) -> list[str]:
        """The verification prompt of every row, examples included, rendered in the model's style."""
        template = self.template("mc.txt")
        shots = self.examples(template, self.yes, self.no)
        bodies = [
            template.format(question=q, completion=str(c).strip())
            for q, c in zip(rows["question"], rows["completion"])
        ]
        if self.ctx.prompt_style == "chat":
            history = []
            for body, verdict in shots:
                history += [
                    {"role": "user", "content": body.strip()},
                    {"role": "assistant", "content": verdict},
                ]
            return [
                self.ctx.tokenizer.apply_chat_template(
                    [*history, {"role": "user", "content": body.strip()}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for body in bodies
            ]
        prefix = text_start(self.ctx.tokenizer)
        prefix += "".join(f"{body.rstrip()}\nVerdict: {verdict}\n\n" for body, verdict in shots)
        return [f"{prefix}{body.rstrip()}\nVerdict:" for body in bodies]

    def pass_tokens(self, prompts: list[str], verdicts: list[str]) -> int:
        """Tokens the passes process (for a sampler that does not report them): each prompt once per
        group of verdicts scored together, plus the group's fed tokens (all but its last)."""
        from trainer.samplers.base import plan_carriers

        ids = self.ctx.tokenizer(verdicts, add_special_tokens=False)["input_ids"]
        carriers = plan_carriers(0, ids)
        return self.count_tokens(prompts) * len(carriers) + len(prompts) * sum(
            len(c.tokens) - 1 for c in carriers
        )

    def examples(self, template: str, yes: str, no: str) -> list[tuple[str, str]]:
        """Worked verification examples from the shot problems: (filled template, verdict), alternately
        a right and a wrong answer."""
        if not self.cfg.n_shots or not self.ctx.shots:
            return []
        rng = np.random.default_rng(self.ctx.seed)
        shots = [self.ctx.shots[i] for i in rng.permutation(len(self.ctx.shots))[: self.cfg.n_shots]]
        out = []
        for i, p in enumerate(shots):
            right = i % 2 == 0
            shown = p.answer if right else _wrong(p.answer)
            body = template.format(question=p.question, completion=f"The answer is {shown}.")
            out.append((body, yes if right else no))
        return out


def _wrong(answer: str) -> str:
    try:
        return str(int(float(answer)) + 1)
    except ValueError:
        return answer + "0"
