"""Tasks: where problems come from, how a final answer is read from a completion, and how it is checked.

    task = build_task(cfg.task, seed=cfg.seed)
    test = task.problems("test")
    answer = task.extract_answer(completion)      # None when the completion states no answer
    ok = task.check(answer, test[0])               # None is never correct

Registered names (`TASKS`): the reasoning-gym generators `basic_arithmetic`, `gsm_symbolic`, `sudoku`
(9×9), `mini_sudoku` (4×4), `countdown` (and any other reasoning-gym dataset as `rg:<name>` or its bare
name), `file` (a local .jsonl/.parquet file; an answer field may hold a list of gold answers), and the
hub datasets `gsm8k` and `math` (online only).

Splits are disjoint and deterministic given the config and seed: `test` (held out: the gap and every
round's evaluation), `train` (what the loop samples, verifies and distills) and `shots` (worked
examples for few-shot prompts and verifier prompts, never sampled or verified, so no prompt shows the
reference answer of a problem it asks about). reasoning-gym splits are generated from different
derived seeds, and each drops the questions of the splits before it (test, train, shots); a file is
shuffled by the seed, its first `test_size` rows are test, the next `train_size` rows train and the
next `shots_size` rows shots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from core.config import knob, one_of, positive
from core.errors import UserError
from eval.answers import (
    ANSWER_PREFIX,
    TRAILING_PUNCTUATION,
    as_fraction,
    cut_continuation,
    exact_match,
    extract_answer,
    last_boxed,
    last_grid,
    looks_math,
    looks_numeric,
    math_match,
    normalize_number,
    qa_match,
    read_grid,
)

log = logging.getLogger(__name__)

SPLITS = ("test", "train", "shots")
CHECKERS = ("auto", "exact", "math", "task", "qa")
PROMPT_STYLES = ("chat", "fewshot", "auto")


@dataclass
class TaskConfig:
    """Which problems, how many, and how they are prompted."""

    name: str = knob(
        "basic_arithmetic",
        "a registered task (basic_arithmetic, gsm_symbolic, sudoku, mini_sudoku, countdown, any reasoning-gym dataset, file, gsm8k, math)",
    )
    train_size: int = knob(64, "problems in the train split (the loop samples, verifies and distills these)")
    test_size: int = knob(32, "problems in the held-out test split (the gap and every round's evaluation)")
    shots_size: int = knob(
        8, "problems set aside as worked examples (few-shot and verifier prompts); never sampled or verified"
    )
    seed: int | None = knob(None, "data seed; defaults to the study seed")
    prompt_style: str = knob("auto", "chat | fewshot | auto (chat when the tokenizer has a chat template)")
    n_shots: int = knob(4, "few-shot examples in generation prompts of base models (fewshot style)")
    options: dict = knob(
        factory=dict, help="passed to the task's generator (a reasoning-gym dataset's config)"
    )
    path: str | None = knob(None, "for task file: a .jsonl or .parquet file of problems")
    fields: dict = knob(
        factory=dict,
        help="for task file: columns of the fields, e.g. {question: q, answer: a, id: uid}; an answer that is a list holds gold answers, any of which is right",
    )
    checker: str = knob(
        "auto",
        "auto | exact | math (math-verify) | task (the task's own scorer) | qa (SQuAD-normalised exact match)",
    )

    def validate(self, key: str) -> None:
        one_of(f"{key}.prompt_style", self.prompt_style, PROMPT_STYLES)
        one_of(f"{key}.checker", self.checker, CHECKERS)
        positive(f"{key}.test_size", self.test_size)
        if self.train_size < 0:
            raise UserError(f"{key}.train_size: must be >= 0, got {self.train_size}")
        if self.shots_size < 0:
            raise UserError(f"{key}.shots_size: must be >= 0, got {self.shots_size}")
        for name in ("path", "fields"):
            if self.name != "file" and getattr(self, name):
                raise UserError(
                    f"{key}.{name}: task '{self.name}' reads no file ({key}.{name} is for task 'file'); "
                    f"remove it, or set {key}.name: file"
                )


@dataclass
class Problem:
    id: str  # stable, unique within the task and split
    question: str
    answer: str  # the reference answer, as text
    meta: dict = field(default_factory=dict)  # what the checker needs (e.g. the reasoning-gym entry)


class Task:
    """A source of problems with an answer format, an extractor and a checker."""

    name: str = "task"
    numeric: bool = False  # answers are numbers: extraction reduces to a number, falls back to the last one
    multiline: bool = False  # answers may span lines (a grid)
    grid: int | None = None  # answers are grids of this many rows of as many digits (sudoku)
    checker: str = "auto"  # the resolved task.checker

    def __init__(self, cfg: TaskConfig, seed: int):
        self.cfg = cfg
        self.seed = seed
        self._splits: dict[str, list[Problem]] = {}

    # ------------------------------------------------------------ the interface

    def problems(self, split: str) -> list[Problem]:
        """The problems of `split` ("train" or "test"); disjoint, deterministic given config and seed."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split == "shots" and not self._shots_size():
            return []
        if split not in self._splits:
            self._splits[split] = self._load(split)
        return list(self._splits[split])

    def extract_answer(self, completion: str, finished: bool = True) -> str | None:
        """The final answer stated in `completion`; None when nothing is extractable. Never raises.

        `finished` is False for a completion cut off at its token budget (see `answers.extract_answer`).
        """
        return extract_answer(completion, numeric=self.numeric, multiline=self.multiline, finished=finished)

    def check(self, answer: str | None, problem: Problem) -> bool:
        """Whether `answer` (from extract_answer) is correct for `problem`; None is False. Never raises."""
        if answer is None:
            return False
        try:
            return bool(self._check(answer, problem))
        except Exception:
            log.debug("checker failed on %r for problem %s", answer, problem.id, exc_info=True)
            return False

    def where(self, problem: Problem) -> str:
        """Where `problem` comes from, as an error names it."""
        return f"task {self.name}: problem {problem.id}"

    def format_instruction(self) -> str:
        """How the model is asked to state its final answer (what extract_answer reads first)."""
        if self.multiline:
            return (
                f'Give your final answer at the end: a line "{ANSWER_PREFIX}" followed by the answer '
                "on the next lines."
            )
        what = "number" if self.numeric else "answer"
        return f'Give your final answer on the last line, in the form "{ANSWER_PREFIX} <{what}>".'

    def reference_completion(self, problem: Problem) -> str:
        """The completion a perfect model would write: the worked solution if known, then the answer line.

        Used as the answer of few-shot examples.
        """
        solution = str(problem.meta.get("solution") or "").strip()
        sep = "\n" if self.multiline else " "
        line = f"{ANSWER_PREFIX}{sep}{problem.answer}"
        return f"{solution}\n{line}" if solution else line

    # ------------------------------------------------------------ for subclasses

    def _size(self, split: str) -> int:
        """How many problems `split` holds."""
        if split == "shots":
            return self._shots_size()
        return self.cfg.test_size if split == "test" else self.cfg.train_size

    def _shots_size(self) -> int:
        return int(getattr(self.cfg, "shots_size", 0) or 0)

    def _earlier_questions(self, split: str) -> set[str]:
        """The questions of the splits drawn before `split` (test, then train), which it must avoid."""
        before = SPLITS[: SPLITS.index(split)]
        return {p.question for s in before for p in self.problems(s)}

    def _load(self, split: str) -> list[Problem]:
        raise NotImplementedError

    def _check(self, answer: str, problem: Problem) -> bool:
        """Against the reference, or any of a problem's gold answers (`meta["answers"]`, a file's list):
        `auto` compares with those by SQuAD-normalised exact match (`qa`), with a single reference by
        math-verify where it is math and by normalised exact match otherwise."""
        golds = problem.meta.get("answers") or [problem.answer]
        if self.checker == "qa" or (self.checker == "auto" and "answers" in problem.meta):
            return qa_match(answer, golds)
        if self.checker == "math" or (self.checker == "auto" and looks_math(problem.answer)):
            return any(math_match(answer, g) for g in golds)
        return any(exact_match(answer, g) for g in golds)


