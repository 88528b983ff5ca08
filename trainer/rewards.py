"""mindgap's verifiers as reward functions for TRL's GRPOTrainer (`reward_funcs`).

    from trainer.rewards import verifier_reward
    reward = verifier_reward("majority", task, problems)                # no model needed
    reward = verifier_reward("mc", task, problems, judge=pool)          # the model's own P(Correct)
    GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=data)   # data: prompt, prompt_id

A reward is a callable with TRL's signature, `(prompts, completions, completion_ids=None, **kwargs)
-> list[float | None]`, where `kwargs` carries the dataset's other columns per completion; it reads
`prompt_id` (the key of `problems`, which holds each prompt's question and reference answer). The
rewards by name:

verifier  (mc, cot_binary, cot_score, tournament, ensemble, or any verifier config) the score that
          the verifier gives the completion, run on `judge` (a `trainer.stages.VerifierPool`, whose
          generator is the judging model); an abstention (NaN) is None, which TRL leaves out of the
          group's baseline and gives no advantage
majority  1 where the completion's extracted answer (the task's extractor) is its group's majority
          answer, else 0: TTRL's label; the group is the batch's completions of the same prompt, an
          answer-less completion does not vote and gets 0, a tie goes to the answer seen first
oracle    the task's checker (RLVR, the ceiling): 1 where the extracted answer is correct
random    Bernoulli(`rate`) per completion, the batch drawn from (`seed`, the step): the control,
          whose rate is the one the self-reward gives (GRPO sets it from the round's verification)

Each call also checks every completion against the task (whatever the reward), and keeps, on the
main process, one record per completion (`Reward.records`: step, prompt_id, answer, reward,
correct, tokens) so that a run can tell how often the reward agreed with the checker.

Under several processes, TRL calls the reward on every rank with that rank's completions; a group
may be split across ranks, so the reward gathers the batch, scores (a verifier: each rank its share
of whole prompts, since a tournament compares a prompt's completions with each other) and hands each
rank back its own rewards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.errors import UserError
from trainer.verifiers import VERIFIERS
from trainer.verifiers.base import VerifierConfig

if TYPE_CHECKING:
    from trainer.stages import VerifierPool

SELF_FREE = ("majority", "oracle", "random")  # rewards that need no judging model
REWARDS = (*SELF_FREE, *sorted(set(VERIFIERS) - {"oracle"}))


def majority_rewards(prompt_ids: list, answers: list) -> list[float]:
    """1.0 where a completion's answer is the majority answer among the completions of its prompt
    (None answers do not vote and get 0; a tie goes to the answer seen first), else 0.0."""
    winners: dict = {}
    for pid in dict.fromkeys(prompt_ids):
        votes = Counter(a for p, a in zip(prompt_ids, answers) if p == pid and a is not None)
        if votes:
            top = max(votes.values())
            winners[pid] = next(a for p, a in zip(prompt_ids, answers) if p == pid and votes.get(a) == top)
    return [float(a is not None and winners.get(p) == a) for p, a in zip(prompt_ids, answers)]


class Reward:
    """A reward function for TRL (see the module docstring); build it with `verifier_reward`."""

    def __init__(
        self,
        kind: str,
        task,
        problems: dict,
        verifier: VerifierConfig | None = None,
        judge: VerifierPool | None = None,
        rate: float | None = None,
        seed: int = 0,
        eos_ids: set[int] | None = None,
        share: Callable[[list], tuple[list, int, bool]] | None = None,
    ):
        self.kind, self.task, self.problems = kind, task, problems
        self.share = share  # a study's split of prompts over ranks (Study.share); else accelerate's
        self.verifier, self.judge, self.rate, self.seed = verifier, judge, rate, seed
        self.eos_ids = eos_ids or set()
        self.__name__ = kind if verifier is None else (verifier.id or verifier.name)  # TRL's metric name
        self.records: list[dict] = []
        self.calls = 0

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **kwargs):
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        if "prompt_id" not in kwargs:
            raise ValueError("verifier_reward: the dataset needs a prompt_id column (the keys of `problems`)")
        step = getattr(kwargs.get("trainer_state"), "global_step", self.calls)
        self.calls += 1
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        ids = completion_ids or [None] * len(texts)
        finished = [not (self.eos_ids and i and i[-1] not in self.eos_ids) for i in ids]
        mine = [
            {"prompt_id": str(p), "completion": t, "finished": f, "tokens": len(i) if i is not None else None}
            for p, t, f, i in zip(kwargs["prompt_id"], texts, finished, ids)
        ]
        # the whole batch, in rank order: TRL's rewards of rank r are the r-th slice of the gathered batch
        batch = gather_object([(state.process_index, mine)]) if state.num_processes > 1 else [(0, mine)]
        batch = sorted(batch, key=lambda x: x[0])
        rows = [row for _, part in batch for row in part]
        rows = self.checked(rows)
        scores = self.score(rows, step, state)
        start = sum(len(part) for rank, part in batch if rank < state.process_index)
        if state.is_main_process:
            self.records.extend(
                {
                    "step": int(step),
                    "prompt_id": r["prompt_id"],
                    "answer": r["answer"],
                    "reward": s if s is not None and np.isfinite(s) else None,
                    "correct": r["correct"],
                    "tokens": r["tokens"],
                }
                for r, s in zip(rows, scores)
            )
        out = scores[start : start + len(mine)]
        return [None if s is None or not np.isfinite(s) else float(s) for s in out]

    def checked(self, rows: list[dict]) -> list[dict]:
        """The rows with their answer and correctness under the task's checker."""
        for r in rows:
            problem = self.problems[r["prompt_id"]]
            r["answer"] = self.task.extract_answer(r["completion"], finished=r["finished"])
            r["correct"] = bool(self.task.check(r["answer"], problem))
        return rows

    def score(self, rows: list[dict], step: int, state) -> list[float | None]:
        if self.kind == "oracle":
            return [float(r["correct"]) for r in rows]
        if self.kind == "majority":
            return majority_rewards([r["prompt_id"] for r in rows], [r["answer"] for r in rows])
        if self.kind == "random":
            rng = np.random.default_rng([self.seed, int(step)])  # the same draw on every rank
            return [float(x) for x in rng.random(len(rows)) < self.rate]
        return self.verify(rows, state)

    def verify(self, rows: list[dict], state) -> list[float | None]:
        """The verifier's scores of every row, each rank scoring its share of whole prompts."""
        from accelerate.utils import gather_object

        from trainer.stages import verify_rows

        frame = pd.DataFrame(
            {
                "prompt_id": [r["prompt_id"] for r in rows],
                "sample_idx": pd.Series([r["prompt_id"] for r in rows])
                .groupby([r["prompt_id"] for r in rows])
                .cumcount(),
                "question": [self.problems[r["prompt_id"]].question for r in rows],
                "reference": [str(self.problems[r["prompt_id"]].answer) for r in rows],
                "completion": [r["completion"] for r in rows],
                "finish_reason": ["stop" if r["finished"] else "length" for r in rows],
                "answer": [r["answer"] for r in rows],
                "correct": [r["correct"] for r in rows],
            }
        )
        prompts = list(dict.fromkeys(frame["prompt_id"]))
        if self.share is not None:  # ranks that hold one engine together send it the same requests
            share, _, speaks = self.share(prompts)
        else:
            with state.split_between_processes(prompts) as share:
                share, speaks = list(share), True
        idx = [i for i, p in enumerate(frame["prompt_id"]) if p in set(share)]
        pairs = []
        if idx:
            scored, _ = verify_rows(frame.iloc[idx].reset_index(drop=True), [self.verifier], self.judge)
            pairs = list(zip(idx, scored[self.verifier.column].tolist())) if speaks else []
        if state.num_processes > 1:
            pairs = gather_object(pairs)
        by_row = dict(pairs)
        return [by_row[i] for i in range(len(rows))]


