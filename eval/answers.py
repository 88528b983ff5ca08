"""Final answers: pull one out of a completion, and compare it with a reference.

Prompts ask for the final answer on a last line `Answer: <answer>` (see `ANSWER_PREFIX`). Completions
of small models are messy, so `extract_answer` tries, in order:

1. the last `Answer: ...` (also `Final answer:`, `**Answer:**`); a multi-line answer (a sudoku grid)
   may start on the next line and runs to the next blank line;
2. the last `<answer>...</answer>` (or an unclosed `<answer>` at the end of the text);
3. the last `\\boxed{...}` (nested braces);
4. the last prose `the answer is ...`;
5. for numeric tasks, the last number in the text.

A few-shot continuation (the model starting a new `Question:` after answering) is cut off first.
Nothing here raises on odd input: no answer is `None`, and `None` is never correct.

The answer is the final committed one (`committed`). The text an answer is read from (what follows
the marker of rules 1–4 on its line, or the whole text for rule 5) is read as clauses, each starting at
the start of a sentence or after a comma, colon or bracket:

- a check (`Check:`, `Verify`, `Verification:`, `Let's check`, `Double-check`, `Proof:`) re-derives an
  answer already given; it is not a new answer: "15 + 3 = 18. Check: 18 - 3 = 15." → 18;
- a correction (`Actually`, `Wait`, `Oops`, `Sorry`, `Correction:`, `I mean`, `No,`, `that is wrong`,
  `I made a mistake`) that states a number replaces the answer before it: "The answer is 12. Actually
  13." → 13; "Answer: 18 … wait, that is wrong, 19" → 19;
- a negated number is not the answer: "not 17, it is 18." → 18 (`not`, `n't` just before it).

For a numeric task the answer is the last clause that is not a check and states a (non-negated)
number, read as before (after its last `=`, the first number; rule 5: the last number); a text answer
is only cut before a check that follows it (a correction of a text answer is not recognised: the answer
line is judged whole). A correction or check on a later line than the `Answer:` line does not change
it (only a new `Answer:` line does): what follows an answer line is often an explanation whose numbers
are not answers.

Numbers (`normalize_number`): thousands commas (`1,234`) and no-break, narrow no-break or thin spaces
between digit groups (`18 000` written with U+00A0) are dropped; a comma followed by one, two, or four
or more digits is a decimal comma (`18,5` → 18.5; `18,500` is eighteen thousand five hundred, as a
comma followed by exactly three digits is read as a thousands separator); scientific notation is a
number (`1.8e1` → 18); a percent sign stays on the number (`50 %`, `50 percent` → `50%`), and the
checkers judge it by math-verify's rule (`math_match`): X% equals X/100 against a decimal reference
(50% = 0.5) and X against an integer one (50% = 50). A plain space between digit groups is not a
separator (`18 000` with an ordinary space reads as two numbers).
"""

from __future__ import annotations

import re
import string
import textwrap
import threading
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

ANSWER_PREFIX = "Answer:"