def _derived_seed(seed: int, *parts: str) -> int:
    """A 32-bit seed derived from `seed` and labels (stable across runs and Python versions)."""
    digest = hashlib.sha256(":".join(["mindgap", str(seed), *parts]).encode()).hexdigest()
    return int(digest[:8], 16)


def _check_checker(cfg: TaskConfig, allowed: tuple[str, ...], task: str) -> str:
    if cfg.checker not in CHECKERS:
        raise UserError(f"task.checker: unknown value '{cfg.checker}'; choose one of {', '.join(CHECKERS)}")
    if cfg.checker not in allowed:
        raise UserError(
            f"task.checker: '{cfg.checker}' does not apply to task '{task}' (it has no scorer of its "
            f"own); choose one of {', '.join(allowed)}"
        )
    return cfg.checker


def _check_sizes(cfg: TaskConfig) -> None:
    if not isinstance(cfg.test_size, int) or cfg.test_size <= 0:
        raise UserError(f"task.test_size: must be > 0, got {cfg.test_size!r}")
    if not isinstance(cfg.train_size, int) or cfg.train_size < 0:
        raise UserError(f"task.train_size: must be >= 0, got {cfg.train_size!r}")


# ---------------------------------------------------------------- reasoning-gym


def reasoning_gym_datasets() -> dict[str, tuple[type, type]]:
    """reasoning-gym's registry: dataset name -> (dataset class, config class)."""
    import reasoning_gym  # noqa: F401  (registers the datasets)
    from reasoning_gym.factory import DATASETS

    return DATASETS


