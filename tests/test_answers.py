"""The final committed answer of a completion: self-corrections, checks after an answer, and numbers
written in other ways (eval/answers.py's module docstring states the rule)."""

from __future__ import annotations

import json

import pytest

from eval.answers import extract_answer
from eval.tasks import Problem, build_task
from trainer.config import TaskConfig

NBSP, NNBSP = "\u00a0", "\u202f"


@pytest.mark.parametrize(
    "text,expected",
    [
        # a correction that states a number replaces the answer before it
        ("The answer is 12. Actually 13.", "13"),
        ("The answer is 12. Actually, the answer is 13.", "13"),
        ("Answer: 18 … wait, that is wrong, 19", "19"),
        ("Answer: 12 (sorry, 13)", "13"),
        ("18 - 3 = 15? No wait, 15 + 3 = 18", "18"),
        ("The equation 5 + 9 equals 15. I'm sorry for the error!", "15"),  # a correction without a number
        # a negated number is not the answer
        ("not 17, it is 18.", "18"),
        ("Answer: not 17, it is 18.", "18"),
        ("The answer is 18, not 17.", "18"),
        # a check after an answer re-derives it; it is not a new answer
        ("15 + 3 = 18. Check: 18 - 3 = 15.", "18"),
        ("Answer: 18. Check: 18 - 3 = 15", "18"),
        ("The sum is 18. Let me verify: 18 - 3 = 15.", "18"),
        ("3 + 4 = 7. Let me double-check: 7 - 4 = 3. Correct!", "7"),
        # ... but "check" before any result is work towards one
        ("What is 15 + 3? Let me check: 15 + 3 = 18", "18"),
        ("To calculate 79 + 84, let's check: 79 + 84 = 163", "163"),
        # what follows an Answer line changes it only as a new Answer line
        ("Answer: 12\nActually it is 13.", "12"),
        ("Answer: 3\nwait, no.\nAnswer: 5", "5"),
        # digit groups: no-break, narrow no-break and thin spaces join; a plain space does not
        (f"18{NBSP}000", "18000"),
        (f"Answer: 18{NBSP}000", "18000"),
        (f"Answer: 1{NNBSP}234{NNBSP}567", "1234567"),
        ("Answer: 1\u2009234", "1234"),
        ("Answer: 18 000", "18"),
        # scientific notation
        ("1.8e1", "18"),
        ("Answer: 3.14e-2", "0.0314"),
        ("Answer: 1e999999999", None),  # not a number anyone wrote as an answer (nor a billion digits)
        # a comma before 1, 2 or 4+ digits is a decimal comma; before exactly 3 a thousands separator
        ("18,5", "18.5"),
        ("Answer: 18,50 dollars", "18.5"),
        ("Answer: 18,500", "18500"),
        ("Answer: 1,234,567.5", "1234567.5"),
        ("1,2,3", "3"),  # a list, not a decimal
        ("x = 3, y = -4.0", "-4"),
        # a percentage keeps its sign (the checker judges it)
        ("Answer: 50%", "50%"),
        ("Answer: 50 percent", "50%"),
        ("Answer: 12.5\\%", "12.5%"),
        ("So 44 + 55 = 20 = 20%", "20%"),
    ],
)
def test_the_final_committed_answer(text, expected):
    assert extract_answer(text, numeric=True) == expected


def test_a_text_answer_is_cut_before_a_check_and_never_corrected():
    assert extract_answer("Answer: Paris. Check: it is the capital of France.") == "Paris"
    assert extract_answer("Answer: 3 * 5 + 2. Check: 15 + 2 = 17") == "3 * 5 + 2"
    # a correction of a text answer is not recognised: the line is judged whole (and matches nothing)
    assert extract_answer("Answer: Paris. Actually, Lyon.") == "Paris. Actually, Lyon"


@pytest.fixture(scope="module")
def arithmetic():
    options = {"min_digits": 2, "max_digits": 2}
    return build_task(TaskConfig(name="basic_arithmetic", train_size=2, test_size=2, options=options), seed=0)


def rg_problem(answer: str) -> Problem:
    return Problem("x", "q", answer, meta={"entry": {"question": "q", "answer": answer, "metadata": {}}})


@pytest.mark.parametrize(
    "text,gold,right",
    [
        ("Answer: 18 … wait, that is wrong, 19", "18", False),
        ("Answer: 18. Check: 18 - 3 = 15", "18", True),
        ("15 + 3 = 18. Check: 18 - 3 = 15.", "18", True),
        ("The answer is 17. Actually 18.", "18", True),
        ("1.8e1", "18", True),
        (f"Answer: 18{NBSP}000", "18000", True),
        ("Answer: 50%", "50", True),  # math-verify reads X% as X against an integer reference
        ("Answer: 50%", "51", False),
    ],
)
def test_reasoning_gym_checks_the_committed_answer(arithmetic, text, gold, right):
    assert arithmetic.check(arithmetic.extract_answer(text), rg_problem(gold)) is right


@pytest.mark.parametrize("numeric", [True, False])
def test_file_task_percentages_by_math_verify(tmp_path, numeric):
    rows = [
        {"question": "What share is one half?", "answer": "0.5"},
        {"question": "18 + 0.5?", "answer": "18.5"},
        {"question": "2 + 2?", "answer": "4"},
    ]
    if not numeric:
        rows.append({"question": "Capital of France?", "answer": "Paris"})
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build_task(TaskConfig(name="file", path=str(path), test_size=1, train_size=1), seed=0)
    assert task.numeric is numeric
    half, eighteen = (next(p for p in task._rows if p.answer == a) for a in ("0.5", "18.5"))
    # math-verify reads 50% as 0.5 against a decimal reference
    assert task.check(task.extract_answer("Answer: 50%"), half)
    assert task.check(task.extract_answer("Answer: 50 percent"), half)
    assert not task.check(task.extract_answer("Answer: 50"), half)
    assert not task.check(task.extract_answer("Answer: 5%"), half)
    assert task.check(task.extract_answer("Answer: 18,5"), eighteen)
