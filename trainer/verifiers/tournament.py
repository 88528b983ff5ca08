"""Tournament verification: single-elimination pairwise comparisons among a prompt's generations.

The bracket: when a prompt's n generations are not a power of two, the first round gives byes to
2^ceil(log2 n) - n of them, chosen at random (seeded), and pairs the others in sample order; every
later round is full, its pairs in bracket order. The verifier compares each pair twice, once in each
order, so that a preference for the first (or second) position cancels out. A generation's score is
the share of its matches that it won: a bye is no match and no win, so the champion (who won all of
its matches) scores 1 and alone does, a finalist scores more than a first-round loser, and the
`tournament` filter (trainer/filters.py) keeps the champions. A generation that played no match
scores 0.5 (no evidence either way) unless it is alone in its bracket (1: the only survivor). All
comparisons of a round, across every prompt, go to the sampler in one batch.

`run_tournaments` is the bracket logic alone; the verifier supplies it a judge that returns, for a
pair (i, j), the share of parseable votes that prefer i (NaN when no vote could be parsed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trainer.verifiers.base import VerifierResult
from trainer.verifiers.cot import PromptedVerifier, example_answers
from trainer.verifiers.parsing import Options, parse_choice
from trainer.verifiers.registry import register

LABELS = ("A", "B")
Judge = Callable[[list[tuple[int, int]]], Sequence[float]]


@dataclass
class Bracket:
    alive: list[int]  # entries still in, in bracket order
    rounds: int  # rounds this bracket plays
    byes: list[int] = field(default_factory=list)  # entries that sit out the next round
    played: int = 0


@dataclass
class TournamentOutcome:
    wins: dict[int, int]  # entry -> matches won (a bye is none)
    losses: dict[int, int]  # entry -> matches lost
    byes: dict[int, int]  # entry -> rounds it sat out
    rounds: list[int]  # rounds played per group
    comparisons: int = 0
    ties: int = 0  # comparisons decided by the tie-break
    unresolved: int = 0  # comparisons with no parseable vote at all

    def scores(self, groups: Sequence[Sequence[int]]) -> dict[int, float]:
        """Matches won / matches played (0.5 for an entry that played none; 1 alone in its bracket)."""
        out = {}
        for group in groups:
            for e in group:
                played = self.wins[e] + self.losses[e]
                out[e] = self.wins[e] / played if played else (1.0 if len(group) == 1 else 0.5)
        return out


def bracket_rounds(size: int, rounds: int | None) -> int:
    """Rounds a bracket of `size` entries plays: until one remains, or `rounds` if fewer."""
    full = math.ceil(math.log2(size)) if size > 1 else 0
    return full if rounds is None else min(rounds, full)


def _first_round(entries: list[int], rng) -> tuple[list[int], list[int]]:
    """(entries that play, entries with a bye): byes for 2^ceil(log2 n) - n entries chosen at random,
    so that every later round is full."""
    n = len(entries)
    byes = (1 << math.ceil(math.log2(n))) - n if n > 1 else 0
    chosen = set(rng.choice(n, size=byes, replace=False).tolist()) if byes else set()
    play = [e for k, e in enumerate(entries) if k not in chosen]
    return play, [e for k, e in enumerate(entries) if k in chosen]


def run_tournaments(
    groups: Sequence[Sequence[int]],
    judge: Judge,
    rounds: int | None = None,
    rule: str = "abstain",
    tie_break: str = "random",
    seed: int = 0,
) -> TournamentOutcome:
    """Play a single-elimination tournament in each group of entries.

    `judge(pairs)` gives, per pair (i, j), the preference for i in [0, 1] (NaN: no parseable vote).
    > 0.5: i advances; < 0.5: j advances; 0.5 (a split vote): the tie-break decides (`random`, seeded,
    or `first`: the entry earlier in the bracket). A pair with no parseable vote follows `rule`:
    abstain: the tie-break decides; reject: both are eliminated (a loss each); accept: both advance
    (a win each).
    """
    rng = np.random.default_rng(seed)
    brackets = []
    for g in groups:
        play, byes = _first_round(list(g), rng)
        brackets.append(Bracket(play, bracket_rounds(len(g), rounds), byes))
    entries = [e for g in groups for e in g]
    out = TournamentOutcome(
        {e: 0 for e in entries},
        {e: 0 for e in entries},
        {e: 0 for e in entries},
        [b.rounds for b in brackets],
    )
    while True:
        active = [b for b in brackets if b.played < b.rounds and len(b.alive) + len(b.byes) > 1]
        if not active:
            break
        pairs = [(b.alive[k], b.alive[k + 1]) for b in active for k in range(0, len(b.alive) - 1, 2)]
        prefs = iter(judge(pairs))
        out.comparisons += len(pairs)
        for b in active:
            nxt: list[int] = []
            for k in range(0, len(b.alive) - 1, 2):
                nxt += _advance(b.alive[k], b.alive[k + 1], float(next(prefs)), rule, tie_break, rng, out)
            if len(b.alive) % 2:  # odd after an `accept` or `reject` round: the last entry sits out
                b.byes.append(b.alive[-1])
            for e in b.byes:
                out.byes[e] += 1
            # a bye keeps its place in the bracket order (the entries seeded after it follow it)
            b.alive, b.byes, b.played = b.byes + nxt, [], b.played + 1
    return out


def _advance(
    a: int, b: int, pref: float, rule: str, tie_break: str, rng, out: TournamentOutcome
) -> list[int]:
    if math.isnan(pref):
        out.unresolved += 1
        if rule == "reject":
            out.losses[a] += 1
            out.losses[b] += 1
            return []
        if rule == "accept":
            out.wins[a] += 1
            out.wins[b] += 1
            return [a, b]
        pref = 0.5
    if pref == 0.5:
        out.ties += 1
        first = tie_break == "first" or rng.random() < 0.5
        pref = 1.0 if first else 0.0
    winner, loser = (a, b) if pref > 0.5 else (b, a)
    out.wins[winner] += 1
    out.losses[loser] += 1
    return [winner]


@register("tournament")
class TournamentVerifier(PromptedVerifier):
    """Tournament: each prompt's generations meet in single-elimination pairwise comparisons.

    Options (`verifiers.<i>.options`):
      rounds       rounds to play (null = until one generation remains); with fewer rounds every
                   bracket's winners survive (e.g. 8 samples, 2 rounds: 2 survivors)
      mode         cot: the verifier reasons, then writes `Winner: A|B` (parsed; one vote per order);
                   mc: P("Winner: A") against P("Winner: B") from log-probabilities (no decoding,
                   never unparseable); the preference is the mean over both orders
      tie_break    random (seeded) | first: who advances from a split or empty vote
      unparseable  abstain | reject | accept: a comparison with no parseable vote in either order goes
                   to the tie-break / eliminates both / lets both advance
      max_tokens, temperature, top_p   cot mode's sampling (128, 0, 1)
      examples     a YAML/JSONL file of worked examples {question, response_a, response_b, response};
                   without it, `n_shots` examples are built from train problems
    The template (default templates/tournament.txt) needs {question}, {response_a} and {response_b}.
    Tokens: prompt + generated tokens of every comparison call (cot), or what the sampler fed through
    the model to score both labels (mc: each prompt once, with the labels' shared prefix).
    """

    template_file = "tournament.txt"
    example_file = "tournament_example.txt"
    required = ("question", "response_a", "response_b")
    option_names = (
        "rounds",
        "mode",
        "tie_break",
        "max_tokens",
        "temperature",
        "top_p",
        "unparseable",
        "examples",
    )
    cue = "Comparison:"

    def read_options(self, opts: Options) -> None:
        super().read_options(opts)
        self.rounds = opts.integer("rounds", None, low=1)
        self.mode = opts.choice("mode", "cot", ("cot", "mc"))
        self.tie_break = opts.choice("tie_break", "random", ("random", "first"))

    def example_fields(self, problem, i: int, example: str) -> dict:
        _, wrong, wrong_text = example_answers(problem, 1, self.ctx.task)
        _, right, right_text = example_answers(problem, 0, self.ctx.task)
        a_right = i % 2 == 0  # the right response alternates between positions
        a, b = (right_text, wrong_text) if a_right else (wrong_text, right_text)
        response = example.format(
            reference=problem.answer,
            answer_a=right if a_right else wrong,
            answer_b=wrong if a_right else right,
            winner="A" if a_right else "B",
        )
        return {"question": problem.question, "response_a": a, "response_b": b, "response": response}

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        sample_idx = rows["sample_idx"].to_numpy()
        by_prompt = rows.reset_index(drop=True).groupby("prompt_id", sort=False).indices
        groups = [sorted(idx.tolist(), key=lambda k: sample_idx[k]) for idx in by_prompt.values()]
        questions = rows["question"].tolist()
        completions = [str(c).strip() for c in rows["completion"]]
        stats = {"tokens": 0, "unparseable": 0, "calls": 0, "seconds": 0.0, "mass": 0.0}

        def judge(pairs: list[tuple[int, int]]) -> list[float]:
            fields = [
                {"question": questions[x], "response_a": completions[x], "response_b": completions[y]}
                for i, j in pairs
                for x, y in ((i, j), (j, i))
            ]
            prompts = self.render_prompts(fields)
            stats["calls"] += len(prompts)
            return self._judge_mc(prompts, stats) if self.mode == "mc" else self._judge_cot(prompts, stats)

        outcome = run_tournaments(groups, judge, self.rounds, self.rule, self.tie_break, self.ctx.seed)
        by_pos = outcome.scores(groups)
        scores = np.array([by_pos[k] for k in range(len(rows))], dtype=float)
        return VerifierResult(
            scores=scores,
            tokens=int(stats["tokens"]),
            seconds=stats["seconds"],
            extra={
                "unparseable": int(stats["unparseable"]),
                "calls": int(stats["calls"]),
                "comparisons": outcome.comparisons,
                "ties": outcome.ties,
                "byes": int(sum(outcome.byes.values())),
                "rounds": max(outcome.rounds, default=0),
                **(
                    {"verdict_mass": stats["mass"] / stats["calls"] if stats["calls"] else None}
                    if self.mode == "mc"
                    else {}
                ),
            },
        )

    def _judge_cot(self, prompts: list[str], stats: dict) -> list[float]:
        """Both orders of each pair (consecutive prompts): the share of parsed votes for the first entry."""
        texts, tokens, seconds = self.sample(prompts)
        stats["tokens"] += int(tokens.sum())
        stats["seconds"] += seconds
        choices = [parse_choice(t[0], LABELS) for t in texts]
        stats["unparseable"] += sum(c is None for c in choices)
        prefs = []
        for k in range(0, len(choices), 2):
            # order (i, j): "A" is i; order (j, i): "B" is i
            votes = [v for v in (_flip(choices[k], False), _flip(choices[k + 1], True)) if v is not None]
            prefs.append(sum(votes) / len(votes) if votes else float("nan"))
        return prefs

    def _judge_mc(self, prompts: list[str], stats: dict) -> list[float]:
        lead = "" if self.ctx.prompt_style == "chat" else " "
        conts = [f"{lead}Winner: {label}" for label in LABELS]
        start = time.perf_counter()
        logps = np.asarray(self.ctx.sampler.score(prompts, [conts] * len(prompts)), dtype=float).reshape(
            -1, 2
        )
        stats["seconds"] += time.perf_counter() - start
        fed = getattr(self.ctx.sampler, "last_score_tokens", None)
        if fed is None:  # a sampler that does not say: both labels share all but their last token
            lead_ids = self.ctx.tokenizer(conts[0], add_special_tokens=False)["input_ids"]
            fed = self.count_tokens(prompts) + len(prompts) * (len(lead_ids) - 1)
        stats["tokens"] += int(fed)
        stats["mass"] += float(np.exp(logps).sum(axis=1).sum())
        p_a = 1.0 / (1.0 + np.exp(logps[:, 1] - logps[:, 0]))
        return [float((p_a[k] + (1.0 - p_a[k + 1])) / 2) for k in range(0, len(p_a), 2)]


def _flip(choice: int | None, swapped: bool) -> float | None:
    """A vote for the pair's first entry (1) or second (0) from a choice of label A (0) or B (1)."""
    if choice is None:
        return None
    return float(choice == (1 if swapped else 0))