class ReasoningGymTask(Task):
    """A procedural reasoning-gym dataset, checked by its own `score_answer` (correct iff score >= 1).

    Where the scorer withholds full marks from a numeric dataset's answer, the answer is still right when
    it equals the reference by value ("7.0" for 7; `answers.as_fraction`) or, for a percentage, by
    math-verify's rule (`answers.math_match`: 50% equals 50 and 0.5), as the `math` checker judges it.

    `task.options` go to the dataset's config (e.g. {"min_terms": 2, "max_terms": 2} for basic_arithmetic).
    """

    NUMERIC = {
        "basic_arithmetic": True,
        "gsm_symbolic": True,
        "countdown": False,
        "sudoku": False,
        "mini_sudoku": False,
    }
    PROBE = 4  # items generated at build time to validate options and to learn the answer shape

    def __init__(self, dataset: str, cfg: TaskConfig, seed: int):
        super().__init__(cfg, seed)
        registry = reasoning_gym_datasets()
        if dataset not in registry:
            raise _unknown_task(cfg.name)
        self.name = dataset
        self.checker = _check_checker(cfg, CHECKERS, dataset)
        _check_sizes(cfg)
        self._config_cls = registry[dataset][1]
        self._options = self._validate_options(dict(cfg.options or {}))
        self._datasets: dict[str, Any] = {}
        self._items: dict[tuple[str, int], dict] = {}
        probe = [self._item("test", i) for i in range(self.PROBE)]
        answers = [str(item.get("answer")) for item in probe]
        self.numeric = self.NUMERIC.get(dataset, all(looks_numeric(a) for a in answers))
        self.multiline = any("\n" in a.strip() for a in answers)
        sizes = {len(a.strip().splitlines()) for a in answers}
        size = sizes.pop() if len(sizes) == 1 else 0
        # a grid puzzle (sudoku 9×9, mini_sudoku 4×4): every answer is `size` rows of `size` digits
        self.grid = size if size > 1 and all(read_grid(a, size) == a.strip() for a in answers) else None
        if all(item.get("answer") is None for item in probe):
            log.warning(
                "reasoning-gym '%s' gives no reference answers: its scorer checks answers, and few-shot "
                "examples show none",
                dataset,
            )

    def _validate_options(self, options: dict) -> dict:
        fields = {f.name: f for f in dataclasses.fields(self._config_cls)}
        for key, value in options.items():
            if key in ("seed", "size"):
                raise UserError(
                    f"task.options.{key}: set by mindgap; use task.seed, task.train_size and "
                    "task.test_size instead"
                )
            if key not in fields:
                valid = ", ".join(sorted(set(fields) - {"seed", "size"}))
                raise UserError(
                    f"task.options.{key}: reasoning-gym dataset '{self.name}' has no option "
                    f"'{key}'; its options are: {valid}"
                )
            default = fields[key].default
            if not _same_kind(value, default):
                raise UserError(
                    f"task.options.{key}: expected a value like {default!r} "
                    f"({type(default).__name__}), got {value!r}"
                )
        try:
            config = self._config_cls(**options, seed=0, size=1)
            if hasattr(config, "validate"):
                config.validate()
        except Exception as e:
            key = _blame(options, e)
            raise UserError(
                f"task.options{'.' + key if key else ''}: reasoning-gym dataset '{self.name}' rejects "
                f"the options {options}: {_why(e)}"
            ) from None
        return options

    def _capacity(self, split: str) -> int:
        """The items a split's dataset is first made with: enough to find its distinct questions under
        most options (a split that needs more draws on, from a larger dataset)."""
        return 3 * self._size(split) + 30

    def _dataset(self, split: str, size: int = 0):
        """The split's reasoning-gym dataset, holding at least `size` items (made again, twice as
        large, where it holds fewer)."""
        made = self._datasets.get(split)
        if made is None or made.size < size:
            import reasoning_gym

            self._datasets[split] = reasoning_gym.create_dataset(
                self.name,
                **self._options,
                seed=_derived_seed(self.seed, self.name, split),
                size=max(size, self._capacity(split) if made is None else 2 * made.size),
            )
        return self._datasets[split]

    def _item(self, split: str, idx: int) -> dict:
        key = (split, idx)
        if key not in self._items:
            try:
                self._items[key] = self._dataset(split, idx + 1)[idx]
            except IndexError:
                raise
            except Exception as e:
                where = f"with options {self._options}" if self._options else "with its default options"
                raise UserError(
                    f"task.options: reasoning-gym dataset '{self.name}' failed to generate problem "
                    f"{idx} of {split} {where}: {_why(e)}; change task.options"
                ) from None
        return self._items[key]

    def _load(self, split: str) -> list[Problem]:
        """The split's first `need` distinct questions that no earlier split asked, in draw order. Short
        of them, it draws on until the options' questions run out: until no new question came in the
        last `_patience` draws (or `MAX_DRAWS` in all), then refuses, saying how many there are."""
        need = self._size(split)
        earlier = self._earlier_questions(split)
        out: list[Problem] = []
        drawn: set[str] = set()  # every distinct question drawn, the earlier splits' ones too
        idx = last_new = 0
        while len(out) < need and idx - last_new < self._patience(split, len(drawn)) and idx < self.MAX_DRAWS:
            try:
                item = self._item(split, idx)
            except IndexError:
                break
            question = str(item["question"])
            if question not in drawn:
                drawn.add(question)
                last_new = idx
                if question not in earlier:
                    out.append(
                        Problem(
                            id=f"{split}-{idx}",
                            question=question,
                            answer="" if item.get("answer") is None else str(item["answer"]),
                            meta={"entry": item},
                        )
                    )
            idx += 1
        if len(out) < need:
            raise UserError(self._too_few(split, need, len(out), len(drawn | earlier), idx))
        return out

    # Draws without a new question before the options count as exhausted: with k distinct questions
    # drawn so far, 10·k more (a question as likely as the average one, p = 1/k, is then missed with
    # probability (1 - 1/k)^(10k) < e^-10), and never fewer than the split's first draws.
    PATIENCE = 10
    MAX_DRAWS = 200_000  # a generator with a long tail of rare questions stops here

    def _patience(self, split: str, distinct: int) -> int:
        return max(self._capacity(split), self.PATIENCE * distinct)

    def _too_few(self, split: str, need: int, got: int, distinct: int, draws: int) -> str:
        """The refusal: how many distinct questions the options give, and what the splits take of them."""
        where = f"reasoning-gym '{self.name}' with the options {self._options or '{}'}"
        count = f"{distinct} distinct questions" + (
            f" in {draws} draws (more may come rarely)" if draws >= self.MAX_DRAWS else ""
        )
        before = {s: self._size(s) for s in SPLITS[: SPLITS.index(split)] if self._size(s)}
        if not before:
            return (
                f"task.{split}_size: {where} has {count}, fewer than the {need} asked for; lower "
                f"task.{split}_size or widen task.options"
            )
        asked = " + ".join(f"{n} {s}" for s, n in {**before, split: need}.items())
        return (
            f"task.{split}_size: {where} has {count}, and the splits ask for {asked} = "
            f"{sum(before.values()) + need} ({split} finds {got} of its {need}); lower task.{split}_size "
            f"or {' or '.join(f'task.{s}_size' for s in before)}, or widen task.options"
        )

    def extract_answer(self, completion: str, finished: bool = True) -> str | None:
        answer = super().extract_answer(completion, finished)
        if self.grid:
            # A grid is read cell by cell and rewritten in the dataset's own layout, so its scorer (which
            # gives full marks only to that layout) judges the cells; one stated without an `Answer:`
            # line is the last grid of a finished completion.
            if answer is None:
                return last_grid(cut_continuation(completion or ""), self.grid) if finished else None
            return read_grid(answer, self.grid) or answer
        if answer is not None and self.name == "countdown":
            answer = answer.replace("×", "*").replace("÷", "/")
        if answer is not None and self.name == "countdown" and "=" in answer:
            # "3 * 5 + 2 = 17": keep the expression, the side with the most operators
            sides = [s.strip() for s in answer.split("=")]
            answer = max(sides, key=lambda s: sum(s.count(op) for op in "+-*/")) or None
        return answer

    def _check(self, answer: str, problem: Problem) -> bool:
        if self.checker in ("exact", "math", "qa"):
            return super()._check(answer, problem)
        entry = problem.meta.get("entry") or {
            "question": problem.question,
            "answer": problem.answer,
            "metadata": {},
        }
        scorer = self._dataset("test")
        variants = [answer]
        end = problem.answer.rstrip()[-1:]
        if end and end in TRAILING_PUNCTUATION and not answer.endswith(end):
            variants.append(answer + end)  # extraction strips a final period that this reference has
        for variant in variants:
            score = scorer.score_answer(variant, entry)
            if score is not None and float(score) >= 1.0 - 1e-9:
                return True
        if self.numeric and answer.endswith("%"):  # a percentage: math-verify's rule (answers.math_match)
            return math_match(answer, problem.answer)
        if self.numeric:  # "7.0" for 7 (normalized forms differ only in spelling): equal by value
            a, b = as_fraction(answer), as_fraction(problem.answer)
            return a is not None and a == b
        return False