_CONTINUATION = re.compile(r"\n[ \t]*(?:#+\s*)?Question\s*:", re.IGNORECASE)
_ANSWER_LINE = re.compile(
    r"(?:\*\*|__)?\b(?:final\s+)?answer\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?", re.IGNORECASE
)
_ANSWER_PROSE = re.compile(r"\banswer\s+(?:is|would\s+be|=)\s*[:：]?\s*", re.IGNORECASE)
_TAG_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_TAG_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A number as written: thousands commas (1,234.5), a decimal comma (18,5: a comma and other than three
# digits, not in a list like 1,2,3), a plain decimal with an optional exponent (1.8e1), a fraction (3/4).
_NUMBER_BODY = (
    r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])"
    r"|(?<!\d,)\d+,(?:\d{1,2}|\d{4,})(?!\d|,\d)"
    r"|(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d{1,3})?(?:/\d+)?"  # an exponent of at most 3 digits
)
_NUMBER = re.compile(rf"(?<![\w.])[-+]?(?:{_NUMBER_BODY})(?![\w])")
_NUMBER_FULL = re.compile(rf"[-+]?(?:{_NUMBER_BODY})")
_PERCENT = re.compile(r"\s*(?:\\?%|percent\b)", re.IGNORECASE)
_NEGATED = re.compile(r"(?:\bnot|n['’]t)\s+(?:equal(?:s)?\s+(?:to\s+)?)?$", re.IGNORECASE)
_DIGIT_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(?:[\u00a0\u202f\u2009]\d{3})+(?!\d)")
# Clauses (see the module docstring): a check re-derives an answer, a correction replaces it.
_CHECK = (
    r"(?:let(?:['’]s|\s+(?:me|us))\s+|to\s+|we\s+can\s+)?(?:double[- ]?)?"
    r"(?:check(?:ing)?|verify(?:ing)?|verification|proof)\b"
)
_CORRECTION = (
    r"actually\b|wait\b|oops\b|correction\b|i\s+mean\b|(?:i['’]m\s+|i\s+am\s+)?sorry\b|no\b(?=\s*[,.!])"
    r"|(?:that|this|it)(?:['’]s)?\s+(?:is\s+|was\s+)?(?:wrong|incorrect|not\s+right|a\s+mistake)\b"
    r"|i\s+made\s+a\s+mistake\b"
)
# What a clause must state for a check after it to be a check of an answer: a result ("= 18", "is 18",
# a bare leading number), not an operand ("What is 15 + 3? Let me check: ..." is work, not a check).
_STATED = rf"\s*\$?\s*[-+]?(?:{_NUMBER_BODY})(?!\w|\.\d|\s*[-+*/×÷^])"
_RESULT = re.compile(rf"(?:=|\b(?:is|are|equals?|gives?|makes?|get|got|was|be)\b){_STATED}", re.IGNORECASE)
_LEADING = re.compile(_STATED)  # a clause that starts with a number states it
_NONSPACE = re.compile(r"\S")
_CLAUSE = re.compile(
    rf"(?:^|(?<=[.!?;,:…(\[\n—–]))\s*(?:(?P<check>{_CHECK})|(?P<fix>{_CORRECTION}))", re.IGNORECASE
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_WORD = re.compile(r"[A-Za-z][A-Za-z ]+")
TRAILING_PUNCTUATION = ".,;:!?。"
_TRAILING = TRAILING_PUNCTUATION
# minus sign; no-break, narrow no-break and thin spaces (digit groups they separate are joined first)
_UNICODE = str.maketrans({"−": "-", "\u00a0": " ", "\u202f": " ", "\u2009": " "})


def _plain(text: str) -> str:
    """`text` with digit groups joined across no-break and thin spaces and odd characters made plain."""
    return _DIGIT_GROUPS.sub(lambda m: re.sub(r"\D", "", m.group(0)), text).translate(_UNICODE)


def extract_answer(
    completion: str | None, *, numeric: bool = False, multiline: bool = False, finished: bool = True
) -> str | None:
    """The final answer stated in `completion`, cleaned; None when there is none.

    numeric: the answer is a number (reduce a candidate to its number; fall back to the last number).
    multiline: the answer may span lines (a grid); `Answer:` then reads up to the next blank line.
    finished: False for a completion cut off at its token budget: only a stated answer counts (rules
    1–4), never the last number of a ramble that never reached one.
    """
    try:
        return _extract(completion, numeric, multiline, finished)
    except Exception:  # never let a weird completion stop a run
        return None


def _extract(text: str | None, numeric: bool, multiline: bool, finished: bool = True) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    text = cut_continuation(_plain(text))
    for candidate in _candidates(text, multiline):
        if not multiline:
            candidate = committed(candidate, numeric)
        answer = clean_answer(candidate, numeric=numeric, multiline=multiline)
        if answer:
            return answer
    if numeric and finished:
        return last_number(committed(text, numeric=True))
    return None


def clauses(text: str, numeric: bool = True) -> list[tuple[str, str]]:
    """`text` cut into clauses, each (kind, text): `answer` (the first), `check` (a check of an answer
    given before it) or `fix` (a correction), by the markers the module docstring lists. Numeric: a
    check marker counts only after a clause that states a result — the first clause a leading number,
    "= 18" or "is 18" (`_RESULT`), a correction any number — else it is work towards one ("What is
    15 + 3? Let me check: ..."), not a check."""
    parts, start, kind = [], 0, "answer"
    result = bool(_LEADING.match(text))  # whether the clause from `start` states a result, up to `seen`
    seen = 0
    for m in _CLAUSE.finditer(text):
        at = m.start("check") if m.group("check") else m.start("fix")
        if m.group("check"):
            if numeric and not result:  # only what is new since the last marker: linear time
                pattern = _NUMBER if kind == "fix" else _RESULT
                result = bool(pattern.search(text, max(start, seen - 40), at))
                seen = at
            if not _NONSPACE.search(text, start, at) or (numeric and not result):
                continue
        if at > start or kind != "answer":
            parts.append((kind, text[start:at]))
        start, kind, result, seen = at, "check" if m.group("check") else "fix", False, at
    parts.append((kind, text[start:]))
    return parts


def committed(text: str, numeric: bool) -> str:
    """The part of `text` that holds its final committed answer. Numeric: the last clause that is not a
    check and states a number that is not negated (`text` itself when none does). Otherwise: `text` up
    to the first check that follows something."""
    parts = clauses(text, numeric)
    if numeric:
        for kind, part in reversed(parts):
            if kind != "check" and _stated_numbers(part):
                return part
        return text
    head = []
    for kind, part in parts:
        if kind == "check":
            return "".join(head)
        head.append(part)
    return text


def _stated_numbers(text: str) -> list[re.Match]:
    """The numbers in `text` that are not negated ("not 17", "isn't 17")."""
    return [
        m for m in _NUMBER.finditer(text) if not _NEGATED.search(text[max(0, m.start() - 40) : m.start()])
    ]


def _candidates(text: str, multiline: bool):
    """Candidate answer texts in priority order (lazily: later rules cost nothing when one hits)."""
    matches = list(_ANSWER_LINE.finditer(text))
    if matches:
        yield _after(text, matches[-1].end(), multiline)
    opens = list(_TAG_OPEN.finditer(text))
    if opens:
        rest = text[opens[-1].end() :]
        close = _TAG_CLOSE.search(rest)
        yield rest[: close.start()] if close else rest
    boxed = last_boxed(text)
    if boxed is not None:
        yield boxed
    prose = list(_ANSWER_PROSE.finditer(text))
    if prose:
        yield _after(text, prose[-1].end(), multiline)


def cut_continuation(text: str) -> str:
    """Drop what follows a new `Question:` line (a base model continuing the few-shot pattern)."""
    for m in _CONTINUATION.finditer(text):
        if text[: m.start()].strip():
            return text[: m.start()]
    return text


def _after(text: str, pos: int, multiline: bool) -> str:
    """The answer text after a marker: the rest of the line, else the next line(s)."""
    rest = text[pos:]
    first, _, tail = rest.partition("\n")
    if first.strip() and not multiline:
        return first
    if multiline:  # up to the first empty line (a line of spaces can belong to a grid)
        block = [first] if first.strip() else []
        for line in tail.split("\n"):
            if not line.strip() and (not block or not line.strip("\r")):
                if block:
                    break
                continue
            block.append(line)
        return "\n".join(block)
    for line in tail.split("\n"):
        if line.strip():
            return line
    return ""


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces included; None if none/unclosed."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def clean_answer(answer: str | None, *, numeric: bool = False, multiline: bool = False) -> str | None:
    """Strip wrappers (`<answer>`, `\\boxed{}`, `**..**`, `$..$`, code fences) and trailing punctuation.

    Inner text is kept as written (spacing, quotes); a multi-line answer keeps its layout, with the
    common indentation and trailing spaces removed.
    """
    if answer is None:
        return None
    s = _plain(answer)
    s = _TAG_CLOSE.split(s)[0]
    s = _TAG_OPEN.sub("", s)
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    s = s.replace("```", "")
    if multiline:
        lines = [ln.rstrip() for ln in textwrap.dedent(s.replace("\r", "")).split("\n")]
        while lines and not lines[0]:
            lines.pop(0)
        while lines and not lines[-1]:
            lines.pop()
        s = "\n".join(lines)
    for _ in range(4):  # peel nested wrappers: **$x$**.
        before = s
        s = s.strip().rstrip(_TRAILING).strip()
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) + 1 and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
        if s.startswith("\\text{") and s.endswith("}") and s.count("{") == 1:
            s = s[len("\\text{") : -1]
        if s == before:
            break
    if numeric:
        return number_in(s)
    return s or None


