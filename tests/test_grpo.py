"""The `grpo` update rule (trainer/update/grpo.py) and mindgap's rewards for TRL (trainer/rewards.py):
each reward against a hand computation, what a round records from the rewards, the config's one-line
mistakes, the rewards in a plain TRL GRPOTrainer script, a verifier reward judged by a real model,
resuming from a TRL checkpoint left inside a round, and a study killed inside its GRPO round."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config import load_config
from core.errors import UserError
from eval.tasks import TaskConfig, build_task
from tests.conftest import ROOT
from trainer.config import CompareConfig, IterateConfig
from trainer.rewards import majority_rewards, verifier_reward
from trainer.update.grpo import reward_stats


@pytest.fixture(scope="module")
def arithmetic():
    task = build_task(TaskConfig(name="basic_arithmetic", train_size=3, test_size=1), seed=0)
    return task, task.problems("train")


def batch(problems, answers: list[list[str | None]]) -> tuple[list, list, list]:
    """TRL's arguments for groups of completions stating `answers` (None: no answer) per problem."""
    prompts, completions, ids = [], [], []
    for p, group in zip(problems, answers):
        for a in group:
            prompts.append(p.question)
            completions.append("I am not sure." if a is None else f"Let me compute. Answer: {a}")
            ids.append(str(p.id))
    return prompts, completions, ids


# ---------------------------------------------------------------- each reward by hand


def test_majority_reward_is_the_groups_majority_answer(arithmetic):
    task, problems = arithmetic
    a0, a1, a2 = (p.answer for p in problems)
    answers = [
        ["7", a0, "7", None],  # majority 7 (wrong): the wrong answer is rewarded
        [a1, "5", a1, "5"],  # a tie: the answer seen first wins
        [None, None, None, None],  # no votes: nothing is rewarded
    ]
    prompts, completions, ids = batch(problems, answers)
    reward = verifier_reward("majority", task, problems)
    got = reward(prompts, completions, prompt_id=ids)
    assert got == [1, 0, 1, 0] + [1, 0, 1, 0] + [0, 0, 0, 0]
    assert majority_rewards(["a", "b", "a", "b"], ["x", "y", "z", "y"]) == [1, 1, 0, 1]
    # the checker beside it: record by record, the completions stating the reference are correct
    assert [r["correct"] for r in reward.records] == [
        a == p.answer for p, g in zip(problems, answers) for a in g
    ]
    assert [r["answer"] for r in reward.records] == [a for g in answers for a in g]


def test_oracle_reward_is_the_tasks_checker(arithmetic):
    task, problems = arithmetic
    answers = [[p.answer, str(int(p.answer) + 1)] for p in problems]
    prompts, completions, ids = batch(problems, answers)
    assert verifier_reward("oracle", task, problems)(prompts, completions, prompt_id=ids) == [1, 0] * 3


def test_random_reward_draws_at_its_rate_per_step(arithmetic):
    task, problems = arithmetic
    prompts, completions, ids = batch(problems, [["1"] * 200] * 3)

    class State:
        global_step = 0

    reward = verifier_reward("random", task, problems, rate=0.3, seed=5)
    first = reward(prompts, completions, prompt_id=ids, trainer_state=State)
    again = verifier_reward("random", task, problems, rate=0.3, seed=5)(
        prompts, completions, prompt_id=ids, trainer_state=State
    )
    State.global_step = 1
    later = reward(prompts, completions, prompt_id=ids, trainer_state=State)
    assert set(first) == {0.0, 1.0} and first == again and first != later  # seeded by (seed, step)
    assert abs(np.mean(first) - 0.3) < 0.05  # 600 draws: 4 standard errors
    assert (
        verifier_reward("random", task, problems, rate=0.0)(prompts, completions, prompt_id=ids)
        == [0.0] * 600
    )


