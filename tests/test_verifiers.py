"""Verification strategies: parsing, tournaments, ensembles and options on constructed inputs with known
answers (a scripted stand-in model answers the verification prompts), then every strategy on the real
packaged model through both samplers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from tests.helpers import console_table
from trainer.config import EngineConfig, FilterConfig, TaskConfig, VerifierConfig, from_dict
from trainer.filters import select
from trainer.samplers.base import Completion
from trainer.verifiers import VERIFIERS, VerifyContext, make_verifier, validate_verifiers
from trainer.verifiers.ensemble import add_shared_member_costs, combine_scores
from trainer.verifiers.parsing import apply_rule, parse_choice, parse_score, parse_verdict
from trainer.verifiers.tournament import bracket_rounds, run_tournaments

# ---------------------------------------------------------------- constructed inputs


def make_rows(problems: dict[str, tuple[int, int, list[int]]]) -> pd.DataFrame:
    """Generation rows: prompt id -> (a, b, the answers of its samples) for the question a + b."""
    records = []
    for pid, (a, b, answers) in problems.items():
        for j, ans in enumerate(answers):
            records.append(
                {
                    "prompt_id": pid,
                    "sample_idx": j,
                    "question": f"What is {a} + {b}?",
                    "reference": str(a + b),
                    "completion": f"{a} + {b} = {ans}\nAnswer: {ans}",
                    "answer": str(ans),
                    "correct": ans == a + b,
                }
            )
    return pd.DataFrame.from_records(records)


def last_question_sum(prompt: str) -> int:
    a, b = re.findall(r"What is (\d+) \+ (\d+)\?", prompt)[-1]
    return int(a) + int(b)


def shown(prompt: str, label: str) -> int:
    """The answer stated in the last `<label>: ...` field of a prompt."""
    return int(re.findall(rf"{label}: .*?Answer: (-?\d+)", prompt, re.S)[-1])


class ScriptedSampler:
    """A stand-in model: `reply(prompt, k)` writes the k-th sample; `logprob(prompt, continuation)` scores."""

    def __init__(self, reply=None, logprob=None):
        self.reply, self.logprob = reply, logprob
        self.prompts: list[str] = []
        self.generated = 0
        self.model_dir = Path("scripted")

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed):
        self.prompts += list(prompts)
        out = [[Completion(self.reply(p, k), n_tokens=3 + k) for k in range(n)] for p in prompts]
        self.generated += sum(c.n_tokens for comps in out for c in comps)
        return out

    def score(self, prompts, continuations):
        self.prompts += list(prompts)
        return [[self.logprob(p, c) for c in conts] for p, conts in zip(prompts, continuations)]

    def close(self):
        pass


def truthful_verdict(prompt: str, k: int = 0) -> str:
    right = shown(prompt, "Proposed solution") == last_question_sum(prompt)
    return f"Let me check the sum. Verdict: {'Correct' if right else 'Incorrect'}"


def truthful_choice(prompt: str, k: int = 0) -> str:
    ref = last_question_sum(prompt)
    a_right = shown(prompt, "Response A") == ref
    return f"Comparing both. Winner: {'A' if a_right else 'B'}"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def task():
    from eval.tasks import build_task

    cfg = TaskConfig(
        train_size=8,
        test_size=2,
        options={"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2, "operators": ["+"]},
    )
    return build_task(cfg, 0)


def verifier(spec: dict, sampler, tokenizer, style: str = "chat", task=None, shots=()):
    cfg = from_dict(VerifierConfig, spec, key="verifiers.0")
    ctx = VerifyContext(sampler, tokenizer, style, task, list(shots), seed=0)
    return make_verifier(cfg, ctx, "verifiers.0")


def prompt_tokens(tokenizer, prompts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Verdict: Correct", 1.0),
        ("Verdict: **Incorrect**", 0.0),
        ("verdict - correct.", 1.0),
        ("The solution is correct.", 1.0),
        ("The solution is not correct.", 0.0),
        ("The answer isn't correct", 0.0),
        ("The answer is incorrect", 0.0),
        ("Correct", 1.0),
        ("It looks incorrect at first. Verdict: Correct", 1.0),  # the explicit marker wins
        ("Verdict: Correct\nVerdict: Incorrect", 0.0),  # the last marker counts
        ("The correct answer is 68.", None),  # a mention is not a verdict
        ("Incorrectly added the tens", None),
        ("I cannot tell.", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_parse_verdict_custom_words():
    assert parse_verdict("Verdict: Yes", yes=["Yes", "Right"], no=["No", "Wrong"]) == 1.0
    assert parse_verdict("The sum is wrong.", yes=["Yes", "Right"], no=["No", "Wrong"]) == 0.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Score: 7", 7.0),
        ("**Score:** 8", 8.0),
        ("I would give it a score of 3 out of 10.", 3.0),
        ("Rating: 9/10", 9.0),
        ("6/10", 6.0),
        ("Score: 7.5", 7.5),
        ("23 + 45 = 68, not 86. Score: 2.", 2.0),  # numbers in the reasoning are not scores
        ("Score: 4\nOn reflection, Score: 9", 9.0),
        ("Score: 11", None),  # off the scale
        ("Score: 0", None),
        ("Score: 4/5", None),  # a fraction of another scale
        ("The score is high.", None),
        ("The answer is 55.", None),
        ("", None),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text, 1, 10) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Winner: A", 0),
        ("winner: **b**", 1),
        ("Winner: (B)", 1),
        ("The better response is Response A.", 0),
        ("Response B is correct.", 1),
        ("Response A is better. Winner: B", 1),  # the explicit form wins
        ("Response B is not correct.", None),
        # the described form reads one clause about one response: not "A ... B is better" as A
        ("Response A is incorrect, so Response B is better.", 1),
        ("Response A is incorrect, so B is better.", None),
        ("Response A is better than Response B.", 0),
        ("Response B, which shows the work, is correct.", 1),
        ("Response A is wrong; Response B is right.", 1),
        ("Response A is correctly formatted but Response B is correct.", 1),
        ("As you can see, both are wrong.", None),  # "As" is not the label A
        ("Both responses look the same.", None),
        ("", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected


def test_unparseable_rules():
    values = [1.0, None, 0.0, float("nan")]
    assert np.isnan(apply_rule(values, "abstain")[[1, 3]]).all()
    assert apply_rule(values, "reject").tolist() == [1.0, 0.0, 0.0, 0.0]
    assert apply_rule(values, "accept", 1, 10).tolist() == [1.0, 10.0, 0.0, 10.0]
    with pytest.raises(ValueError):
        apply_rule(values, "ignore")


# ---------------------------------------------------------------- tournament logic


def strength_judge(strength: dict[int, float]):
    calls = []

    def judge(pairs):
        calls.append(list(pairs))
        return [1.0 if strength[i] > strength[j] else 0.0 for i, j in pairs]

    return judge, calls


def test_bracket_strongest_survives():
    strength = dict(enumerate([3, 7, 1, 5, 0, 6, 2, 4]))
    judge, calls = strength_judge(strength)
    out = run_tournaments([list(range(8))], judge)
    assert [len(c) for c in calls] == [4, 2, 1]  # one batch per round
    assert out.wins == {0: 0, 1: 3, 2: 0, 3: 1, 4: 0, 5: 2, 6: 0, 7: 1}
    assert sum(out.byes.values()) == 0
    scores = out.scores([list(range(8))])
    # matches won / played: the champion 3/3, the finalist 2/3, semi-finalists 1/2, first-round losers 0
    assert scores == {1: 1.0, 5: 2 / 3, 3: 0.5, 7: 0.5, 0: 0.0, 2: 0.0, 4: 0.0, 6: 0.0}
    assert out.comparisons == 7 and out.ties == 0


def test_byes_are_no_wins_and_fall_in_the_first_round_at_random():
    # n = 5: three byes in round 1 (to a bracket of 8), then full rounds of 4 and 2.
    judge, calls = strength_judge({i: i for i in range(5)})
    out = run_tournaments([list(range(5))], judge, seed=0)
    assert [len(c) for c in calls] == [1, 2, 1] and out.comparisons == 4
    assert sum(out.byes.values()) == 3 and max(out.byes.values()) == 1
    scores = out.scores([list(range(5))])
    assert scores[4] == 1.0 and sorted(scores.values()).count(1.0) == 1  # only the champion scores 1
    # A bye is not a round survived: an entry that lost its only match scores 0, below any winner.
    for e in range(5):
        played = out.wins[e] + out.losses[e]
        assert scores[e] == out.wins[e] / played
        if out.wins[e] == 0:
            assert scores[e] == 0.0
    # Who gets a bye is seeded: reproducible, and not always the last samples.
    sat_out = set()
    for seed in range(12):
        o = run_tournaments([list(range(5))], strength_judge({i: i for i in range(5)})[0], seed=seed)
        assert (
            o.byes
            == run_tournaments([list(range(5))], strength_judge({i: i for i in range(5)})[0], seed=seed).byes
        )
        sat_out |= {e for e, b in o.byes.items() if b}
    assert sat_out == set(range(5))


def test_bracket_round_limit_and_batching_across_prompts():
    groups = [[0, 1, 2, 3], [4], [5, 6]]
    judge, calls = strength_judge({i: i for i in range(8)})
    out = run_tournaments(groups, judge)
    assert out.rounds == [2, 0, 1]
    assert calls[0] == [(0, 1), (2, 3), (5, 6)]  # prompts share a round's batch
    scores = out.scores(groups)
    assert scores[4] == 1.0  # a lone generation survives without a comparison
    assert scores[3] == 1.0 and scores[6] == 1.0 and scores[1] == 0.5
    limited = run_tournaments(groups, strength_judge({i: i for i in range(8)})[0], rounds=1)
    assert [e for e, s in limited.scores(groups).items() if s == 1.0] == [1, 3, 4, 6]
    # Under a round limit a bye-only entry played no match: no evidence either way.
    capped = run_tournaments([list(range(3))], strength_judge({i: i for i in range(3)})[0], rounds=1)
    (bye,) = [e for e, b in capped.byes.items() if b]
    assert capped.scores([list(range(3))])[bye] == 0.5
    assert bracket_rounds(8, None) == 3 and bracket_rounds(8, 2) == 2 and bracket_rounds(1, 5) == 0


def test_bracket_unparseable_rules_and_tie_break():
    def nothing(pairs):
        return [float("nan")] * len(pairs)

    group = [[0, 1, 2, 3]]
    first = run_tournaments(group, nothing, rule="abstain", tie_break="first")
    assert first.wins == {0: 2, 1: 0, 2: 1, 3: 0} and first.unresolved == 3 and first.ties == 3
    rejected = run_tournaments(group, nothing, rule="reject")
    assert set(rejected.scores(group).values()) == {0.0}
    accepted = run_tournaments(group, nothing, rule="accept")
    assert set(accepted.scores(group).values()) == {1.0}
    # a random tie-break is seeded: reproducible, one champion
    a = run_tournaments(group, nothing, tie_break="random", seed=3)
    b = run_tournaments(group, nothing, tie_break="random", seed=3)
    assert a.wins == b.wins and sum(v == 2 for v in a.wins.values()) == 1
    # reject eliminates both of a pair; the other half's winner is the lone survivor (a walkover)
    judge = lambda pairs: [float("nan") if (i, j) == (0, 1) else 1.0 for i, j in pairs]  # noqa: E731
    walk = run_tournaments(group, judge, rule="reject")
    assert walk.scores(group) == {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0}


# ---------------------------------------------------------------- tournament verifier (scripted model)


ROWS = {"p1": (12, 30, [41, 42, 40, 43]), "p2": (51, 17, [68, 60, 61, 68])}


def test_tournament_finds_the_correct_generations(tokenizer):
    rows = make_rows(ROWS)
    sampler = ScriptedSampler(truthful_choice)
    v = verifier({"name": "tournament", "options": {"tie_break": "first"}}, sampler, tokenizer)
    result = v.score(rows)
    # p1: 42 (idx 1) beats 41, then 40 (which tied 43 and advanced as the first); p2: 68 (idx 0) beats
    # 60, then ties the other 68 (idx 3, which beat 61) and advances as the first. Score: wins / matches.
    assert result.scores.tolist() == [0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.5]
    assert (
        result.extra["comparisons"] == 6 and result.extra["calls"] == 12 and result.extra["unparseable"] == 0
    )
    assert result.extra["ties"] == 2  # two wrong answers in p1, two right ones in p2
    assert result.tokens == prompt_tokens(tokenizer, sampler.prompts) + sampler.generated
    kept = select(rows, result.scores, FilterConfig("tournament"))
    assert kept.tolist() == [0, 1, 0, 0, 1, 0, 0, 0]


def test_tournament_asks_both_orders_to_cancel_position_bias(tokenizer):
    rows = make_rows(ROWS)
    biased = ScriptedSampler(lambda p, k: "Winner: A")
    v = verifier({"name": "tournament", "options": {"tie_break": "first"}}, biased, tokenizer)
    result = v.score(rows)
    assert result.extra["ties"] == result.extra["comparisons"] == 6  # every split vote is a tie
    assert result.scores.tolist() == [1.0, 0.0, 0.5, 0.0] * 2  # the bracket's first entries advance
    # each comparison is asked as (i, j) and (j, i): the responses swap places
    first, second = biased.prompts[0], biased.prompts[1]
    assert shown(first, "Response A") == shown(second, "Response B") == 41
    assert shown(first, "Response B") == shown(second, "Response A") == 42


def test_tournament_mc_mode_uses_logprobs(tokenizer):
    rows = make_rows(ROWS)

    def logprob(prompt, continuation):
        label = continuation.strip()[-1]
        right = shown(prompt, f"Response {label}") == last_question_sum(prompt)
        return -0.1 if right else -4.0

    sampler = ScriptedSampler(logprob=logprob)
    result = verifier(
        {"name": "tournament", "options": {"mode": "mc", "tie_break": "first"}}, sampler, tokenizer
    ).score(rows)
    assert result.scores.tolist() == [0.0, 1.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.5]
    assert result.tokens > 0 and result.extra["unparseable"] == 0
    assert result.extra["verdict_mass"] == pytest.approx(np.exp(-0.1) + np.exp(-4.0))


@pytest.mark.parametrize("rule, scores", [("reject", [0.0] * 8), ("accept", [1.0] * 8)])
def test_tournament_unparseable_comparisons(tokenizer, rule, scores):
    sampler = ScriptedSampler(lambda p, k: "Hmm, hard to say.")
    result = verifier({"name": "tournament", "options": {"unparseable": rule}}, sampler, tokenizer).score(
        make_rows(ROWS)
    )
    assert result.scores.tolist() == scores
    assert result.extra["unparseable"] == result.extra["calls"] > 0


# ---------------------------------------------------------------- CoT verifiers (scripted model)


def test_cot_binary_scores_and_counts(tokenizer):
    rows = make_rows(ROWS)
    sampler = ScriptedSampler(truthful_verdict)
    result = verifier({"name": "cot_binary"}, sampler, tokenizer).score(rows)
    assert result.scores.tolist() == rows["correct"].astype(float).tolist()
    assert result.extra == {"unparseable": 0, "calls": 8}
    assert result.tokens == prompt_tokens(tokenizer, sampler.prompts) + sampler.generated


@pytest.mark.parametrize("rule, fill", [("abstain", np.nan), ("reject", 0.0), ("accept", 1.0)])
def test_cot_binary_unparseable_rule(tokenizer, rule, fill):
    rows = make_rows(ROWS)

    def reply(prompt, k):  # garbles its verdict on the wrong answers 40 and 60
        return (
            "I am not sure." if shown(prompt, "Proposed solution") in (40, 60) else truthful_verdict(prompt)
        )

    result = verifier(
        {"name": "cot_binary", "options": {"unparseable": rule}}, ScriptedSampler(reply), tokenizer
    ).score(rows)
    expected = rows["correct"].to_numpy(dtype=float, copy=True)
    expected[[2, 5]] = fill
    np.testing.assert_array_equal(result.scores, expected)
    assert result.extra["unparseable"] == 2


def test_cot_score_averages_samples_and_rescales(tokenizer):
    rows = make_rows({"p": (1, 2, [3, 4])})
    replies = {0: "Score: 10", 1: "Score: 4", 2: "I cannot score this."}
    sampler = ScriptedSampler(lambda p, k: replies[k])
    spec = {"name": "cot_score", "options": {"samples": 3, "temperature": 0.7}}
    result = verifier(spec, sampler, tokenizer).score(rows)
    np.testing.assert_allclose(result.scores, [(7 - 1) / 9] * 2)  # mean of 10 and 4; the third abstains
    assert result.extra == {"unparseable": 2, "calls": 6}
    assert result.tokens == prompt_tokens(tokenizer, sampler.prompts[:2]) * 3 + sampler.generated
    # each sampled verification's own score (rescaled; NaN: abstained) and cost, in sampling order
    np.testing.assert_allclose(result.verdicts, [[1.0, 3 / 9, np.nan]] * 2)
    own = [prompt_tokens(tokenizer, [p]) for p in sampler.prompts[:2]]
    assert result.verdict_tokens.tolist() == [[t + 3, t + 4, t + 5] for t in own]  # prompt + generated
    assert result.verdict_tokens.sum() == result.tokens
    raw = verifier(
        {**spec, "options": {**spec["options"], "normalize": False, "unparseable": "reject"}},
        ScriptedSampler(lambda p, k: replies[k]),
        tokenizer,
    ).score(rows)
    np.testing.assert_allclose(raw.scores, [5.0, 5.0])  # (10 + 4 + 1) / 3: reject gives the minimum, 1
    accept = verifier(
        {"name": "cot_score", "options": {"unparseable": "accept"}},
        ScriptedSampler(lambda p, k: "Score: 12"),
        tokenizer,
    ).score(rows)
    assert accept.scores.tolist() == [1.0, 1.0] and accept.extra["unparseable"] == 2


def test_base_model_output_is_cut_where_a_new_example_starts(tokenizer):
    rows = make_rows({"p": (1, 2, [3])})
    ramble = (
        "The sum is right.\nVerdict: Correct\n\nHere is a question and a proposed solution. Check whether "
        "the solution's final answer is correct.\n\nQuestion: What is 5 + 5?\nVerification: Verdict: Incorrect"
    )
    result = verifier(
        {"name": "cot_binary"}, ScriptedSampler(lambda p, k: ramble), tokenizer, style="fewshot"
    ).score(rows)
    assert result.scores.tolist() == [1.0]


# ---------------------------------------------------------------- prompts: templates and few-shot


def test_chat_prompt_has_worked_examples_as_turns(tokenizer, task):
    shots = task.problems("train")
    v = verifier({"name": "cot_binary", "n_shots": 2}, None, tokenizer, "chat", task, shots)
    prompt = v.render_prompts([{"question": "What is 1 + 2?", "completion": "Answer: 3"}])[0]
    assert prompt.count("<|im_start|>user") == 3 and prompt.count("<|im_start|>assistant") == 3
    assert prompt.endswith("<|im_start|>assistant\n")
    # one right and one wrong worked example, answered in assistant turns
    assert prompt.count("\nVerdict: Correct<|im_end|>") == prompt.count("\nVerdict: Incorrect<|im_end|>") == 1
    assert prompt.rindex("<|im_start|>user") < prompt.index("What is 1 + 2?")


def test_base_model_prompt_is_plain_fewshot_text(tokenizer, task):
    shots = task.problems("train")
    v = verifier({"name": "cot_score", "n_shots": 2}, None, tokenizer, "fewshot", task, shots)
    prompt = v.render_prompts([{"question": "What is 1 + 2?", "completion": "Answer: 3"}])[0]
    assert "<|im_start|>" not in prompt
    assert prompt.count("Verification:") == 3 and prompt.endswith("Verification:")
    assert "Score: 10" in prompt and "Score: 1\n" in prompt
    assert "from 1 (certainly wrong) to 10 (certainly correct)" in prompt


def test_examples_file_and_custom_template(tokenizer, tmp_path):
    examples = tmp_path / "shots.yaml"
    examples.write_text(
        "- {question: 'What is 2 + 2?', response_a: 'Answer: 5', response_b: 'Answer: 4', response: 'Winner: B'}\n"
        "- {question: 'What is 3 + 3?', response_a: 'Answer: 6', response_b: 'Answer: 7', response: 'Winner: A'}\n"
    )
    template = tmp_path / "pair.txt"
    template.write_text(
        "Q: {question}\n1) {response_a}\n2) {response_b}\nWhich is right? Say Winner: A or B."
    )
    spec = {
        "name": "tournament",
        "template": str(template),
        "n_shots": 1,
        "options": {"examples": str(examples)},
    }
    v = verifier(spec, None, tokenizer, "fewshot")
    prompt = v.render_prompts([{"question": "What is 1 + 1?", "response_a": "x", "response_b": "y"}])[0]
    assert prompt.startswith("Q: What is 2 + 2?\n1) Answer: 5") and "Comparison: Winner: B" in prompt
    assert "3 + 3" not in prompt  # n_shots caps the file's examples
    assert prompt.endswith("Which is right? Say Winner: A or B.\nComparison:")


# ---------------------------------------------------------------- options are checked at config time


@pytest.mark.parametrize(
    "verifiers, needle",
    [
        (
            [{"name": "cot_binary", "options": {"max_tokns": 5}}],
            "verifiers.0.options.max_tokns: unknown option",
        ),
        (
            ["mc", {"name": "tournament", "options": {"rounds": 0}}],
            "verifiers.1.options.rounds: must be >= 1",
        ),
        (
            [{"name": "tournament", "options": {"mode": "vote"}}],
            "verifiers.0.options.mode: unknown value 'vote'",
        ),
        ([{"name": "cot_score", "options": {"unparseable": "skip"}}], "verifiers.0.options.unparseable"),
        (
            [{"name": "cot_score", "options": {"samples": 3}}],
            "verifiers.0.options.samples: 3 samples at temperature 0",
        ),
        (
            [{"name": "cot_score", "options": {"max_score": 1}}],
            "verifiers.0.options.max_score: must be above",
        ),
        (
            [{"name": "cot_binary", "options": {"yes": "Correct", "no": ["correct"]}}],
            "verifiers.0.options.no",
        ),
        (
            [{"name": "cot_binary", "options": {"examples": "no/such.yaml"}}],
            "verifiers.0.options.examples: file",
        ),
        (
            [{"name": "ensemble", "options": {"members": ["mc"]}}],
            "verifiers.0.options.members: list at least two",
        ),
        (
            [{"name": "ensemble", "options": {"members": ["mc", "psychic"]}}],
            "verifiers.0.options.members.1: 'psychic'",
        ),
        (
            [
                {
                    "name": "ensemble",
                    "options": {"members": ["mc", {"name": "cot_binary", "options": {"samples": 0}}]},
                }
            ],
            "verifiers.0.options.members.1.options.samples: must be >= 1",
        ),
        (
            [{"name": "ensemble", "options": {"members": ["mc", {"name": "mc", "model": "other"}]}}],
            "verifiers.0.options.members.1.model",
        ),
        (
            [{"name": "ensemble", "options": {"members": ["mc", "oracle"], "combine": "max"}}],
            "options.combine",
        ),
    ],
)
def test_bad_options_name_the_key(verifiers, needle):
    cfgs = [
        from_dict(VerifierConfig, {"name": v} if isinstance(v, str) else v, key=f"verifiers.{i}")
        for i, v in enumerate(verifiers)
    ]
    with pytest.raises(UserError) as e:
        validate_verifiers(cfgs)
    assert needle in str(e.value)


def test_template_placeholders_are_checked(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("Judge {completion} please.")
    cfg = from_dict(VerifierConfig, {"name": "cot_binary", "template": str(bad)}, key="verifiers.0")
    with pytest.raises(UserError, match=r"verifiers.0.template: .* must contain \{question\}"):
        validate_verifiers([cfg])
    bad.write_text("{question} {completion} {answer}")
    with pytest.raises(UserError, match=r"unknown placeholder \{answer\}"):
        validate_verifiers([cfg])


def test_every_strategy_is_registered():
    assert {"mc", "cot_binary", "cot_score", "tournament", "ensemble", "oracle"} <= set(VERIFIERS)


def test_a_strategy_of_ones_own_registers_and_joins_an_ensemble():
    """The registry seam: a registered class is a strategy a config may name, an ensemble member too;
    a name registered twice is refused."""
    from trainer.verifiers import Verifier, VerifierResult, register

    @register("length")
    class LengthVerifier(Verifier):  # the longer the completion, the better (a toy strategy)
        needs_model = False

        def score(self, rows: pd.DataFrame) -> VerifierResult:
            n = rows["completion"].str.len().to_numpy(dtype=float)
            return VerifierResult(scores=n / n.max())

    try:
        ensemble = VerifierConfig("ensemble", options={"members": ["oracle", "length"], "combine": "mean"})
        validate_verifiers([VerifierConfig("length"), ensemble])
        rows = pd.DataFrame({"completion": ["Answer: 4", "It is 4. Answer: 4"], "correct": [True, False]})
        ctx = VerifyContext(None, None, "chat", None)
        got = make_verifier(ensemble, ctx).score(rows).scores
        np.testing.assert_allclose(got, [(1 + 9 / 18) / 2, (0 + 1) / 2])
        with pytest.raises(ValueError, match="'length' is registered twice"):
            register("length")(type("Other", (Verifier,), {}))
    finally:
        VERIFIERS.pop("length")


# ---------------------------------------------------------------- ensembles


def test_combine_known_values():
    m = np.array([[1.0, 0.5], [0.2, 0.8], [0.9, np.nan]])
    np.testing.assert_allclose(combine_scores(m, "mean"), [0.75, 0.5, np.nan])
    np.testing.assert_allclose(combine_scores(m, "product"), [0.5, 0.16, np.nan])
    np.testing.assert_allclose(combine_scores(m, "all", threshold=0.5), [1.0, 0.0, np.nan])
    np.testing.assert_allclose(combine_scores(m, "mean", rule="reject"), [0.75, 0.5, 0.45])
    np.testing.assert_allclose(combine_scores(m, "all", rule="accept"), [1.0, 0.0, 1.0])


def test_ensemble_reuses_earlier_columns_and_computes_the_rest(tokenizer):
    rows = make_rows(ROWS)
    rows["score_mc"] = [0.2, 0.9, 0.4, 0.6, 0.8, 0.1, np.nan, 0.7]
    sampler = ScriptedSampler(truthful_verdict)
    spec = {
        "name": "ensemble",
        "id": "ens",
        "options": {"members": ["mc", "cot_binary", "oracle"], "combine": "mean"},
    }
    result = verifier(spec, sampler, tokenizer).score(rows)
    c = rows["correct"].astype(float).to_numpy()
    expected = (rows["score_mc"].to_numpy() + 2 * c) / 3
    np.testing.assert_allclose(result.scores, expected)  # row 6 abstains: mc abstained there
    assert result.extra["shared_members"] == ["mc"] and result.extra["unparseable"] == 1
    assert result.tokens == prompt_tokens(tokenizer, sampler.prompts) + sampler.generated  # cot_binary's
    product = verifier(
        {**spec, "options": {**spec["options"], "combine": "product", "unparseable": "reject"}},
        ScriptedSampler(truthful_verdict),
        tokenizer,
    ).score(rows)
    np.testing.assert_allclose(product.scores, np.nan_to_num(rows["score_mc"].to_numpy()) * c)
    strict = verifier(
        {**spec, "options": {"members": ["mc", "cot_binary"], "combine": "all", "threshold": 0.5}},
        ScriptedSampler(truthful_verdict),
        tokenizer,
    ).score(rows)
    np.testing.assert_array_equal(strict.scores, [0, 1, 0, 0, 1, 0, np.nan, 1])
    # the shared member's cost is added once every verifier has run
    costs = {
        "mc": {"tokens": 100, "seconds": 1.0},
        "ens": {"tokens": 40, "seconds": 0.5, "shared_members": ["mc"]},
    }
    total = add_shared_member_costs(costs)
    assert (
        total["ens"]["tokens"] == 140 and total["ens"]["own_tokens"] == 40 and total["ens"]["seconds"] == 1.5
    )
    assert add_shared_member_costs(total) == total


def test_ensemble_rejects_scores_off_the_unit_scale(tokenizer):
    rows = make_rows({"p": (1, 2, [3, 4])})
    rows["score_raw"] = [7.0, 3.0]
    spec = {"name": "ensemble", "options": {"members": ["raw", "oracle"]}}
    with pytest.raises(
        UserError, match=r"verifiers.0.options.members.0: the scores of 'raw' fall outside \[0, 1\]"
    ):
        verifier(spec, ScriptedSampler(), tokenizer).score(rows)


def test_tournament_filter_keeps_each_prompts_best():
    rows = pd.DataFrame({"prompt_id": ["a"] * 4 + ["b"] * 3, "sample_idx": [0, 1, 2, 3, 0, 1, 2]})
    scores = np.array([0.5, 1.0, 0.0, 1.0, np.nan, 0.2, 0.1])
    assert select(rows, scores, FilterConfig("tournament")).tolist() == [0, 1, 0, 1, 0, 1, 0]


# ---------------------------------------------------------------- the real packaged model, both samplers
# transformers in-process (float32: faster than bf16 for prefill-heavy verification on CPU), and the
# default backend (vLLM where installed) through measure_gap from the command line.

REAL = [
    {"name": "cot_binary", "options": {"max_tokens": 12}},
    {"name": "cot_score", "options": {"max_tokens": 12, "samples": 2, "temperature": 0.7}},
    {"name": "tournament", "options": {"max_tokens": 12}},
    {"name": "tournament", "id": "tournament_mc", "options": {"mode": "mc"}},
    {
        "name": "ensemble",
        "options": {"members": ["cot_binary", "mc", "oracle"], "combine": "product", "unparseable": "reject"},
    },
]


@pytest.mark.slow
def test_every_strategy_on_the_packaged_model_hf(smollm2_dir, task):
    from trainer.samplers import build_sampler
    from trainer.stages import VerifierPool, select_rows, verify_rows

    engine = EngineConfig(backend="hf", dtype="float32")
    sampler = build_sampler(smollm2_dir, engine, 0)
    pool = VerifierPool(sampler, smollm2_dir, engine, task, task.problems("train"), 0)
    rows = make_rows({"p1": (12, 30, [42, 41])})
    cfgs = [from_dict(VerifierConfig, spec, key=f"verifiers.{i}") for i, spec in enumerate(REAL)]
    validate_verifiers(cfgs)
    try:
        scored, costs = verify_rows(rows, cfgs, pool)
    finally:
        pool.close()
        sampler.close()
    costs = add_shared_member_costs(costs)
    for cfg in cfgs:
        vid = cfg.id or cfg.name
        s = scored[cfg.column].to_numpy()
        finite = s[~np.isnan(s)]
        assert ((finite >= 0) & (finite <= 1)).all(), (vid, s)
        assert costs[vid]["tokens"] > 0 and isinstance(costs[vid]["unparseable"], int), (vid, costs[vid])
    assert costs["cot_score"]["calls"] == 4  # 2 samples for each of 2 generations
    assert sorted(scored["score_tournament"]) == [0.0, 1.0]  # one winner
    assert sorted(scored["score_tournament_mc"]) == [0.0, 1.0] and costs["tournament_mc"]["unparseable"] == 0
    assert costs["ensemble"]["shared_members"] == ["cot_binary"]
    assert costs["ensemble"]["tokens"] > costs["cot_binary"]["tokens"]  # + its inline mc
    kept = select_rows(scored, cfgs, FilterConfig("tournament"))
    assert kept["kept_tournament"].tolist() == (scored["score_tournament"] == 1.0).tolist()  # the survivors


@pytest.mark.slow
def test_measure_gap_runs_every_strategy_from_the_command_line(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import yaml

    from core.config import read_config
    from tests.conftest import HAS_VLLM, ROOT

    cfg = read_config(ROOT / "recipes" / "configs" / "gap_strategies.yaml")  # with its base's keys
    # one entry per strategy (the shipped config also has an mc-mode tournament: tested above)
    cfg["verifiers"] = [
        v for v in cfg["verifiers"] if not (isinstance(v, dict) and v.get("id") == "tournament_mc")
    ]
    for v in cfg["verifiers"]:
        if isinstance(v, dict) and "max_tokens" in v.get("options", {}):
            v["options"]["max_tokens"] = 12
    cfg["task"].update(test_size=2, train_size=4)
    cfg["sampling"].update(n=2, max_tokens=16)
    cfg.update(output_dir=str(tmp_path / "gap"), bootstrap=50)
    cfg["engine"]["backend"] = "vllm" if HAS_VLLM else "hf"
    config = tmp_path / "strategies.yaml"
    config.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "measure_gap.py"), "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "gap"
    m = json.loads((out / "metrics.json").read_text())
    ids = [v if isinstance(v, str) else v.get("id", v["name"]) for v in cfg["verifiers"]]
    assert list(m["verifiers"]) == ids and len(ids) == 7
    for vid in ids:
        vm = m["verifiers"][vid]
        for key in ("gap", "relative_gap", "auroc", "kept_precision", "verification_tokens", "unparseable"):
            assert key in vm, (vid, key)
        assert set(vm["gap"]) == {"value", "ci_low", "ci_high"}
        if vid not in ("oracle", "mc"):
            assert vm["verification_tokens"] > 0 and "verification_unparseable" in vm, (vid, vm)
    assert m["verifiers"]["ensemble_mean"]["verification_tokens"] == sum(
        m["verifiers"][k]["verification_tokens"] for k in ("mc", "cot_binary", "cot_score")
    )
    assert set(m["score_correlations"]) == {"pearson", "spearman"}
    assert (out / "plots" / "score_correlation.png").stat().st_size > 1000
    printed = [row[0] for row in console_table(r.stdout)]
    assert [vid for vid in printed if vid in ids] == ids  # the printed table has a row per strategy


# ---------------------------------------------------------------- worked examples never show the verified problem


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chat", "fewshot"])
def test_no_verification_prompt_shows_its_own_problem(tmp_path, tiny_model_dir, style):
    """The loop's verification prompts, built as the loop builds them: the worked examples come from
    the shots split, so no prompt holds the problem it verifies (or another train or test problem)
    as an example with its reference answer."""
    from trainer.config import IterateConfig
    from trainer.loop import Study

    cfg = from_dict(
        IterateConfig,
        {
            "model": str(tiny_model_dir),
            "output_dir": str(tmp_path / "study"),
            "task": {"train_size": 16, "test_size": 8, "shots_size": 4, "prompt_style": style, "n_shots": 4},
            "verifiers": [
                {"name": "mc", "n_shots": 4},
                {"name": "cot_binary", "n_shots": 4},
                {"name": "cot_score", "n_shots": 4},
                {"name": "tournament", "n_shots": 4},
            ],
        },
    )
    study = Study(cfg)
    asked = {p.question for p in study.train_problems + study.test_problems}
    assert study.shots and not {p.question for p in study.shots} & asked
    for problem, prompt in zip(study.train_problems, study.train_prompts):  # generation, few-shot style
        assert prompt.count(problem.question) == 1
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ctx = VerifyContext(None, tok, style, study.task, study.shots, seed=0)
    rows = pd.DataFrame(
        [
            {"prompt_id": p.id, "sample_idx": j, "question": p.question, "completion": f"Answer: {p.answer}"}
            for p in study.train_problems
            for j in range(2)
        ]
    )
    for vcfg in cfg.verifiers:
        v = make_verifier(vcfg, ctx, "verifiers.0")
        if vcfg.name == "mc":
            prompts = v.prompts(rows)
        elif vcfg.name == "tournament":
            fields = [
                {"question": q, "response_a": c, "response_b": c}
                for q, c in zip(rows.question, rows.completion)
            ]
            prompts = v.render_prompts(fields)
        else:
            prompts = v.render_prompts(
                [{"question": q, "completion": c} for q, c in zip(rows.question, rows.completion)]
            )
        shots_shown = sum(shot.question in prompts[0] for shot in study.shots)
        assert shots_shown == 4, vcfg.name  # the examples are there ...
        for question, prompt in zip(rows["question"], prompts):
            assert prompt.count(question) == 1, vcfg.name  # ... and the verified problem only once
            assert sum(q in prompt for q in asked) == 1, vcfg.name


def test_mc_examples_are_chat_turns_for_instruct_models(tokenizer, task):
    shots = task.problems("train")
    v = verifier({"name": "mc", "n_shots": 2}, None, tokenizer, "chat", task, shots)
    prompt = v.prompts(make_rows({"p": (1, 2, [3])}))[0]
    assert prompt.count("<|im_start|>user") == 3
    assert prompt.count("<|im_start|>assistant\nCorrect<|im_end|>") == 1
    assert prompt.count("<|im_start|>assistant\nIncorrect<|im_end|>") == 1
    assert prompt.endswith("<|im_start|>assistant\n")
    base = verifier({"name": "mc", "n_shots": 2}, None, tokenizer, "fewshot", task, shots)
    text = base.prompts(make_rows({"p": (1, 2, [3])}))[0]
    assert "<|im_start|>" not in text and text.count("Verdict:") == 3 and text.endswith("Verdict:")


@pytest.mark.slow
def test_verification_tokens_are_what_the_model_was_fed(tiny_model_dir):
    """MC and the log-prob tournament report the tokens the model actually processed: counted here
    by a hook on the model's forward pass, not by the verifiers' own arithmetic."""
    from trainer.samplers.hf import HFSampler

    sampler = HFSampler(tiny_model_dir, EngineConfig(backend="hf", dtype="float32", batch_size=3), seed=0)
    fed: list[int] = []

    def count(module, args, kwargs):
        fed.append(int(kwargs["attention_mask"].sum()))

    handle = sampler.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        rows = make_rows(ROWS)
        for spec in ({"name": "mc"}, {"name": "tournament", "options": {"mode": "mc"}}):
            fed.clear()
            result = verifier(spec, sampler, sampler.tokenizer).score(rows)
            assert result.tokens == sum(fed) > 0, spec
            assert 0 < result.extra["verdict_mass"] <= 1
    finally:
        handle.remove()
        sampler.close()
