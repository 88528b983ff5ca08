"""Chain-of-thought verification: the verifier reasons in text, then states a verdict or a score.

`cot_binary` ends its reasoning with `Verdict: Correct` / `Verdict: Incorrect` (score 1 / 0);
`cot_score` ends with `Score: N` on a 1–10 scale (scores are rescaled to [0, 1] unless
`options.normalize` is false). Several verification samples per generation may be averaged.

`PromptedVerifier` holds what every verifier that prompts a model with a template shares (the
tournament builds on it too): the template file, few-shot examples, rendering in the model's style
(its chat template for instruct models, plain few-shot text for base models), and generation with
the tokens it spends counted (prompt + generated, for every call).
"""

from __future__ import annotations

import dataclasses
import json
import string
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from core.errors import UserError
from eval.prompts import text_start
from trainer.verifiers.base import TEMPLATES, Verifier, VerifierConfig, VerifierResult, VerifyContext
from trainer.verifiers.parsing import Options, apply_rule, cut_at, parse_score, parse_verdict
from trainer.verifiers.registry import register

GENERATION_OPTIONS = ("max_tokens", "temperature", "top_p", "samples", "unparseable", "examples")


def wrong_answer(answer: str) -> str:
    """A plausible wrong answer to show in a negative few-shot example."""
    try:
        value = float(answer)
    except ValueError:
        return answer + "0"
    return str(int(value) + 1) if value.is_integer() else str(value + 1)


def template_fields(text: str, where: str) -> set[str]:
    """The `{placeholders}` of a template, or a UserError when its braces are malformed."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:
        raise UserError(f"{where}: malformed template ({e}); write a literal brace as {{{{ or }}}}") from None


def load_template(path: Path, where: str, required: set[str], allowed: set[str]) -> str:
    """A template file's text, checked to hold every required placeholder and no unknown one."""
    if not path.is_file():
        raise UserError(f"{where}: file {path} does not exist")
    text = path.read_text()
    fields = template_fields(text, f"{where} ({path})")
    missing, unknown = sorted(required - fields), sorted(fields - allowed)
    if missing:
        raise UserError(f"{where}: {path} must contain {', '.join('{' + m + '}' for m in missing)}")
    if unknown or "" in fields:
        bad = unknown[0] if unknown else "{}"
        raise UserError(
            f"{where}: {path} has the unknown placeholder {{{bad}}}; "
            f"available: {', '.join('{' + a + '}' for a in sorted(allowed))}"
        )
    return text


@dataclasses.dataclass
class Sampling:
    """How verification text is sampled (from the verifier's options)."""

    max_tokens: int
    temperature: float
    top_p: float
    samples: int