def _same_kind(value: Any, default: Any) -> bool:
    if default is None or default is dataclasses.MISSING:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True


def _blame(options: dict, e: Exception) -> str:
    """The option key an error message is about (the first one it names), else the first given."""
    text = str(e)
    named = [k for k in options if re.search(rf"\b{re.escape(k)}\b", text)]
    if named:
        return min(named, key=lambda k: re.search(rf"\b{re.escape(k)}\b", text).start())
    return next(iter(options), "") if options else ""


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---------------------------------------------------------------- local files


class FileTask(Task):
    """Problems from a local .jsonl or .parquet file; `task.fields` maps question/answer to columns.

    Optional fields: `id` (a column of unique ids; default `row-<n>`) and `solution` (a worked solution,
    used in few-shot examples). An answer that is a list holds the gold answers, any of which is
    correct (open-domain QA); the first is the reference that prompts and verifiers show. Checking:
    `auto` compares with a gold list by SQuAD-normalised exact match (`qa`: case, punctuation, the
    articles a/an/the and spacing ignored), with a single answer by math-verify where it is a number or
    LaTeX and by exact (normalized) matching otherwise.
    """

    name = "file"
    FIELDS = ("question", "answer", "id", "solution")

    def __init__(self, cfg: TaskConfig, seed: int):
        super().__init__(cfg, seed)
        self.checker = _check_checker(cfg, ("auto", "exact", "math", "qa"), "file")
        _check_sizes(cfg)
        if not cfg.path:
            raise UserError("task.path: task 'file' needs task.path, a .jsonl or .parquet file of problems")
        self.path = Path(cfg.path).expanduser()
        self.columns = self._columns(dict(cfg.fields or {}))
        self._rows = self._read()
        if len(self._rows) < cfg.test_size:
            raise UserError(
                f"task.test_size: {cfg.path} holds only {len(self._rows)} rows, fewer than "
                f"task.test_size={cfg.test_size}; lower task.test_size"
            )
        answers = [p.answer for p in self._rows]
        self.numeric = all(looks_numeric(a) for a in answers)
        self.multiline = any("\n" in a for a in answers)

    def where(self, problem: Problem) -> str:
        return f"{self.cfg.path}: {self.unit} {problem.meta['row']}"

    def _columns(self, fields: dict) -> dict[str, str]:
        for key, col in fields.items():
            if key not in self.FIELDS:
                raise UserError(
                    f"task.fields.{key}: unknown field; map {', '.join(self.FIELDS)} to column names, "
                    "e.g. {question: problem, answer: solution}"
                )
            if not isinstance(col, str) or not col:
                raise UserError(f"task.fields.{key}: expected a column name, got {col!r}")
        return {"question": "question", "answer": "answer", **fields}

    def _read(self) -> list[Problem]:
        path, shown = self.path, self.cfg.path
        if not path.is_file():
            raise UserError(
                f"task.path: file {shown} does not exist; point task.path at a .jsonl or .parquet file"
            )
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            records = list(self._read_jsonl(path, shown))
            self.unit = unit = "line"
        elif suffix in (".parquet", ".pq"):
            import pandas as pd

            try:
                df = pd.read_parquet(path)
            except Exception as e:
                raise UserError(
                    f"task.path: cannot read {shown} as Parquet ({_why(e)}); "
                    "write it with pandas.DataFrame.to_parquet"
                ) from None
            records = [(i + 1, rec) for i, rec in enumerate(df.to_dict("records"))]
            self.unit = unit = "row"
        else:
            raise UserError(
                f"task.path: {shown} must be a .jsonl or .parquet file (got '{suffix or 'no suffix'}')"
            )
        if not records:
            raise UserError(f"task.path: {shown} holds no rows")
        problems, ids = [], {}
        for n, rec in records:
            values = {}
            for key, col in self.columns.items():
                value = rec.get(col)
                if _missing(value):
                    if key == "solution":  # optional: a row may lack a worked solution
                        continue
                    if col in rec:
                        raise UserError(
                            f"{shown}: {unit} {n} has a null '{col}' (task.fields.{key}); give it a value, "
                            "or remove the row"
                        )
                    have = ", ".join(map(str, rec)) or "none"
                    raise UserError(
                        f"{shown}: {unit} {n} has no field '{col}' (task.fields.{key}); its fields: "
                        f"{have}. Fix the row, or map task.fields.{key} to the column that holds the "
                        f"{key}"
                    )
                if key == "answer" and _is_list(value):
                    golds = [_as_text(v).strip() for v in value]
                    if not golds or not all(golds):
                        raise UserError(
                            f"{shown}: {unit} {n} has a gold-answer list '{col}' (task.fields.answer) that "
                            f"{'is empty' if not golds else 'holds an empty answer'}; give at least one "
                            "non-empty answer"
                        )
                    values["answers"] = golds
                    value = golds[0]
                values[key] = _as_text(value)
            if not values["question"].strip():
                raise UserError(
                    f"{shown}: {unit} {n} has an empty '{self.columns['question']}' "
                    f"(task.fields.question); fix or remove the row"
                )
            pid = values.get("id") or f"row-{n}"
            if pid in ids:
                raise UserError(
                    f"{shown}: {unit} {n} repeats the id '{pid}' of {unit} {ids[pid]} "
                    f"(task.fields.id: '{self.columns['id']}'); ids must be unique"
                )
            ids[pid] = n
            meta = {"row": n}
            if values.get("solution"):
                meta["solution"] = values["solution"]
            if "answers" in values:
                meta["answers"] = values["answers"]
            problems.append(
                Problem(id=pid, question=values["question"], answer=values["answer"].strip(), meta=meta)
            )
        return problems

    @staticmethod
    def _read_jsonl(path: Path, shown: str):
        with path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{shown}: line {n} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                        "save the file as UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(
                        f"{shown}: line {n} is not valid JSON ({e.msg} at column {e.colno}); "
                        "each line must hold one JSON object"
                    ) from None
                if not isinstance(rec, dict):
                    raise UserError(
                        f"{shown}: line {n} holds a {type(rec).__name__}, not a JSON object with "
                        "question and answer fields"
                    )
                yield n, rec

    def _load(self, split: str) -> list[Problem]:
        order = list(range(len(self._rows)))
        random.Random(_derived_seed(self.seed, "file")).shuffle(order)
        test = [self._rows[i] for i in order[: self.cfg.test_size]]
        if split == "test":
            return test
        asked = {p.question for p in test}
        rest, used = [], set()
        for i in order[self.cfg.test_size :]:
            question = self._rows[i].question
            if question not in asked and question not in used:
                rest.append(self._rows[i])
                used.add(question)
        train = rest[: self.cfg.train_size]
        if split == "train":
            if len(train) < self.cfg.train_size:
                log.warning(
                    "task.train_size: %s has only %d rows left for train after %d test rows (asked for %d)",
                    self.cfg.path,
                    len(train),
                    self.cfg.test_size,
                    self.cfg.train_size,
                )
            return train
        return rest[len(train) : len(train) + self._size(split)]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    import pandas as pd

    return value is pd.NA or value is pd.NaT