_WRAPPERS = (("**", "**"), ("__", "__"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("`", "`"), ("*", "*"))


def number_in(s: str) -> str | None:
    """The number a numeric answer states: after the last '=', the first number that is not negated;
    normalized (a percent sign kept)."""
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    s = _LATEX_FRAC.sub(r"\1/\2", s).replace("$", " ")
    numbers = _stated_numbers(s)
    return _with_percent(numbers[0], s) if numbers else None


def last_number(text: str) -> str | None:
    """The last number in `text` that is not negated (thousands commas allowed), normalized (a percent
    sign kept); None if there is none."""
    try:
        text = _plain(text).replace("$", " ")
        numbers = _stated_numbers(text)
    except Exception:
        return None
    return _with_percent(numbers[-1], text) if numbers else None


def _with_percent(m: re.Match, text: str) -> str | None:
    """The matched number normalized, with `%` where the text writes one after it (50 %, 50 percent)."""
    number = normalize_number(m.group(0))
    return number + "%" if number is not None and _PERCENT.match(text, m.end()) else number


def normalize_number(s: str) -> str | None:
    """'1,234' → '1234', '+7' → '7', '7.50' → '7.5', '7.0' → '7', '.5' → '0.5', '18,5' → '18.5',
    '1.8e1' → '18', '50%' → '50%'; a fraction stays 'a/b'."""
    s = s.strip().lstrip("+")
    percent = s.endswith("%")
    plain = _plain_decimal(s[:-1].rstrip() if percent else s)
    if plain is None:
        return None
    if "/" in plain:
        return plain + ("%" if percent else "")
    try:
        d = Decimal(plain)
    except InvalidOperation:
        return None
    text = str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")
    return text + ("%" if percent else "")


def _plain_decimal(s: str) -> str | None:
    """A written number as Python reads it: thousands commas dropped, a decimal comma made a point;
    None when `s` is not one number."""
    if not _NUMBER_FULL.fullmatch(s):
        return None
    if re.fullmatch(r"[-+]?\d+,(?:\d{1,2}|\d{4,})", s):
        return s.replace(",", ".")
    return s.replace(",", "")


def as_fraction(s: str | None) -> Fraction | None:
    """The exact value of a plain number ('1,234.5', '3/4', '-7', '18,5', '1.8e1'), else None (a
    percentage is not a plain number: see `math_match`)."""
    if not s:
        return None
    s = s.strip().rstrip(_TRAILING).replace("$", "").strip()
    plain = _plain_decimal(s)
    if plain is None:
        return None
    try:
        return Fraction(plain)
    except (ValueError, ZeroDivisionError):
        return None


def looks_numeric(s: str | None) -> bool:
    return as_fraction(s) is not None


def looks_math(s: str | None) -> bool:
    """Whether a reference answer is math-verify material: a number, or LaTeX."""
    if not s:
        return False
    return looks_numeric(s) or "\\" in s or (s.startswith("$") and s.endswith("$"))


# ---------------------------------------------------------------- grids (sudoku)

_GRID_SEPARATOR = re.compile(r"^[\s\-+=|_:.]*$")  # a rule between blocks of rows: `------+------`


def _grid_cells(line: str) -> list[str]:
    return re.findall(r"\d", line)


def read_grid(text: str | None, size: int) -> str | None:
    """A size × size grid of one-digit cells, written as reasoning-gym writes its answers (cells
    separated by single spaces, rows by newlines), from `text` in any layout that holds exactly `size`
    rows of `size` digits: spaces, commas, bars or nothing between cells, rule lines between blocks.
    None when the text is not such a grid (a row with another number of digits, an empty cell)."""
    if not text:
        return None
    rows = []
    for line in text.strip().splitlines():
        cells = _grid_cells(line)
        if not cells:
            if line.strip() and not _GRID_SEPARATOR.match(line):
                return None  # words between the rows: not a bare grid
            continue
        if len(cells) != size or re.search(r"[A-Za-z]", line):
            return None
        rows.append(" ".join(cells))
    return "\n".join(rows) if len(rows) == size else None


def last_grid(text: str | None, size: int) -> str | None:
    """The last run of `size` consecutive lines that each hold exactly `size` digits (rule lines
    between them allowed), as `read_grid` writes it: a grid a completion states without an
    `Answer:` line. None when there is none."""
    if not text:
        return None
    lines = text.splitlines()
    for end in range(len(lines), 0, -1):
        rows: list[str] = []
        for line in reversed(lines[:end]):
            cells = _grid_cells(line)
            if not cells and line.strip() and _GRID_SEPARATOR.match(line) and rows:
                continue
            if len(cells) != size or re.search(r"[A-Za-z]", line):
                break
            rows.append(" ".join(cells))
            if len(rows) == size:
                return "\n".join(reversed(rows))
    return None


# ---------------------------------------------------------------- comparison


def exact_match(pred: str | None, gold: str) -> bool:
    """Equal after normalizing case, spacing, quotes, wrappers and trailing punctuation; numbers by value."""
    if pred is None:
        return False
    try:
        a, b = _loose(pred), _loose(gold)
        if a is None or b is None:
            return False
        if a == b:
            return True
        fa, fb = as_fraction(a), as_fraction(b)
        return fa is not None and fa == fb
    except Exception:
        return False


def _loose(s: str) -> str | None:
    s = clean_answer(s, multiline="\n" in s.strip())
    if s is None:
        return None
    s = "\n".join(" ".join(line.split()) for line in s.split("\n")).casefold()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def squad_normalize(s: str) -> str:
    """SQuAD's answer normalisation (its evaluate-v1.1.py): lowercase, delete punctuation ("U.S." is
    "us"), remove the articles a/an/the, collapse whitespace. Punctuation is SQuAD's (ASCII `string.punctuation`) plus
    every Unicode punctuation character, so a curly apostrophe or a dash goes as a straight one does."""
    s = s.translate(_UNICODE).casefold()
    s = "".join(
        ch for ch in s if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    return " ".join(_ARTICLES.sub(" ", s).split())


def qa_match(pred: str | None, golds: Sequence[str]) -> bool:
    """SQuAD exact match against any gold answer: equal after `squad_normalize`. An answer that
    normalises to nothing ("the", ".") matches nothing."""
    if pred is None:
        return False
    norm = squad_normalize(pred)
    return bool(norm) and any(norm == squad_normalize(g) for g in golds)


def math_match(pred: str | None, gold: str) -> bool:
    """Mathematical equivalence by math-verify (`\\frac{1}{2}` == `0.5`), gold parsed from the reference."""
    if pred is None:
        return False
    try:
        if exact_match(pred, gold):
            return True
        # a word is not math: math-verify would read "Paris" as a product of symbols equal to "Sirap"
        if _WORD.fullmatch(gold.strip()):
            return False
        from math_verify import parse, verify

        # math-verify times out with SIGALRM, which works only in the main thread.
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        gold_parsed = parse(_math_text(gold), parsing_timeout=timeout)
        pred_parsed = parse(_math_text(pred), parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:
        return False


def _math_text(s: str) -> str:
    """Wrap an answer so math-verify reads it whole: numbers lose thousands commas, LaTeX gets `$..$`."""
    s = s.strip()
    if as_fraction(s) is not None and "," in s:
        s = _plain_decimal(s.rstrip(_TRAILING).replace("$", "").strip()) or s
    if "\\boxed" in s or "$" in s or "\\(" in s or "\\[" in s:
        return s
    return f"${s}$"