def verifier_reward(
    reward: str | VerifierConfig,
    task,
    problems: dict | list,
    judge: VerifierPool | None = None,
    *,
    rate: float | None = None,
    seed: int = 0,
    eos_ids: set[int] | None = None,
    share: Callable[[list], tuple[list, int, bool]] | None = None,
) -> Callable:
    """A TRL reward function (module docstring) for `reward`: a verifier's config or name (mc,
    cot_binary, ...: scored on `judge`), majority, oracle or random (at `rate`). `problems`: the
    task's problems (a list, or a dict by id) that the dataset's `prompt_id` column names. `eos_ids`:
    the token ids that end a completion (EOS, pad), so that a completion cut off at the token budget is
    read as unfinished (`extract_answer(finished=False)`); without them every completion counts as
    finished. `share`: how a verifier reward splits a batch's prompts over the ranks (a study's
    `Study.share`: ranks of one tensor-parallel engine score the same prompts); default: accelerate's
    even split."""
    if not isinstance(problems, dict):
        problems = {str(p.id): p for p in problems}
    if isinstance(reward, VerifierConfig):
        verifier, kind = reward, "verifier"
        if reward.name == "oracle":
            verifier, kind = None, "oracle"
    elif reward in SELF_FREE:
        verifier, kind = None, reward
    elif reward in VERIFIERS:
        verifier, kind = VerifierConfig(reward), "verifier"
    else:
        raise UserError(f"reward: unknown reward '{reward}'; choose one of {', '.join(REWARDS)}")
    if kind == "verifier" and judge is None and VERIFIERS[verifier.name].needs_model:
        raise ValueError(f"verifier_reward: the {verifier.name} reward needs a judge (a VerifierPool)")
    if kind == "random" and (rate is None or not 0 <= rate <= 1):
        raise ValueError(f"verifier_reward: the random reward needs a rate in [0, 1], got {rate}")
    return Reward(kind, task, problems, verifier, judge, rate, seed, eos_ids, share)


def open_judge(model_dir, engine, task, shots: list | None = None, seed: int = 0) -> VerifierPool:
    """A VerifierPool whose generator is `model_dir` on `engine` (an EngineConfig): the judge of a
    verifier reward outside a study. Close it (`pool.close(); pool.generator.close()`) when done."""
    from pathlib import Path

    from trainer.samplers import build_sampler
    from trainer.stages import VerifierPool

    sampler = build_sampler(Path(model_dir), engine, seed)
    return VerifierPool(sampler, Path(model_dir), engine, task, shots or [], seed)