def _is_list(value: Any) -> bool:
    """A list of answers: a JSON array, or a Parquet list cell (numpy array)."""
    return isinstance(value, (list, tuple)) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1)


def _as_text(value: Any) -> str:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        with contextlib.suppress(Exception):
            value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------- hub datasets (online)


class HubTask(Task):
    """A dataset from the Hugging Face hub through `datasets` (needs the network or a warm cache).

    task.options: `dataset` and `config` override the hub id and its configuration.
    """

    SPECS: dict[str, dict[str, Any]] = {
        "gsm8k": {"dataset": "openai/gsm8k", "config": "main", "question": "question", "numeric": True},
        "math": {
            "dataset": "DigitalLearningGmbH/MATH-lighteval",
            "config": "default",
            "question": "problem",
            "numeric": False,
        },
    }

    def __init__(self, name: str, cfg: TaskConfig, seed: int):
        super().__init__(cfg, seed)
        self.name = name
        checker = _check_checker(cfg, CHECKERS, name)
        self.checker = "math" if checker in ("auto", "task") else checker  # their own checker is math-verify
        _check_sizes(cfg)
        spec = dict(self.SPECS[name])
        for key, value in (cfg.options or {}).items():
            if key not in ("dataset", "config"):
                raise UserError(
                    f"task.options.{key}: task '{name}' takes only the options dataset (a hub id) and config"
                )
            spec[key] = value
        self.spec = spec
        self.numeric = spec["numeric"]

    def _load(self, split: str) -> list[Problem]:
        need = self._size(split)
        if need == 0:
            return []
        rows = self._hub_split("test" if split == "test" else "train")  # shots come from the hub's train
        order = list(range(len(rows)))
        random.Random(_derived_seed(self.seed, self.name, split)).shuffle(order)
        asked = self._earlier_questions(split)
        out = []
        for i in order:
            problem = self._problem(split, i, rows[i])
            if problem is not None and problem.question not in asked:
                out.append(problem)
                if len(out) == need:
                    break
        if len(out) < need:
            log.warning(
                "task.%s_size: %s has only %d usable %s problems (asked for %d)",
                split,
                self.spec["dataset"],
                len(out),
                split,
                need,
            )
        return out

    def _hub_split(self, split: str):
        try:
            import datasets

            return datasets.load_dataset(self.spec["dataset"], self.spec["config"], split=split)
        except Exception as e:
            offline = any(
                os.environ.get(v, "0").lower() not in ("0", "", "false")
                for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
            )
            why = "HF_HUB_OFFLINE is set" if offline else _why(e)
            raise UserError(
                f"task.name: '{self.name}' loads {self.spec['dataset']} from the Hugging Face hub, which "
                f"is unreachable ({why}); use a reasoning-gym task (e.g. task.name: gsm_symbolic) or "
                "a local file (task.name: file, task.path: problems.jsonl)"
            ) from None

    def _problem(self, split: str, i: int, row: dict) -> Problem | None:
        question = str(row.get(self.spec["question"]) or "").strip()
        if self.name == "gsm8k" and self.spec["dataset"] == "openai/gsm8k":
            solution, _, final = str(row.get("answer", "")).rpartition("####")
            answer = normalize_number(final.strip()) or final.strip()
            solution = _strip_calculator(solution).strip()
        else:
            solution = str(row.get("solution") or row.get("answer") or "")
            answer = last_boxed(solution) or str(row.get("answer") or "").strip()
        if not question or not answer:
            return None
        return Problem(id=f"{split}-{i}", question=question, answer=answer, meta={"solution": solution})