class PromptedVerifier(Verifier):
    """A verifier that fills a template, renders it in the model's style and samples text from it.

    Subclasses set `template_file`, `example_file`, `required`/`optional` placeholders and
    `option_names`, read their own options in `read_options`, and build train-split examples in
    `example_fields`.
    """

    template_file = ""
    example_file = ""
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    option_names: tuple[str, ...] = GENERATION_OPTIONS
    cue = "Verification:"  # where a base model's verification starts (fewshot style)

    def __init__(self, cfg: VerifierConfig, ctx: VerifyContext, key: str | None = None):
        super().__init__(cfg, ctx, key)
        self.text = self.load(cfg, self.key)
        self.marker = next((line.strip() for line in self.text.splitlines() if line.strip()), "")
        self.file_examples = self._read_examples(self.examples_path) if self.examples_path else None

    # ------------------------------------------------------------ options and template

    @classmethod
    def load(cls, cfg: VerifierConfig, key: str) -> str:
        path = Path(cfg.template).expanduser() if cfg.template else TEMPLATES / cls.template_file
        return load_template(path, f"{key}.template", set(cls.required), set(cls.required + cls.optional))

    def read_options(self, opts: Options) -> None:
        self.rule = opts.unparseable()
        temperature = opts.number("temperature", 0.0, low=0.0)
        samples = opts.integer("samples", 1, low=1)
        if samples > 1 and temperature == 0:
            raise UserError(
                f"{opts.where('samples')}: {samples} samples at temperature 0 would all be the same; "
                f"set {opts.where('temperature')} above 0"
            )
        self.sampling = Sampling(
            max_tokens=opts.integer("max_tokens", 128, low=1),
            temperature=temperature,
            top_p=opts.number("top_p", 1.0, low=0.0, high=1.0),
            samples=samples,
        )
        if opts.get("top_p") is not None and self.sampling.top_p == 0:
            raise UserError(f"{opts.where('top_p')}: must be in (0, 1], got 0")
        self.examples_path = opts.file("examples")

    def constants(self) -> dict:
        """Values for the optional placeholders (e.g. the verdict words)."""
        return {}

    def fill(self, fields: dict) -> str:
        return self.text.format(**{**self.constants(), **fields})

    # ------------------------------------------------------------ few-shot examples

    def example_fields(self, problem, i: int, example: str) -> dict:
        """Template fields plus `response` for a worked example built from a train problem."""
        raise NotImplementedError

    def examples(self) -> list[tuple[dict, str]]:
        """(template fields, verification response) pairs: from `options.examples`, else the train split.

        `n_shots` caps how many (0 with an examples file: all of them; 0 otherwise: none).
        """
        if self.file_examples is not None:
            items = self.file_examples
            return items[: self.cfg.n_shots] if self.cfg.n_shots else items
        if not self.cfg.n_shots or not self.ctx.shots:
            return []
        example = (TEMPLATES / self.example_file).read_text().strip()
        rng = np.random.default_rng(self.ctx.seed)
        order = rng.permutation(len(self.ctx.shots))[: self.cfg.n_shots]
        out = []
        for i, idx in enumerate(order):
            fields = self.example_fields(self.ctx.shots[idx], i, example)
            out.append((fields, fields.pop("response")))
        return out

    def _read_examples(self, path: Path) -> list[tuple[dict, str]]:
        where = f"{self.key}.options.examples"
        try:
            if path.suffix == ".jsonl":
                items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                items = yaml.safe_load(path.read_text())
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise UserError(
                f"{where}: {path} is not valid {'JSONL' if path.suffix == '.jsonl' else 'YAML'}: "
                f"{str(e).splitlines()[0]}"
            ) from None
        if not isinstance(items, list) or not items:
            raise UserError(f"{where}: {path} must hold a non-empty list of examples")
        need = (*self.required, "response")
        out = []
        for k, item in enumerate(items):
            if not isinstance(item, dict) or any(not isinstance(item.get(f), str) for f in need):
                raise UserError(f"{where}: example {k} in {path} needs the text fields {', '.join(need)}")
            out.append(({f: item[f] for f in self.required}, item["response"]))
        return out

    # ------------------------------------------------------------ prompting and sampling

    def render_prompts(self, fields: list[dict]) -> list[str]:
        """Each filled template, preceded by the few-shot examples, in the model's prompt style."""
        shots = self.examples()
        if self.ctx.prompt_style == "chat":
            history = []
            for ex_fields, response in shots:
                history += [
                    {"role": "user", "content": self.fill(ex_fields).strip()},
                    {"role": "assistant", "content": response.strip()},
                ]
            return [
                self.ctx.tokenizer.apply_chat_template(
                    [*history, {"role": "user", "content": self.fill(f).strip()}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for f in fields
            ]
        prefix = text_start(self.ctx.tokenizer)
        prefix += "".join(f"{self.fill(f).strip()}\n{self.cue} {r.strip()}\n\n" for f, r in shots)
        return [f"{prefix}{self.fill(f).strip()}\n{self.cue}" for f in fields]

    def sample(self, prompts: list[str]) -> tuple[list[list[str]], np.ndarray, float]:
        """`samples` verification texts per prompt (cut where a base model starts a new example),
        the tokens each one cost (prompts × samples: its prompt's tokens + the tokens it generated) and
        the seconds taken."""
        s = self.sampling
        start = time.perf_counter()
        outs = self.ctx.sampler.generate(
            prompts,
            n=s.samples,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            seed=self.ctx.seed,
        )
        seconds = time.perf_counter() - start
        markers = [self.marker, f"\n{self.cue}"]
        texts = [[cut_at(c.text, markers) for c in comps] for comps in outs]
        generated = np.array([[c.n_tokens for c in comps] for comps in outs], dtype=int).reshape(
            len(prompts), -1
        )
        return texts, self.token_counts(prompts)[:, None] + generated, seconds


def example_answers(problem, i: int, task) -> tuple[bool, str, str]:
    """(shown answer is right, shown answer, completion stating it) for the i-th example."""
    right = i % 2 == 0
    shown = str(problem.answer) if right else wrong_answer(str(problem.answer))
    completion = task.reference_completion(dataclasses.replace(problem, answer=shown, meta={}))
    return right, shown, completion


class _CoTVerifier(PromptedVerifier):
    """Reason, then a verdict line: shared by cot_binary and cot_score."""

    required = ("question", "completion")

    def parse(self, text: str) -> float | None:
        raise NotImplementedError

    scale = (0.0, 1.0)  # the lowest and highest parsed value (what reject / accept give)

    def finish(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def example_outcome(self, right: bool) -> dict:
        """The example template's outcome field (verdict or score) for a right or a wrong example."""
        raise NotImplementedError

    def example_fields(self, problem, i: int, example: str) -> dict:
        right, shown, completion = example_answers(problem, i, self.ctx.task)
        response = example.format(
            reference=problem.answer,
            shown=shown,
            agreement="matches" if right else "does not match",
            **self.example_outcome(right),
        )
        return {"question": problem.question, "completion": completion, "response": response}

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        fields = [
            {"question": q, "completion": str(c).strip()}
            for q, c in zip(rows["question"], rows["completion"])
        ]
        prompts = self.render_prompts(fields)
        texts, tokens, seconds = self.sample(prompts)
        parsed = [[self.parse(t) for t in sample_texts] for sample_texts in texts]
        unparseable = sum(v is None for per_row in parsed for v in per_row)
        per_sample = np.array([apply_rule(per_row, self.rule, *self.scale) for per_row in parsed])
        per_sample = per_sample.reshape(len(parsed), self.sampling.samples)
        valid = ~np.isnan(per_sample)
        counts = valid.sum(axis=1)
        sums = np.where(valid, per_sample, 0.0).sum(axis=1)
        scores = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # mean of the parsed samples
        return VerifierResult(
            scores=self.finish(scores),
            tokens=int(tokens.sum()),
            seconds=seconds,
            extra={"unparseable": int(unparseable), "calls": int(per_sample.size)},
            verdicts=self.finish(per_sample),
            verdict_tokens=tokens,
        )


@register("cot_binary")
class CoTBinaryVerifier(_CoTVerifier):
    """CoT-binary: reason, then `Verdict: Correct|Incorrect`; score 1 / 0 (the mean over samples).

    Options (`verifiers.<i>.options`):
      max_tokens   verification tokens per sample (128)
      temperature  sampling temperature of the verifier (0 = greedy)
      top_p        nucleus sampling (1.0)
      samples      verification samples per generation, averaged (1; > 1 needs temperature > 0)
      unparseable  abstain | reject | accept: a verification with no verdict scores NaN / 0 / 1
      examples     a YAML/JSONL file of worked examples {question, completion, response}; without it,
                   `n_shots` examples are built from train problems (alternately right and wrong)
      yes, no      the verdict words (Correct, Incorrect); a word or a list of synonyms
    The template (`template:`, default templates/cot_binary.txt) needs {question} and {completion};
    {yes} and {no} are filled with the first verdict words.
    """

    template_file = "cot_binary.txt"
    example_file = "cot_binary_example.txt"
    optional = ("yes", "no")
    option_names = (*GENERATION_OPTIONS, "yes", "no")

    def read_options(self, opts: Options) -> None:
        super().read_options(opts)
        self.yes = opts.words("yes", ["Correct"])
        self.no = opts.words("no", ["Incorrect"])
        overlap = {w.lower() for w in self.yes} & {w.lower() for w in self.no}
        if overlap:
            raise UserError(f"{opts.where('no')}: {sorted(overlap)[0]!r} is both a yes and a no word")

    def constants(self) -> dict:
        return {"yes": self.yes[0], "no": self.no[0]}

    def parse(self, text: str) -> float | None:
        return parse_verdict(text, self.yes, self.no)

    def example_outcome(self, right: bool) -> dict:
        return {"verdict": self.yes[0] if right else self.no[0]}


@register("cot_score")
class CoTScoreVerifier(_CoTVerifier):
    """CoT-score: reason, then `Score: N` from 1 to 10; the mean over samples, rescaled to [0, 1].

    Options: those of cot_binary except yes/no (the default template is templates/cot_score.txt), and
      min_score, max_score  the scale (1, 10); {min_score} and {max_score} fill the template
      normalize             true: score (N - min) / (max - min) in [0, 1] (comparable with the other
                            strategies, and required inside an ensemble); false: the raw N
    With `unparseable: reject` a failed verification scores the minimum, with `accept` the maximum.
    Filter with `quantile` (per prompt) or `threshold` (tau on the score's own scale).
    """

    template_file = "cot_score.txt"
    example_file = "cot_score_example.txt"
    optional = ("min_score", "max_score")
    option_names = (*GENERATION_OPTIONS, "min_score", "max_score", "normalize")

    def read_options(self, opts: Options) -> None:
        super().read_options(opts)
        self.low = opts.integer("min_score", 1)
        self.top = opts.integer("max_score", 10)
        if self.top <= self.low:
            raise UserError(
                f"{opts.where('max_score')}: must be above min_score ({self.low}), got {self.top}"
            )
        self.normalize = opts.boolean("normalize", True)
        self.scale = (float(self.low), float(self.top))

    def constants(self) -> dict:
        return {"min_score": self.low, "max_score": self.top}

    def parse(self, text: str) -> float | None:
        return parse_score(text, self.low, self.top)

    def finish(self, scores: np.ndarray) -> np.ndarray:
        return (scores - self.low) / (self.top - self.low) if self.normalize else scores

    def example_outcome(self, right: bool) -> dict:
        return {"score": self.top if right else self.low}