def test_truncated_completions_state_no_answer_for_the_reward(arithmetic):
    """A completion whose last token is not an EOS was cut off at the budget: a trailing number is
    no stated answer (`extract_answer(finished=False)`), so majority and oracle give it 0."""
    task, problems = arithmetic
    p = problems[0]
    completions = [f"so the total is {p.answer}"] * 2
    reward = verifier_reward("oracle", task, problems, eos_ids={2})
    got = reward([p.question] * 2, completions, completion_ids=[[5, 2], [5, 6]], prompt_id=[str(p.id)] * 2)
    assert got == [1.0, 0.0]


def test_unknown_reward_and_missing_settings():
    with pytest.raises(UserError, match="reward: unknown reward 'vote'"):
        verifier_reward("vote", None, [])
    with pytest.raises(ValueError, match="needs a rate"):
        verifier_reward("random", None, [])
    with pytest.raises(ValueError, match="needs a judge"):
        verifier_reward("mc", None, [])


def test_reward_stats_by_hand():
    """Two steps of two groups: means, the flat groups, the agreement of reward and checker."""
    records = [
        # step 0, p: rewards vary; agree (1, correct), agree (0, wrong)
        {"step": 0, "prompt_id": "p", "reward": 1.0, "correct": True, "tokens": 4},
        {"step": 0, "prompt_id": "p", "reward": 0.0, "correct": False, "tokens": 6},
        # step 0, q: flat rewards of 1; one agrees, one does not
        {"step": 0, "prompt_id": "q", "reward": 1.0, "correct": True, "tokens": 5},
        {"step": 0, "prompt_id": "q", "reward": 1.0, "correct": False, "tokens": 5},
        # step 1, p: an abstention (None) and a 0.8 on a wrong answer (disagrees)
        {"step": 1, "prompt_id": "p", "reward": None, "correct": True, "tokens": 8},
        {"step": 1, "prompt_id": "p", "reward": 0.8, "correct": False, "tokens": 2},
    ]
    s = reward_stats(records, n_boot=200)
    scored = [1.0, 0.0, 1.0, 1.0, 0.8]
    assert s["reward"] == pytest.approx(np.mean(scored)) and s["reward_std"] == pytest.approx(np.std(scored))
    assert s["zero_std_groups"] == pytest.approx(2 / 3)  # q's group, and step 1's single scored reward
    assert s["groups"] == 3 and s["rollouts"] == 6 and s["abstained"] == 1
    assert s["rollout_accuracy"] == pytest.approx(3 / 6)
    assert s["reward_accuracy"]["value"] == pytest.approx(np.mean([1.0, 0.5, 0.0]))  # per group, then mean
    assert (
        0
        <= s["reward_accuracy"]["ci_low"]
        <= s["reward_accuracy"]["value"]
        <= s["reward_accuracy"]["ci_high"]
    )
    assert s["tokens_generated"] == 30
    # right (1, 1) over wrong (0, 1, 0.8): 5 of the 6 pairs ordered, the tie counts 1/2
    assert s["reward_auroc"] == pytest.approx((1 + 0.5 + 1) * 2 / 6)


# ---------------------------------------------------------------- the config