def _strip_calculator(text: str) -> str:
    """GSM8K solutions carry calculator annotations like <<48/2=24>>; drop them."""
    return re.sub(r"<<[^>]*>>", "", text)


# ---------------------------------------------------------------- registry


TASKS: dict[str, Callable[[TaskConfig, int], Task]] = {
    "basic_arithmetic": partial(ReasoningGymTask, "basic_arithmetic"),
    "gsm_symbolic": partial(ReasoningGymTask, "gsm_symbolic"),
    "sudoku": partial(ReasoningGymTask, "sudoku"),
    "mini_sudoku": partial(ReasoningGymTask, "mini_sudoku"),  # 4×4
    "countdown": partial(ReasoningGymTask, "countdown"),
    "file": FileTask,
    "gsm8k": partial(HubTask, "gsm8k"),
    "math": partial(HubTask, "math"),
}


def build_task(cfg: TaskConfig, seed: int) -> Task:
    """The task `cfg.name` names; `cfg.seed`, when set, overrides `seed`."""
    seed = cfg.seed if cfg.seed is not None else seed
    name = cfg.name
    if name in TASKS:
        return TASKS[name](cfg, seed)
    if isinstance(name, str):
        dataset = name[3:] if name.startswith("rg:") else name
        if dataset in reasoning_gym_datasets():
            return ReasoningGymTask(dataset, cfg, seed)
    raise _unknown_task(name)


def _unknown_task(name: Any) -> UserError:
    known = reasoning_gym_datasets()
    bare = str(name)[3:] if str(name).startswith("rg:") else str(name)
    close = difflib.get_close_matches(bare, list(TASKS) + list(known), n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return UserError(
        f"task.name: unknown task '{name}'; valid names: {', '.join(TASKS)}, or any of reasoning-gym's "
        f"{len(known)} datasets as rg:<name> (e.g. rg:chain_sum).{hint}"
    )
