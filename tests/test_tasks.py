"""The task layer: registry, splits, answer extraction, checking, file tasks and prompts (real reasoning-gym
and math-verify; the prompt tests use SmolLM2's real tokenizer)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from eval.answers import (
    extract_answer,
    last_boxed,
    last_grid,
    last_number,
    qa_match,
    read_grid,
    squad_normalize,
)
from eval.prompts import build_prompt, resolve_prompt_style
from eval.tasks import TASKS, Problem, build_task
from trainer.config import TaskConfig

ARITH = {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}
RG_TASKS = {  # name -> options that keep generation fast
    "basic_arithmetic": ARITH,
    "gsm_symbolic": {},
    "sudoku": {"min_empty": 20, "max_empty": 30},
    "countdown": {"min_numbers": 3, "max_numbers": 4},
    "rg:chain_sum": {},
}


def task_of(name="basic_arithmetic", seed=0, **kw):
    kw.setdefault("train_size", 12)
    kw.setdefault("test_size", 6)
    if name in RG_TASKS:
        kw.setdefault("options", RG_TASKS[name])
    return build_task(TaskConfig(name=name, **kw), seed=seed)


# ---------------------------------------------------------------- registry


def test_registry_names():
    for name in ("basic_arithmetic", "gsm_symbolic", "sudoku", "countdown", "file", "gsm8k", "math"):
        assert name in TASKS


def test_unknown_task_names_the_key_and_valid_names():
    with pytest.raises(UserError) as e:
        task_of("basic_arithmetik")
    msg = str(e.value)
    assert "task.name" in msg and "basic_arithmetik" in msg
    assert "basic_arithmetic" in msg and "file" in msg and "rg:<name>" in msg
    with pytest.raises(UserError, match="task.name"):
        task_of("rg:no_such_dataset")


def test_any_reasoning_gym_dataset_by_prefix_or_bare_name():
    a, b = task_of("rg:chain_sum"), task_of("chain_sum", options={})
    assert a.name == b.name == "chain_sum"
    assert [p.question for p in a.problems("test")] == [p.question for p in b.problems("test")]


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("name", ["basic_arithmetic", "countdown"])
def test_splits_are_deterministic_and_disjoint(name):
    a, b = task_of(name, seed=3), task_of(name, seed=3)
    for split in ("train", "test", "shots"):
        pa, pb = a.problems(split), b.problems(split)
        assert [(p.id, p.question, p.answer) for p in pa] == [(p.id, p.question, p.answer) for p in pb]
    train, test, shots = a.problems("train"), a.problems("test"), a.problems("shots")
    assert len(train) == 12 and len(test) == 6 and len(shots) == 8
    # worked examples are never problems that get sampled or verified
    assert not {p.question for p in train} & {p.question for p in test}
    assert not {p.question for p in shots} & {p.question for p in train + test}
    assert len({p.id for p in train + test + shots}) == 26
    other = task_of(name, seed=4)
    assert [p.question for p in other.problems("test")] != [p.question for p in test]


def test_config_seed_overrides_the_study_seed():
    a = task_of(seed=0)
    pinned = build_task(TaskConfig(name="basic_arithmetic", options=ARITH, test_size=6, seed=7), seed=0)
    same = build_task(TaskConfig(name="basic_arithmetic", options=ARITH, test_size=6, seed=7), seed=99)
    study7 = build_task(TaskConfig(name="basic_arithmetic", options=ARITH, test_size=6), seed=7)
    qs = [p.question for p in pinned.problems("test")]
    assert qs == [p.question for p in same.problems("test")] == [p.question for p in study7.problems("test")]
    assert qs != [p.question for p in a.problems("test")]


def test_test_split_does_not_depend_on_train_size():
    small, big = task_of(train_size=2), task_of(train_size=40)
    assert [p.question for p in small.problems("test")] == [p.question for p in big.problems("test")]
    assert [p.question for p in big.problems("train")][:2] == [p.question for p in small.problems("train")]


def test_bad_split_name():
    with pytest.raises(ValueError):
        task_of().problems("validation")


# ---------------------------------------------------------------- reasoning-gym checking


@pytest.mark.parametrize("name", list(RG_TASKS))
def test_reference_answers_are_correct_and_wrong_ones_are_not(name):
    task = task_of(name, train_size=2, test_size=3)
    for p in task.problems("test"):
        assert task.check(p.answer, p), (name, p.answer)
        completion = f"Let me think.\n{task.reference_completion(p)}"
        assert task.extract_answer(completion) == p.answer
        assert task.check(task.extract_answer(completion), p)
        assert not task.check(None, p)
        assert not task.check("", p)
        wrong = (
            "1 2 3" if task.multiline else ("1 + 1" if name == "countdown" else str(int(float(p.answer)) + 1))
        )
        assert not task.check(wrong, p)
    assert "Answer:" in task.format_instruction()


def test_reasoning_gym_checker_variants():
    p = task_of().problems("test")[0]
    for checker in ("auto", "task", "exact", "math"):
        task = task_of(checker=checker)
        assert task.check(p.answer, p) and not task.check(p.answer + "1", p)
    # a number spelled differently is the same number
    assert task_of().check(p.answer + ".0", p)


def test_gsm_symbolic_negative_and_comma_numbers():
    task = task_of("gsm_symbolic")
    p = Problem("x", "q", "-1234", meta={"entry": {"question": "q", "answer": "-1234", "metadata": {}}})
    assert task.check(task.extract_answer("So the total is... Answer: -1,234 dollars."), p)


def test_countdown_extraction_drops_the_target():
    task = task_of("countdown")
    p = task.problems("test")[0]
    target = p.meta["entry"]["metadata"]["target"]
    assert task.check(task.extract_answer(f"Answer: {p.answer} = {target}"), p)


def test_bad_options_name_the_option():
    with pytest.raises(UserError, match=r"task\.options\.max_termz.*min_terms"):
        task_of(options={"max_termz": 3})
    with pytest.raises(UserError, match=r"task\.options\.min_terms"):
        task_of(options={"min_terms": 0})
    with pytest.raises(UserError, match=r"task\.options\.max_digits"):
        task_of(options={"min_digits": 3, "max_digits": 2})
    with pytest.raises(UserError, match=r"task\.options\.min_terms: expected"):
        task_of(options={"min_terms": "two"})
    with pytest.raises(UserError, match=r"task\.options\.seed.*task\.seed"):
        task_of(options={"seed": 1})


def test_too_narrow_options_say_so():
    narrow = {
        "min_terms": 2,
        "max_terms": 2,
        "min_digits": 1,
        "max_digits": 1,
        "operators": ["+"],
        "allow_parentheses": False,
    }
    with pytest.raises(UserError, match=r"task\.test_size.*distinct"):
        task_of(options=narrow, test_size=500, train_size=0).problems("test")


def test_nearly_all_of_a_small_tasks_problems_can_be_asked_for():
    """1-digit additions have few distinct questions (11 × 11 with reasoning-gym's digits 0-10): splits
    that take nearly all of them load, disjoint; asking for more than there are says how many there are."""
    import reasoning_gym

    one_digit = {
        "min_terms": 2,
        "max_terms": 2,
        "min_digits": 1,
        "max_digits": 1,
        "operators": ["+"],
        "allow_negation": False,
        "allow_parentheses": False,
    }
    task = task_of(options=one_digit, test_size=64, train_size=32)
    splits = {s: task.problems(s) for s in ("test", "train", "shots")}
    assert {s: len(p) for s, p in splits.items()} == {"test": 64, "train": 32, "shots": 8}
    questions = [p.question for s in splits.values() for p in s]
    assert len(set(questions)) == len(questions)
    many = reasoning_gym.create_dataset("basic_arithmetic", **one_digit, seed=1, size=5000)
    distinct = len({many[i]["question"] for i in range(5000)})
    with pytest.raises(
        UserError, match=rf"task\.train_size: .* has {distinct} distinct questions.*100 test \+ 32 train"
    ):
        task_of(options=one_digit, test_size=100, train_size=32).problems("train")
    with pytest.raises(
        UserError, match=rf"task\.test_size: .* has {distinct} distinct questions, fewer than the 500"
    ):
        task_of(options=one_digit, test_size=500, train_size=0).problems("test")


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text,numeric,expected",
    [
        ("I am not sure what to do here.", True, None),
        ("I am not sure what to do here.", False, None),
        ("", False, None),
        (None, True, None),
        ("\x00\ufffd}{\\boxed{", True, None),
        ("So we get \\boxed{\\frac{a}{b+\\sqrt{2}}} in the end.", False, "\\frac{a}{b+\\sqrt{2}}"),
        ("Answer: 3\nwait, no.\nAnswer: 5", True, "5"),
        ("Answer: 12.", False, "12"),
        ("The answer is 1,234,567.", True, "1234567"),
        ("They paid $1,250.50 in total, so 1,250.50", True, "1250.5"),
        ("**Answer:** $42$.", True, "42"),
        ("<answer> 17 </answer>", True, "17"),
        ("Answer: 3 + 4 = 7", True, "7"),
        ("Answer: 9 apples", True, "9"),
        ("3 + 4 = 7, then 7 * 2 = 14", True, "14"),
        ("3 + 4 = 7, then 7 * 2 = 14", False, None),
        ("Answer: 7\n\nQuestion: What is 2 + 2?\nAnswer: 4", True, "7"),
        ("Answer:\n  8", True, "8"),
        ("Answer: \\frac{3}{4}", True, "3/4"),
        ("The final answer is $\\boxed{-2}$. I hope it is correct.", True, "-2"),
        ("Answer: −5", True, "-5"),
    ],
)
def test_extraction_edge_cases(text, numeric, expected):
    assert extract_answer(text, numeric=numeric) == expected


def test_a_truncated_completion_gives_no_last_number_answer():
    ramble = "Let me add 3 and 4. First 3, then 4 more makes 7, and then we carry the"
    assert extract_answer(ramble, numeric=True) == "7"  # finished: the last number is the answer
    assert extract_answer(ramble, numeric=True, finished=False) is None  # cut off: it never said one
    assert (
        extract_answer("So 3 + 4 = 7.\nAnswer: 7\nNow let us check it ag", numeric=True, finished=False)
        == "7"
    )


def test_extraction_multiline_block():
    grid = "1 2\n3 4"
    assert extract_answer(f"Here it is.\nAnswer:\n{grid}\n\nDone.", multiline=True) == grid
    assert extract_answer(f"<answer>\n{grid}\n</answer>", multiline=True) == grid


def test_boxed_and_number_helpers():
    assert last_boxed("\\boxed{1} and \\boxed{{2}+{3}}") == "{2}+{3}"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_number("no digits") is None
    assert last_number("x = 3, y = -4.0") == "-4"


def test_extract_never_raises_on_odd_input():
    task = task_of()
    p = task.problems("test")[0]
    for odd in [
        None,
        12,
        b"Answer: 3",
        "Answer:",
        "<answer></answer>",
        "\\boxed{}",
        "}" * 1000,
        "A" * 100_000,
    ]:
        answer = task.extract_answer(odd)  # type: ignore[arg-type]
        assert answer is None or isinstance(answer, str)
        assert task.check(answer, p) in (True, False)


# ---------------------------------------------------------------- file tasks


ROWS = [
    {"q": "What is one half as a decimal?", "a": "\\frac{1}{2}", "uid": "h"},
    {"q": "2 + 2?", "a": "4", "uid": "f"},
    {"q": "Capital of France?", "a": "Paris", "uid": "p"},
    {"q": "1000 + 234?", "a": "1234", "uid": "t"},
    {"q": "3 / 4?", "a": "0.75", "uid": "q"},
    {"q": "10 * 10?", "a": "100", "uid": "c"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def file_task(path, **kw):
    kw.setdefault("fields", {"question": "q", "answer": "a"})
    kw.setdefault("test_size", 2)
    kw.setdefault("train_size", 3)
    return build_task(TaskConfig(name="file", path=str(path), **kw), seed=kw.pop("seed", 0))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_file_task_splits_and_checks(tmp_path, fmt):
    path = tmp_path / f"problems.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    else:
        pd.DataFrame(ROWS).to_parquet(path)
    task = file_task(path, fields={"question": "q", "answer": "a", "id": "uid"}, shots_size=1)
    test, train, shots = task.problems("test"), task.problems("train"), task.problems("shots")
    assert len(test) == 2 and len(train) == 3 and len(shots) == 1
    assert len({p.id for p in test + train + shots}) == 6
    assert {p.id for p in test + train} <= {r["uid"] for r in ROWS}
    again = file_task(path, fields={"question": "q", "answer": "a", "id": "uid"})
    assert [p.id for p in again.problems("test")] == [p.id for p in test]
    by_q = {p.question: p for p in task._rows}  # all rows, whichever split they fell in
    half = by_q["What is one half as a decimal?"]
    assert task.check(task.extract_answer("Answer: 0.5"), half)
    assert task.check(task.extract_answer("so it is \\boxed{\\dfrac{1}{2}}"), half)
    assert not task.check(task.extract_answer("Answer: 0.6"), half)
    assert task.check(task.extract_answer("Answer: 1,234."), by_q["1000 + 234?"])
    assert task.check(task.extract_answer("Answer: paris"), by_q["Capital of France?"])
    assert not task.check(task.extract_answer("Answer: Sirap"), by_q["Capital of France?"])
    assert not task.check(task.extract_answer("I don't know"), by_q["2 + 2?"])


def test_file_task_default_fields_and_ids(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": r["q"], "answer": r["a"]} for r in ROWS])
    task = file_task(path, fields={}, test_size=6, train_size=0)
    assert sorted(p.id for p in task.problems("test")) == sorted(f"row-{i}" for i in range(1, 7))
    assert task.problems("train") == []


def test_file_task_bad_row_names_file_row_and_field(tmp_path):
    rows = [{"q": "1 + 1?", "a": "2"}, {"q": "2 + 2?", "a": "4"}, {"q": "3 + 3?", "answer": "6"}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError) as e:
        file_task(path)
    msg = str(e.value)
    assert "bad.jsonl" in msg and "line 3" in msg and "'a'" in msg and "task.fields.answer" in msg
    pq = tmp_path / "bad.parquet"
    pd.DataFrame([{"q": "1 + 1?", "a": "2"}, {"q": "2 + 2?", "a": None}]).to_parquet(pq)
    with pytest.raises(UserError, match=r"bad\.parquet: row 2 .*'a'"):
        file_task(pq)


def test_file_task_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"task\.path.*missing\.jsonl"):
        file_task(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match=r"task\.path"):
        build_task(TaskConfig(name="file"), seed=0)
    csv = tmp_path / "p.csv"
    csv.write_text("q,a\n1,2\n")
    with pytest.raises(UserError, match=r"\.jsonl or \.parquet"):
        file_task(csv)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"q": "1", "a": "1"}\n{"q": oops}\n')
    with pytest.raises(UserError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        file_task(broken)
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(UserError, match=r"task\.fields\.prompt"):
        file_task(path, fields={"prompt": "q"})
    with pytest.raises(UserError, match=r"task\.test_size"):
        file_task(path, test_size=10)
    with pytest.raises(UserError, match=r"task\.checker"):
        file_task(path, checker="task")


def test_file_task_bad_bytes_null_answers_and_keys_a_task_does_not_read(tmp_path):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b'{"q": "1 + 1?", "a": "2"}\n{"q": "caf\xe9?", "a": "3"}\n')
    with pytest.raises(
        UserError, match=r"latin1\.jsonl: line 2 is not UTF-8 \(byte 0xe9 at column 11\); save"
    ):
        file_task(latin)
    nulls = write_jsonl(tmp_path / "nulls.jsonl", [{"q": "1 + 1?", "a": "2"}, {"q": "2 + 2?", "a": None}])
    with pytest.raises(
        UserError, match=r"nulls\.jsonl: line 2 has a null 'a' \(task\.fields\.answer\); give it"
    ):
        file_task(nulls)
    from trainer.config import GapConfig, load_config

    with pytest.raises(
        UserError, match=r"^task\.path: task 'basic_arithmetic' reads no file .*set task\.name: file$"
    ):
        load_config(GapConfig, ["--task.path", str(nulls)])
    with pytest.raises(UserError, match=r"^task\.fields: task 'countdown' reads no file"):
        load_config(GapConfig, ["--task.name", "countdown", "--task.fields", "{question: q}"])


# ---------------------------------------------------------------- open-domain QA: lists of gold answers


@pytest.mark.parametrize(
    "pred, golds, expected",
    [
        ("Paris", ["Paris"], True),
        ("paris.", ["Paris"], True),  # case and punctuation
        ("The Pacific Ocean", ["Pacific Ocean", "Pacific"], True),  # the article
        ("  the   pacific  ", ["Pacific"], True),  # spacing
        ("An apple", ["apple"], True),
        ("Mt. Everest", ["Mt Everest"], True),
        ("U.S.A.", ["USA"], True),  # punctuation is deleted, not spaced (SQuAD)
        ("Côte d’Ivoire", ["Côte d'Ivoire"], True),  # a curly apostrophe is punctuation too
        ("rock-and-roll", ["rock and roll"], False),  # ... so a hyphen joins what it separates
        ("Theodore", ["the odore"], False),  # "the" only as a whole word
        ("Pacific Ocean", ["Atlantic", "Pacific"], False),  # exact: no partial credit
        ("the", ["The"], False),  # nothing left after normalising matches nothing
        (".", ["", "."], False),
        ("", ["Paris"], False),
        (None, ["Paris"], False),
        ("Leonardo", ["Leonardo da Vinci", "da Vinci", "Leonardo"], True),  # any of the list
        ("8", ["8", "eight"], True),
        ("eight", ["8", "eight"], True),
        ("8.0", ["8"], False),  # exact match, not numeric equality
    ],
)
def test_qa_match_squad_normalisation(pred, golds, expected):
    assert qa_match(pred, golds) is expected


def test_squad_normalize():
    assert squad_normalize("The  Quick, Brown   FOX!") == "quick brown fox"
    assert squad_normalize("a an the") == ""
    assert squad_normalize("Straße") == "strasse"  # casefold


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_file_task_gold_answer_lists(tmp_path, fmt):
    rows = [
        {"q": "Largest ocean?", "a": ["Pacific Ocean", "Pacific"]},
        {"q": "Legs of a spider?", "a": ["8", "eight"]},
        {"q": "Capital of Italy?", "a": "Rome"},  # a single answer beside lists
        {"q": "Symbol of gold?", "a": ["Au"]},
    ]
    path = tmp_path / f"qa.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows)
    else:
        pd.DataFrame(rows[:2] + [{**rows[2], "a": ["Rome"]}] + rows[3:]).to_parquet(
            path
        )  # one type per column
    task = file_task(path, test_size=4, train_size=0)
    by_q = {p.question: p for p in task.problems("test")}
    ocean = by_q["Largest ocean?"]
    assert ocean.answer == "Pacific Ocean" and ocean.meta["answers"] == ["Pacific Ocean", "Pacific"]
    assert task.check(task.extract_answer("Answer: the Pacific."), ocean)
    assert task.check(task.extract_answer("Answer: PACIFIC OCEAN"), ocean)
    assert not task.check(task.extract_answer("Answer: Atlantic"), ocean)
    spider = by_q["Legs of a spider?"]
    assert task.check(task.extract_answer("Answer: Eight"), spider) and task.check("8", spider)
    assert not task.numeric  # the first golds are words and numbers alike: answers stay text
    assert task.check(task.extract_answer("Answer: rome"), by_q["Capital of Italy?"])
    assert task.check("au", by_q["Symbol of gold?"]) and not task.check("Ag", by_q["Symbol of gold?"])
    # the checker can be chosen: exact (no article stripping) against any gold, or qa for single answers
    exact = file_task(path, test_size=4, train_size=0, checker="exact")
    ocean = {p.question: p for p in exact.problems("test")}["Largest ocean?"]
    assert exact.check("pacific", ocean) and not exact.check("the Pacific", ocean)
    single = write_jsonl(tmp_path / "single.jsonl", [{"q": "Largest ocean?", "a": "Pacific"}])
    qa = file_task(single, test_size=1, train_size=0, checker="qa")
    assert qa.check("The Pacific!", qa.problems("test")[0])
    assert not file_task(single, test_size=1, train_size=0).check("The Pacific!", qa.problems("test")[0])


def test_file_task_empty_gold_lists_are_user_errors(tmp_path):
    for golds, why in (([], "is empty"), (["Paris", " "], "holds an empty answer")):
        path = write_jsonl(
            tmp_path / "qa.jsonl", [{"q": "Capital of France?", "a": ["Paris"]}, {"q": "x?", "a": golds}]
        )
        with pytest.raises(UserError, match=rf"qa\.jsonl: line 2 has a gold-answer list 'a' .* {why}"):
            file_task(path, test_size=1, train_size=0)


def test_shipped_open_qa_file():
    """recipes/data/open_qa.jsonl as gap_open_qa.yaml reads it: 60 distinct questions, each gold list
    non-empty and matching itself, and every split the config asks for."""
    from trainer.config import GapConfig, load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(GapConfig, ["--config", str(root / "recipes/configs/gap_open_qa.yaml")])
    cfg.task.path = str(root / cfg.task.path)
    task = build_task(cfg.task, seed=cfg.seed)
    problems = task.problems("test") + task.problems("train") + task.problems("shots")
    assert len(problems) == len(task._rows) == 60 and len({p.question for p in problems}) == 60
    for p in problems:
        assert p.meta["answers"] and p.answer == p.meta["answers"][0]
        assert all(task.check(task.extract_answer(f"Answer: {g}"), p) for g in p.meta["answers"]), p


# ---------------------------------------------------------------- grid answers (sudoku)


@pytest.mark.parametrize(
    "name, options", [("mini_sudoku", {"min_empty": 4, "max_empty": 8}), ("sudoku", RG_TASKS["sudoku"])]
)
def test_grid_answers_on_real_reasoning_gym_items(name, options):
    task = build_task(TaskConfig(name=name, test_size=3, train_size=0, options=options), seed=0)
    size = 4 if name == "mini_sudoku" else 9
    assert task.grid == size and task.multiline
    scorer = task._dataset("test")
    for p in task.problems("test"):
        grid = p.answer
        rows = grid.splitlines()
        assert len(rows) == size and scorer.score_answer(grid, p.meta["entry"]) == 1.0
        compact = "\n".join(r.replace(" ", "") for r in rows)
        barred = "\n".join(" | ".join(r.split()) for r in rows)
        half = size // 2
        blocks = "\n".join(rows[:half]) + "\n" + "-" * (2 * size) + "\n" + "\n".join(rows[half:])
        for layout in (grid, compact, barred, blocks):
            # reasoning-gym's scorer gives such layouts 0.9 of full marks; read cell by cell, they are right
            answer = task.extract_answer(f"Let me fill it in.\nAnswer:\n{layout}\n\nDone.")
            assert answer == grid and task.check(answer, p), layout
        assert task.check(task.extract_answer(f"**Answer:**\n```\n{grid}\n```"), p)
        # without an Answer: line, the last grid of a finished completion
        assert task.extract_answer(f"Thinking...\n{compact}\nThat is my solution.") == grid
        assert task.extract_answer(f"Thinking...\n{compact}", finished=False) is None
        # one wrong cell, an empty cell, a missing row: wrong
        wrong = grid.replace(grid[0], str(int(grid[0]) % size + 1), 1)
        assert not task.check(task.extract_answer(f"Answer:\n{wrong}"), p)
        holed = "_" + grid[1:]
        assert not task.check(task.extract_answer(f"Answer:\n{holed}"), p)
        assert not task.check(task.extract_answer("Answer:\n" + "\n".join(rows[:-1])), p)
    # a grid the model restates with empty cells before solving is no answer; the solved one after it is
    p = task.problems("test")[0]
    puzzle = "\n".join(
        " ".join("_" if i == 0 else c for i, c in enumerate(r.split())) for r in p.answer.splitlines()
    )
    assert task.extract_answer(f"The puzzle:\n{puzzle}\nSolved:\n{p.answer}") == p.answer
    assert task.extract_answer(f"The puzzle:\n{puzzle}") is None


def test_read_grid_and_last_grid():
    g = "1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1"
    assert read_grid("1,2,3,4\n3,4,1,2\n2,1,4,3\n4,3,2,1", 4) == g
    assert read_grid("[1, 2, 3, 4]\n[3, 4, 1, 2]\n[2, 1, 4, 3]\n[4, 3, 2, 1]", 4) == g
    assert read_grid("Row 1: 1 2 3 4\n3 4 1 2\n2 1 4 3\n4 3 2 1", 4) is None  # words among the rows
    assert read_grid(g + "\n1 2 3 4", 4) is None and read_grid("", 4) is None
    assert last_grid(f"first try:\n{g.replace('1', '2')}\nfixed:\n{g}\n", 4) == g
    assert last_grid("1 2 3 4\n3 4 1 2\n2 1 4 3", 4) is None
    assert build_task(TaskConfig(name="countdown", test_size=1, train_size=0), seed=0).grid is None


# ---------------------------------------------------------------- hub tasks


def test_hub_task_offline_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    task = build_task(TaskConfig(name="gsm8k", test_size=2, train_size=2), seed=0)
    try:
        task.problems("test")
    except UserError as e:
        msg = str(e)
        assert "hub" in msg and "unreachable" in msg and "gsm_symbolic" in msg and "file" in msg
    else:  # pragma: no cover - only where GSM8K sits in the local datasets cache
        pytest.skip("gsm8k is cached locally")


# ---------------------------------------------------------------- prompts


@pytest.fixture(scope="module")
def chat_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def base_tokenizer(chat_tokenizer):
    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = None
    return tok


def test_resolve_prompt_style(chat_tokenizer, base_tokenizer):
    assert resolve_prompt_style("auto", chat_tokenizer) == "chat"
    assert resolve_prompt_style("auto", base_tokenizer) == "fewshot"
    assert resolve_prompt_style("fewshot", chat_tokenizer) == "fewshot"
    with pytest.raises(UserError, match=r"task\.prompt_style.*fewshot"):
        resolve_prompt_style("chat", base_tokenizer)
    with pytest.raises(UserError, match=r"task\.prompt_style"):
        resolve_prompt_style("zero-shot", chat_tokenizer)


def test_chat_prompt(chat_tokenizer):
    task = task_of()
    p = task.problems("test")[0]
    prompt = build_prompt(task, p, chat_tokenizer, "auto", n_shots=4, shots=task.problems("train"))
    assert p.question in prompt and task.format_instruction() in prompt
    assert prompt.rstrip().endswith("<|im_start|>assistant")
    assert "<|im_start|>user" in prompt
    assert task.problems("train")[0].question not in prompt  # chat prompts are zero-shot


def test_fewshot_prompt(base_tokenizer):
    task = task_of()
    p, train = task.problems("test")[0], task.problems("train")
    prompt = build_prompt(task, p, base_tokenizer, "auto", n_shots=4, shots=[p, *train])
    assert prompt.startswith(task.format_instruction() + "\n\nQuestion: ")
    assert prompt.endswith(f"Question: {p.question}\n")
    assert prompt.count("Question: ") == 5 and prompt.count("Answer: ") == 4 + 1  # + the instruction's
    for shot in train[:4]:
        assert f"Question: {shot.question}\nAnswer: {shot.answer}\n\n" in prompt
    assert train[4].question not in prompt
    zero = build_prompt(task, p, None, "fewshot", n_shots=0, shots=train)
    assert zero == f"{task.format_instruction()}\n\nQuestion: {p.question}\n"
    # what a base model writes next is read back by the extractor
    completion = f"Answer: {p.answer}\n\nQuestion: {train[0].question}\nAnswer: {train[0].answer}"
    assert task.check(task.extract_answer(completion), p)


def test_fewshot_prompt_multiline_answers():
    task = task_of("sudoku", train_size=1, test_size=1)
    p, shot = task.problems("test")[0], task.problems("train")[0]
    prompt = build_prompt(task, p, None, "fewshot", n_shots=1, shots=[shot])
    assert f"\nAnswer:\n{shot.answer}\n\nQuestion: " in prompt
    assert task.check(task.extract_answer(f"Answer:\n{p.answer}\n\nQuestion: next"), p)