@pytest.mark.parametrize(
    "argv, line",
    [
        (
            ["--update.grpo.reward", "vote"],
            "update.grpo.reward: unknown reward 'vote'; choose one of majority",
        ),
        (["--update.grpo.batch_size", "6"], "update.grpo.batch_size: a step's 6 completions"),
        (["--update.grpo.batch_size", "6"], "set update.grpo.batch_size to a multiple of 4"),
        (
            ["--sampling.n", "1"],
            "sampling.n: GRPO compares a prompt's completions with each other, so it needs groups of at least 2, got 1; raise it or set update.grpo.num_generations",
        ),
        (["--update.grpo.num_generations", "1"], "update.grpo.num_generations: GRPO compares"),
        (["--sampling.temperature", "0"], "sampling.temperature: GRPO samples its groups"),
        (["--update.grpo.trl", "{beta: 0.1}"], "update.grpo.trl.beta: set by mindgap"),
        (["--update.grpo.trl", "{num_generation: 4}"], "TRL's GRPOConfig has no field 'num_generation'"),
        (["--update.grpo.steps", "0"], "update.grpo.steps: must be >= 1"),
        (["--update.grpo.vllm", "maybe"], "update.grpo.vllm: unknown value"),
        (["--update.grpo.reward", "mc2"], "or the id of one of `verifiers`"),
        (["--update.grpo.reward", "ensemble"], "update.grpo.reward: ensemble with its default options is no"),
    ],
)
def test_grpo_mistakes_are_one_line(argv, line):
    with pytest.raises(UserError) as e:
        load_config(IterateConfig, ["--update.name", "grpo", *argv])
    assert line in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_reward_names_a_verifier_of_the_study_by_its_id():
    from trainer.update import UpdateConfig, make_rule
    from trainer.update.grpo import OnlineContext

    argv = ["--update.name", "grpo", "--update.grpo.reward", "strict"]
    verifiers = "[mc, {name: mc, id: strict, options: {yes: Right, no: Wrong}}]"
    cfg = load_config(IterateConfig, [*argv, "--verifiers", verifiers])
    rule = make_rule(cfg.update, cfg.verifiers[0], cfg.filter)
    assert isinstance(cfg.update, UpdateConfig) and rule.online and rule.needs_judge()
    rule.context = OnlineContext(None, {}, cfg.sampling, cfg.engine, cfg.verifiers, judge=None)
    assert rule.reward_verifier() is cfg.verifiers[1]


def test_rollout_settings_default_to_sampling():
    from trainer.update.grpo import Rollouts

    cfg = load_config(
        IterateConfig, ["--update.name", "grpo", "--sampling.n", "8", "--update.grpo.top_p", "0.9"]
    )
    r = Rollouts.of(cfg.update.grpo, cfg.sampling)
    assert (r.num_generations, r.max_completion_length, r.temperature, r.top_p) == (
        8,
        cfg.sampling.max_tokens,
        cfg.sampling.temperature,
        0.9,
    )


def test_the_update_rules_comparison_has_the_grpo_conditions():
    cfg = load_config(
        CompareConfig, ["--config", str(ROOT / "recipes" / "configs" / "compare_update_rules.yaml")]
    )
    studies = {name: runs[0] for name, runs in cfg.studies().items()}
    for reward in ("mc", "majority", "oracle", "random"):
        study = studies[f"grpo_{reward}"]
        assert study.update.name == "grpo" and study.update.grpo.reward == reward
        assert [v.name for v in study.verifiers] == ["mc"]  # the round-start record: MC's gap, the rate
    assert {cfg.controls().get(f"grpo_{r}") for r in ("mc", "majority", "oracle")} == {"grpo_random"}


# ---------------------------------------------------------------- with a model (tiny Llama)


@pytest.mark.slow
def test_rewards_in_a_plain_trl_grpo_script(tiny_model_dir, tmp_path):
    """tests/scripts/grpo_plain_trl.py (the README's example): a plain GRPOTrainer with the majority
    reward trains 2 steps; TRL's logged reward per step is the mean of the reward's records."""
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "scripts" / "grpo_plain_trl.py"),
            str(tiny_model_dir),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    records = pd.DataFrame(result["records"])
    steps = [h for h in result["log_history"] if "loss" in h]
    assert len(steps) == 2 and len(records) == 2 * 4  # 4 completions a step: 1 prompt's group of 4
    for step, h in zip(sorted(records["step"].unique()), steps):
        mine = records[records["step"] == step]
        assert h["rewards/majority/mean"] == pytest.approx(mine["reward"].mean())
        assert list(mine["reward"]) == majority_rewards(list(mine["prompt_id"]), list(mine["answer"]))


