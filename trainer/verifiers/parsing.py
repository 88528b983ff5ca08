"""Reading verifier outputs and verifier options, robustly.

Verdicts, scores and pairwise choices are parsed from free text that a small model may garble; a
parser returns None when it finds no decision, and never raises. `apply_rule` then turns those
abstentions into scores under the configured `unparseable` rule:

    abstain  NaN (the row is never kept by a filter and is left out of AUROC)
    reject   the lowest score (0)
    accept   the highest score (1, or the scale's maximum)

`Options` reads a verifier's `options` mapping with type and range checks; a mistake is a UserError
naming `verifiers.<i>.options.<key>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError

UNPARSEABLE_RULES = ("abstain", "reject", "accept")

_NEGATION = re.compile(r"\b(?:not|never|isn't|wasn't|no longer)\b", re.I)
_MARKER = r"(?:verdict|judgement|judgment|conclusion|final\s+answer|answer|decision|assessment)"


def _clean(text: Any) -> str:
    """Text with markdown emphasis and surrounding quotes removed; '' for non-strings."""
    if not isinstance(text, str):
        return ""
    return re.sub(r"[*_`#]+", "", text)


def cut_at(text: str, markers: Iterable[str]) -> str:
    """`text` up to the first occurrence of any marker (a base model that starts a new example)."""
    end = len(text)
    for m in markers:
        if m:
            i = text.find(m)
            if 0 <= i < end:
                end = i
    return text[:end]


# ---------------------------------------------------------------- verdicts


def parse_verdict(
    text: str, yes: Sequence[str] = ("correct",), no: Sequence[str] = ("incorrect",)
) -> float | None:
    """1.0 for a positive verdict, 0.0 for a negative one, None when the text gives neither.

    An explicit marker (`Verdict: Correct`, `Answer: incorrect`, bold or not) wins; its last
    occurrence counts. Without one, the last verdict word that is predicated ("the solution is
    correct", "isn't correct", "is not incorrect") or stands alone on its line decides; a mere
    mention ("the correct answer is 68") does not. Words are matched whole and case-insensitively,
    longest first, so "incorrect" is never read as "correct".
    """
    text = _clean(text)
    words = sorted({w.lower() for w in (*yes, *no) if w}, key=len, reverse=True)
    if not text or not words:
        return None
    no_set = {w.lower() for w in no}
    alt = "|".join(re.escape(w) for w in words)
    marked = list(re.finditer(rf"\b{_MARKER}\s*(?:is|:|-|=)\s*\W{{0,3}}({alt})\b", text, re.I))
    if marked:
        return 0.0 if marked[-1].group(1).lower() in no_set else 1.0
    predicated = (
        rf"\b(?:is|are|was|were|seems|looks|appears|be)(\s*n't|\s+not)?\s+"
        rf"(?:(?:entirely|completely|totally|also|indeed|actually|fully|clearly)\s+)?({alt})\b"
    )
    found = [(m.start(), bool(m.group(1)), m.group(2)) for m in re.finditer(predicated, text, re.I)]
    found += [(m.start(), False, m.group(1)) for m in re.finditer(rf"(?m)^\W*({alt})\W*$", text, re.I)]
    if not found:
        return None
    _, negated, word = max(found)
    positive = word.lower() not in no_set
    return 1.0 if positive != negated else 0.0


# ---------------------------------------------------------------- scores

_NUM = r"(\d+(?:\.\d+)?)"


def parse_score(text: str, low: float = 1, high: float = 10) -> float | None:
    """The score the text gives on the scale [low, high], or None.

    Accepted forms, the last one in the text counting: `Score: 7`, `score of 7`, `rating is 7/10`,
    `7/10`, `7 out of 10`. A fraction must be out of `high`; a score outside the scale is unparseable.
    """
    text = _clean(text)
    if not text:
        return None
    top = rf"(?:\s*(?:/|out\s+of)\s*{_NUM})?"
    patterns = [
        rf"\b(?:score|rating|grade|rate)\w*\s*(?:is|of|:|=|-)?\s*(?:a\s+)?{_NUM}{top}",
        rf"(?<![\d.]){_NUM}\s*(?:/|out\s+of)\s*{_NUM}",
    ]
    best: tuple[int, float, str | None] | None = None
    for pat in patterns:
        for m in re.finditer(pat, text, re.I):
            if best is None or m.start() >= best[0]:
                best = (m.start(), float(m.group(1)), m.group(2))
    if best is None:
        return None
    _, value, denominator = best
    if denominator is not None and float(denominator) != float(high):
        return None
    if not low <= value <= high:
        return None
    return value


# ---------------------------------------------------------------- pairwise choices


def parse_choice(text: str, labels: Sequence[str] = ("A", "B")) -> int | None:
    """The index in `labels` of the response the text prefers, or None.

    Explicit forms win (`Winner: B`, `Better response: (A)`, `The better response is Response A`),
    the last one counting; otherwise the last sentence that calls one labelled response better,
    correct or the winner decides. A label is only read as a whole word ("As" is not "A").
    """
    text = _clean(text)
    if not text:
        return None
    alt = "|".join(re.escape(x) for x in labels)
    explicit = (
        rf"\b(?:winner|better(?:\s+(?:response|solution|one))?|best|choice|preferred(?:\s+response)?|"
        rf"verdict|answer)\s*(?:is|:|-|=)\s*\W{{0,3}}(?:(?:response|solution)\s*)?\(?({alt})\)?(?![\w])"
    )
    found = list(re.finditer(explicit, text, re.I))
    if not found:
        # "Response B, which shows its work, is better": what lies between the label and its predicate
        # names no other response, holds no other verb of judgement and ends no sentence, so
        # "Response A is incorrect, so Response B is better" is read as B, not as A.
        between = r"(?:(?!\b(?:response|solution|is|was|seems|are|were)\b)[^.;!?\n]){0,40}?"
        described = (
            rf"\b(?:response|solution)\s*\(?({alt})\)?(?![\w]){between}"
            r"\b(?:is|was|seems)\s+(?:\w+\s+)?(?:better|correct|right|the\s+winner|preferred)\b"
        )
        found = [m for m in re.finditer(described, text, re.I) if not _NEGATION.search(m.group(0))]
    if not found:
        return None
    label = found[-1].group(1)
    for i, x in enumerate(labels):
        if x.lower() == label.lower():
            return i
    return None


# ---------------------------------------------------------------- the unparseable rule


def apply_rule(
    values: Sequence[float | None] | np.ndarray, rule: str, low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """Parsed values as floats, with None/NaN replaced under `rule` (abstain: NaN, reject: low, accept: high)."""
    if rule not in UNPARSEABLE_RULES:
        raise ValueError(f"unparseable rule must be one of {UNPARSEABLE_RULES}, got {rule!r}")
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    fill = {"abstain": np.nan, "reject": float(low), "accept": float(high)}[rule]
    out[np.isnan(out)] = fill
    return out


# ---------------------------------------------------------------- options

_MISSING = object()
_BOOL_KEYS = {True: "yes", False: "no"}


class Options:
    """A verifier's `options` mapping, read with checks. `key` is the verifier's config key (`verifiers.2`)."""

    def __init__(self, options: dict | None, key: str, allowed: Iterable[str]):
        # YAML 1.1 reads an unquoted `yes:` / `no:` key as true / false: give the verdict options back
        # their names (`options: {yes: Right, no: Wrong}` means what it says).
        self.data = {
            _BOOL_KEYS.get(k, k) if isinstance(k, bool) else k: v for k, v in (options or {}).items()
        }
        self.key = key
        allowed = sorted(allowed)
        for name in self.data:
            if name not in allowed:
                raise UserError(
                    f"{key}.options.{name}: unknown option; valid options: {', '.join(allowed) or 'none'}"
                )

    def where(self, name: str) -> str:
        return f"{self.key}.options.{name}"

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def integer(
        self, name: str, default: int | None, low: int | None = None, high: int | None = None
    ) -> int | None:
        value = self.data.get(name, default)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{self.where(name)}: expected an integer, got {value!r}")
        self._in_range(name, value, low, high)
        return value

    def number(self, name: str, default: float, low: float | None = None, high: float | None = None) -> float:
        value = self.data.get(name, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"{self.where(name)}: expected a number, got {value!r}")
        self._in_range(name, value, low, high)
        return float(value)

    def choice(self, name: str, default: str, allowed: Sequence[str]) -> str:
        value = self.data.get(name, default)
        if value not in allowed:
            raise UserError(
                f"{self.where(name)}: unknown value {value!r}; choose one of {', '.join(allowed)}"
            )
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise UserError(f"{self.where(name)}: expected true or false, got {value!r}")
        return value

    def words(self, name: str, default: Sequence[str]) -> list[str]:
        """A word or a list of words (verdict words)."""
        value = self.data.get(name, list(default))
        value = [value] if isinstance(value, str) else value
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(w, str) and w.strip() for w in value)
        ):
            raise UserError(f"{self.where(name)}: expected a word or a list of words, got {value!r}")
        return [w.strip() for w in value]

    def file(self, name: str) -> Path | None:
        value = self.data.get(name)
        if value is None:
            return None
        path = Path(str(value)).expanduser()
        if not path.is_file():
            raise UserError(f"{self.where(name)}: file {value} does not exist")
        return path

    def unparseable(self) -> str:
        return self.choice("unparseable", "abstain", UNPARSEABLE_RULES)

    def _in_range(self, name: str, value: float, low: float | None, high: float | None) -> None:
        if low is not None and value < low:
            raise UserError(f"{self.where(name)}: must be >= {low}, got {value}")
        if high is not None and value > high:
            raise UserError(f"{self.where(name)}: must be <= {high}, got {value}")