@pytest.mark.slow
def test_a_verifier_reward_is_the_verifiers_score_on_the_judge(tiny_model_dir, arithmetic):
    """The mc reward of a batch equals what the MC verifier scores the same rows on the same model."""
    from trainer.rewards import open_judge
    from trainer.samplers.base import EngineConfig
    from trainer.stages import verify_rows
    from trainer.verifiers.base import VerifierConfig

    task, problems = arithmetic
    prompts, completions, ids = batch(problems, [["3", None], ["4", "5"], [problems[2].answer, "1"]])
    judge = open_judge(tiny_model_dir, EngineConfig(backend="hf", dtype="float32"), task)
    try:
        got = verifier_reward("mc", task, problems, judge)(prompts, completions, prompt_id=ids)
        rows = pd.DataFrame(
            {
                "prompt_id": ids,
                "sample_idx": [0, 1] * 3,
                "question": [problems[int(i.split("-")[1])].question for i in ids],
                "completion": completions,
                "correct": False,
            }
        )
        scored, _ = verify_rows(rows, [VerifierConfig("mc")], judge)
    finally:
        judge.close()
        judge.generator.close()
    assert got == pytest.approx(scored["score_mc"].tolist()) and all(0 <= g <= 1 for g in got)


def grpo_options(**kw):
    from trainer.update.grpo import GRPOOptions

    return GRPOOptions(**{"steps": 2, "save_steps": 1, "batch_size": 4, "bf16": False, **kw})


@pytest.mark.slow
def test_grpo_resumes_from_a_trl_checkpoint_left_in_the_round(tiny_model_dir, arithmetic, tmp_path):
    """grpo_train twice: uninterrupted, and from the step-1 TRL checkpoint the first left in its
    steps folder (as a run killed after it would): the same losses, rewards and weights (CPU fp32)."""
    from transformers import TrainerCallback

    from trainer.update.grpo import Rollouts, grpo_train

    task, problems = arithmetic
    prompts = pd.DataFrame(
        {"prompt_id": [str(p.id) for p in problems], "prompt": [p.question for p in problems]}
    )
    rollouts = Rollouts(num_generations=4, max_completion_length=8, temperature=1.0, top_p=1.0)
    kept = tmp_path / "kept"

    class KeepFirst(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            folder = Path(args.output_dir)
            if state.global_step == 2 and not kept.exists():
                shutil.copytree(folder, kept)  # the steps folder as a kill during step 2 leaves it

    def train(out, steps_dir, callbacks=()):
        reward = verifier_reward("oracle", task, problems, seed=0)
        return grpo_train(
            prompts,
            tiny_model_dir,
            out,
            grpo_options(),
            rollouts,
            reward,
            0,
            steps_dir,
            callbacks=list(callbacks),
        )

    ref = train(tmp_path / "ref", tmp_path / "steps_ref", [KeepFirst()])
    assert not (tmp_path / "steps_ref").exists() and (tmp_path / "ref" / "config.json").is_file()
    assert (kept / "checkpoint-1" / "rewards.json").is_file() and not (kept / "checkpoint-2").exists()
    again = train(tmp_path / "again", kept)
    assert ref["resumed_from"] is None and again["resumed_from"] == 1 and again["steps"] == ref["steps"] == 2
    for key in (
        "loss_history",
        "rollout_rewards",
        "reward",
        "rollouts",
        "tokens_generated",
        "weights_checksum",
    ):
        assert again[key] == ref[key], key


# ---------------------------------------------------------------- GRPO in the loop


@pytest.mark.slow
def test_a_grpo_study_killed_inside_its_round_resumes_from_its_trl_checkpoint(tmp_path, tiny_model_dir):
    """A 1-round study with `--update.name grpo` and the model's own MC verdict as the reward (judged by
    the round's starting model on the study's engine), killed -9 once TRL's step-1 checkpoint is in the
    round, then the same command: it resumes at step 1, finishes, and the round records its rewards
    in metrics.jsonl and report.md (the uninterrupted run's numbers: the test above)."""
    from tests.helpers import markdown_tables
    from tests.test_iterate import kill, launch, run, study_args, wait_for

    out = tmp_path / "study"
    args = study_args(tiny_model_dir, out, rounds=1) + [
        "--engine.dtype", "float32",
        "--task.train_size", "4",
        "--sampling.max_tokens", "8",
        "--eval_sampling.max_tokens", "8",
        "--update.name", "grpo",
        "--update.grpo.reward", "mc",
        "--update.grpo.steps", "2",
        "--update.grpo.save_steps", "1",
        "--update.grpo.batch_size", "8",
        "--update.grpo.bf16", "false",
    ]  # fmt: skip
    log = tmp_path / "killed.log"
    proc = launch(args, log)
    wait_for(proc, out / "round_001" / "grpo_steps" / "checkpoint-1" / "rewards.json", log)
    kill(proc)
    assert not (out / "round_001" / "grpo.json").exists()
    run(args)
    stats = json.loads((out / "round_001" / "grpo.json").read_text())
    assert stats["resumed_from"] == 1 and stats["steps"] == 2 and len(stats["loss_history"]) == 2
    assert not (out / "round_001" / "grpo_steps").exists()
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1]["train"]
    assert train["rule"] == "grpo" and train["grpo_prompts"] == 4 and train["sampled"] == 16
    assert train["grpo_tokens_generated"] == 2 * 8 * 8  # 2 steps of 8 rollouts of 8 tokens (never an EOS)
    assert train["grpo_reward"] == pytest.approx(stats["reward"]) and 0 <= train["grpo_reward"] <= 1
    assert train["grpo_kl"] is None and train["grpo_entropy"] > 0 and train["grpo_train_tokens"] > 0
    assert set(train["grpo_reward_accuracy"]) == {"value", "ci_low", "ci_high"}
    table, _ = markdown_tables((out / "report.md").read_text())
    assert table[1]["reward (std)"] == f"{train['grpo_reward']:.3f} ({train['grpo_reward_std']:.3f})"
    assert table[1]["tokens generated"] == "128"


@pytest.mark.slow
def test_grpo_on_two_gloo_ranks_stays_in_sync_and_saves_once(tiny_model_dir, tmp_path):
    """Two GRPO steps under `accelerate launch` on two CPU processes, a step's one group of 4 rollouts
    split 2 and 2 over the ranks: the reward is drawn over the gathered group (each rollout recorded
    once, its reward the seeded draw by hand), the ranks' weights move and agree (DDP), only the main
    process writes the checkpoint, and the trained model is freed once the stage returns."""
    from tests.test_distill import check_checkpoint, launch

    results = launch("cpu_2proc.yaml", tiny_model_dir, tmp_path, "lora", rule="grpo")
    assert [(r["round"], r["rank"]) for r in results] == [(0, 0), (0, 1)]
    rank0, rank1 = results
    assert rank0["stats"]["world_size"] == 2 and rank0["stats"]["steps"] == 2
    records = pd.DataFrame(rank0["stats"]["rollout_rewards"])
    assert len(records) == 2 * 4 and records.groupby("step")["prompt_id"].nunique().tolist() == [1, 1]
    for step, group in records.groupby("step"):  # the random reward at 0.5, seed 0: [0 1 1 1], [0 0 0 0]
        draw = np.random.default_rng([0, int(step)]).random(4) < 0.5
        assert group["reward"].tolist() == draw.astype(float).tolist(), step
    (start0, end0), (start1, end1) = rank0["own_checksums"], rank1["own_checksums"]
    assert start0 == start1 and end0 != start0, "the first step's rewards differ: the weights must move"
    assert end0 == pytest.approx(end1, rel=0, abs=1e-9), "the ranks' weights drifted apart (no DDP sync)"
    assert end0 == pytest.approx(rank0["stats"]["weights_checksum"], abs=1e-6)
    assert (rank0["saves"], rank1["saves"]) == (1, 0)
    assert rank0["model_freed"] and rank1["model_freed"]  # trainer.memory.forget_import_tracebacks
    assert not (tmp_path / "steps_0").exists()
    check_checkpoint(tmp_path / "round_0" / "checkpoint")


def test_the_grpo_launch_config_loads():
    """launch/grpo_zero2_study.yaml: a full GRPO fine-tune whose rollouts run on TRL's vLLM on GPUs."""
    cfg = load_config(IterateConfig, ["--config", str(ROOT / "launch" / "grpo_zero2_study.yaml")])
    assert cfg.update.name == "grpo" and cfg.update.grpo.method == "full" and cfg.update.grpo.vllm == "auto"
