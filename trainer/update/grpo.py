"""`grpo`: online RL from the model's own verifier (TRL GRPOTrainer).

A round is `steps` GRPO optimizer steps on the train prompts from the round's starting checkpoint:
each step TRL samples `num_generations` completions of a few prompts (a group each) with the policy
as it is now, scores them with the reward, and moves the policy toward the completions that score
above their group's mean (GRPO, Shao et al. 2024; with `beta` > 0 a KL term to the starting model).
Then the round's held-out evaluation runs as for every rule. The rewards (`reward`, trainer/rewards.py):

- a verifier (mc, cot_binary, cot_score, tournament, ...; a verifier of the study's `verifiers`
  with that id or name, with its options, else the strategy's defaults): self-rewarding RL;
- `majority`: the group's majority answer is the label (TTRL, arXiv 2504.16084; SRT);
- `oracle`: the task's checker (RLVR: the ceiling);
- `random`: Bernoulli at the rate the self-reward gives (the control, as RLVR with spurious rewards).

How the rule relates to the loop's stages, plainly:

1. The loop still samples the train prompts once at the start of the round with mindgap's engine,
   verifies and filters them (as for SFT and DPO). The rule does not train on those samples: it
   generates its own rollouts inside TRL. That pass records what every rule's round records (train
   accuracy, kept precision, the gap on the train prompts: the model's self-verification at the
   round's start), so the columns of a comparison mean the same under every rule, and it gives the
   random control its rate: the mean score of the first verifier on those samples (NaN scores left
   out), i.e. the reward a completion gets on average from the self-reward the control stands for.
2. The judge of a verifier reward is the model as it was at the round's start (the checkpoint the
   round started from, held by mindgap's engine), frozen for the round. Judging with the moving
   policy would let it learn to please its own drifting verdicts within a round (reward hacking
   against itself), and would need the judge's weights reloaded every step; a frozen judge is the
   round-level self-improvement of the paper: generation moves, verification is the round's. The
   next round judges with the model this round trained.
3. Generation happens in TRL: transformers' `generate` on CPU (and by default on GPU); with
   `vllm: true` (or `auto` on a GPU whose engine is vLLM) TRL's colocated vLLM engine, which is
   another engine than mindgap's (TRL's own sampling settings: `temperature`, `top_p`, the token
   budget). The trained checkpoint reaches mindgap's engine as every rule's does: a plain HF
   checkpoint (LoRA merged) in the round folder, loaded for the held-out evaluation.
4. Resume: TRL writes a checkpoint (weights or adapter, optimizer, scheduler, RNG states) every
   `save_steps` steps into the round's `grpo_steps/`, with the reward's records so far; a run killed
   in the round resumes from the last one (TRL's resume_from_checkpoint) and loses at most the steps
   since. The folder is deleted when the round's checkpoint is written.
"""

from __future__ import annotations

import gc
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.config import Problems, knob
from core.errors import UserError
from core.io import read_json, write_json
from trainer.training import (
    SET_BY_MINDGAP,
    TrainingOptions,
    check_options,
    check_trl_fields,
    environ,
    launch_env,
    load_tokenizer,
    lora_config,
    numel,
    release,
    save_checkpoint,
    single_bos,
    trainer_settings,
    weights_checksum,
)
from trainer.update.base import UpdateRule

# GRPOConfig fields mindgap sets itself; `update.grpo.trl` may pass any other through.
_SET_BY_MINDGAP = SET_BY_MINDGAP | {
    "beta", "num_generations", "max_completion_length", "temperature", "top_p", "max_steps", "save_steps",
    "use_vllm", "num_train_epochs", "save_only_model", "save_total_limit",
}  # fmt: skip

STEPS_DIR = "grpo_steps"  # TRL's checkpoints inside a round, while it trains
VLLM = ("auto", "true", "false")

# TRL's per-step metrics that a round records (the mean over the steps, and per step)
_METRICS = {
    "loss": "loss",
    "reward_trl": "reward",
    "entropy": "entropy",
    "kl": "kl",
    "completion_length": "completions/mean_length",
    "clipped_ratio": "completions/clipped_ratio",
}


@dataclass
class GRPOOptions(TrainingOptions):
    """Online RL on the train prompts from the model's own reward (TRL GRPO)."""

    reward: str = knob(
        "mc",
        "what scores a rollout: a verifier (mc, cot_binary, cot_score, tournament, ensemble; one of "
        "`verifiers` by id or name, else the strategy's defaults), majority, oracle or random",
    )
    steps: int = knob(8, "GRPO optimizer steps per round")
    learning_rate: float = knob(2e-5, "peak learning rate")
    beta: float = knob(
        0.0, "KL coefficient against the round's starting model (0, TRL's default: no reference)"
    )
    num_generations: int | None = knob(None, "completions per prompt (a group); null: sampling.n")
    max_completion_length: int | None = knob(None, "tokens per rollout at most; null: sampling.max_tokens")
    temperature: float | None = knob(None, "rollout temperature; null: sampling.temperature")
    top_p: float | None = knob(None, "rollout nucleus sampling; null: sampling.top_p")
    batch_size: int = knob(8, "completions per device and micro-batch")
    grad_accum: int = knob(
        1, "micro-batches per optimizer step (a step: batch_size x grad_accum x ranks completions)"
    )
    save_steps: int = knob(
        4, "a TRL checkpoint every this many steps inside the round (a killed run resumes there); 0: none"
    )
    vllm: str = knob(
        "auto",
        "auto | true | false: rollouts on TRL's colocated vLLM (auto: on a GPU where engine.backend is vllm), "
        "else transformers' generate",
    )
    trl: dict = knob(
        factory=dict,
        help="any other field of TRL's GRPOConfig, passed through (e.g. {loss_type: grpo, scale_rewards: none})",
    )

    def validate(self, key: str) -> None:
        problems = Problems()
        check_options(self, key, problems)
        if self.beta < 0:
            problems.add(f"{key}.beta: must be >= 0, got {self.beta}")
        if self.steps < 1:
            problems.add(f"{key}.steps: must be >= 1, got {self.steps}")
        if self.save_steps < 0:
            problems.add(
                f"{key}.save_steps: must be >= 0 (0: no checkpoints inside a round), got {self.save_steps}"
            )
        if self.max_completion_length is not None and self.max_completion_length < 1:
            problems.add(f"{key}.max_completion_length: must be >= 1, got {self.max_completion_length}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            problems.add(f"{key}.top_p: must be in (0, 1], got {self.top_p}")
        if str(self.vllm).lower() not in VLLM:
            problems.add(f"{key}.vllm: unknown value {self.vllm!r}; choose auto, true or false")
        with problems.check():
            check_grpo_trl_fields(self.trl, f"{key}.trl")
        problems.raise_any()


def check_grpo_trl_fields(extra: dict, key: str) -> None:
    """`extra` names only fields of TRL's GRPOConfig that mindgap does not set itself."""
    from trl import GRPOConfig

    check_trl_fields(extra, key, GRPOConfig, _SET_BY_MINDGAP, "update.grpo")


@dataclass
class Rollouts:
    """The rollout settings of a round, from `update.grpo` where set, else from `sampling`."""

    num_generations: int
    max_completion_length: int
    temperature: float
    top_p: float

    @classmethod
    def of(cls, opts: GRPOOptions, sampling) -> Rollouts:
        pick = lambda own, study: study if own is None else own  # noqa: E731
        return cls(
            pick(opts.num_generations, sampling.n),
            pick(opts.max_completion_length, sampling.max_tokens),
            pick(opts.temperature, sampling.temperature),
            pick(opts.top_p, sampling.top_p),
        )


def check_rollouts(opts: GRPOOptions, sampling, key: str, world_size: int = 1) -> None:
    """Rollout settings TRL accepts: groups of >= 2 samples at a temperature > 0, and a step's
    completions (batch_size x grad_accum x ranks) made of whole groups."""
    r = Rollouts.of(opts, sampling)
    study_key = {"num_generations": "sampling.n", "max_completion_length": "sampling.max_tokens"}

    def where(name: str) -> str:  # the key that set a rollout setting
        return f"{key}.{name}" if getattr(opts, name) is not None else study_key.get(name, f"sampling.{name}")

    if r.num_generations < 2:
        hint = "" if opts.num_generations is not None else f" or set {key}.num_generations"
        raise UserError(
            f"{where('num_generations')}: GRPO compares a prompt's completions with each other, so it needs "
            f"groups of at least 2, got {r.num_generations}; raise it{hint}"
        )
    if r.temperature <= 0:
        hint = "" if opts.temperature is not None else f" or set {key}.temperature"
        raise UserError(
            f"{where('temperature')}: GRPO samples its groups, so it needs a temperature > 0, got "
            f"{r.temperature:g}; raise it (e.g. 1.0){hint}"
        )
    per_step = opts.batch_size * opts.grad_accum * world_size
    if per_step % r.num_generations:
        multiple = r.num_generations // int(np.gcd(r.num_generations, opts.grad_accum * world_size))
        ranks = f" x {world_size} ranks" if world_size > 1 else ""
        raise UserError(
            f"{key}.batch_size: a step's {per_step} completions (batch_size {opts.batch_size} x grad_accum "
            f"{opts.grad_accum}{ranks}) must be whole groups of {r.num_generations} "
            f"({where('num_generations')}); set {key}.batch_size to a multiple of {multiple}"
        )


# ---------------------------------------------------------------- the rule


@dataclass
class OnlineContext:
    """What an online rule reads from the study beside its options (trainer/loop.py gives it)."""

    task: Any  # eval.tasks.Task
    problems: dict  # prompt_id -> Problem (the train split)
    sampling: Any  # SamplingConfig: the rollout settings an option leaves unset
    engine: Any  # EngineConfig: whether rollouts may run on vLLM
    verifiers: list  # the study's VerifierConfigs (a verifier reward is looked up there first)
    judge: Any  # Callable[[Path], VerifierPool]: the study's verifiers on the given checkpoint
    share: Any = None  # Callable[[list], (share, group, speaks)]: this rank's share of items to verify


class GRPORule(UpdateRule):
    name = "grpo"
    stage = "grpo"
    options = GRPOOptions
    online = True

    context: OnlineContext | None = None

    @classmethod
    def check_study(cls, opts: GRPOOptions, study, key: str) -> None:
        from trainer.rewards import REWARDS, SELF_FREE
        from trainer.verifiers import check_verifier
        from trainer.verifiers.base import VerifierConfig

        ids = [v.id or v.name for v in study.verifiers]
        if opts.reward not in REWARDS and opts.reward not in ids:
            raise UserError(
                f"{key}.reward: unknown reward '{opts.reward}'; choose one of {', '.join(REWARDS)}, or the "
                "id of one of `verifiers`"
            )
        if opts.reward not in SELF_FREE and opts.reward not in ids:
            try:
                check_verifier(VerifierConfig(opts.reward), "verifier")
            except UserError as e:
                raise UserError(
                    f"{key}.reward: {opts.reward} with its default options is no verifier ({e}); list it in "
                    "`verifiers` with its options and an id, and name that id here"
                ) from None
        check_rollouts(opts, study.sampling, key)
        if opts.reward == "random" and not study.verifiers:
            raise UserError(
                f"{key}.reward: random takes its rate from the first verifier; list one in `verifiers`"
            )

    def needs_judge(self) -> bool:
        from trainer.rewards import SELF_FREE

        return self.opts.reward not in SELF_FREE

    def training_data(self, rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
        prompts = rows.drop_duplicates("prompt_id")[["prompt_id", "prompt"]].reset_index(drop=True)
        return prompts, {"grpo_prompts": len(prompts)}

    def nothing_to_train(self, rows: pd.DataFrame, counts: dict) -> str:
        return "there are no train prompts to roll out; raise task.train_size"

    def reward_rate(self, rows: pd.DataFrame) -> float:
        """The random control's rate: the first verifier's mean score on the round's train samples."""
        scores = rows[self.verifier.column].to_numpy(dtype=float)
        scores = scores[np.isfinite(scores)]
        return float(np.clip(scores.mean(), 0, 1)) if len(scores) else 0.0

    def reward_verifier(self):
        """The verifier config of a verifier reward: the study's of that id or name, else the defaults."""
        from trainer.verifiers.base import VerifierConfig

        for v in self.context.verifiers:
            if (v.id or v.name) == self.opts.reward:
                return v
        for v in self.context.verifiers:
            if v.name == self.opts.reward and v.id is None:
                return v
        return VerifierConfig(self.opts.reward)

    def make_reward(self, rows: pd.DataFrame, prev: Path, seed: int, tokenizer):
        from trainer.rewards import SELF_FREE, verifier_reward

        ctx = self.context
        eos = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
        if self.opts.reward in SELF_FREE:
            rate = self.reward_rate(rows) if self.opts.reward == "random" else None
            return verifier_reward(
                self.opts.reward, ctx.task, ctx.problems, rate=rate, seed=seed, eos_ids=eos
            )
        judge = ctx.judge(prev)
        return verifier_reward(
            self.reward_verifier(), ctx.task, ctx.problems, judge, seed=seed, eos_ids=eos, share=ctx.share
        )

    def train(
        self, rows: pd.DataFrame, prev: Path, out: Path, seed: int, callbacks: list | None = None
    ) -> tuple[Path, dict]:
        if self.context is None:
            raise RuntimeError("GRPORule.train: the loop gives an online rule its context first")
        prompts, _ = self.training_data(rows, seed)
        prompts["question"] = [self.context.problems[str(p)].question for p in prompts["prompt_id"]]
        rollouts = Rollouts.of(self.opts, self.context.sampling)
        tokenizer = load_tokenizer(prev)
        reward = self.make_reward(rows, prev, seed, tokenizer)
        stats = grpo_train(
            prompts,
            prev,
            out,
            self.opts,
            rollouts,
            reward,
            seed,
            steps_dir=Path(out).parent / STEPS_DIR,
            use_vllm=self.use_vllm(),
            callbacks=callbacks,
            key=self.key,
        )
        if self.opts.reward == "random":
            stats["random_rate"] = reward.rate
        return out, stats

    def use_vllm(self) -> bool:
        import torch

        choice = str(self.opts.vllm).lower()
        if choice != "auto":
            return choice == "true"
        from trainer.samplers import resolve_backend

        return torch.cuda.is_available() and resolve_backend(self.context.engine.backend) == "vllm"

    def record(self, stats: dict) -> dict:
        return {f"grpo_{k}": stats.get(k) for k in RECORDED}


RECORDED = (
    "reward", "reward_std", "zero_std_groups", "reward_accuracy", "reward_auroc", "rollout_accuracy",
    "loss", "entropy", "kl", "steps", "tokens_generated", "train_tokens", "seconds", "random_rate",
)  # fmt: skip


# ---------------------------------------------------------------- training


def reward_stats(records: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """What a round records of its rewards (one record per rollout, `Reward.records`): the mean and
    standard deviation of the rewards, the share of groups (a step's rollouts of one prompt) whose
    rewards do not vary (equal as TRL's `isclose` tells; no advantage: nothing learned from them), the rollouts' accuracy under the
    task's checker, and the reward's accuracy: the share of rollouts where the reward (at 0.5) agrees
    with the checker (value, ci_low, ci_high: a bootstrap over the groups), the reward's AUROC against
    the checker over the rollouts (how well it ranks right over wrong, at any threshold: what GRPO's
    within-group advantages use; None with one class), and the tokens generated."""
    from eval.metrics import auroc, bootstrap_ci, json_safe

    if not records:
        return {}
    frame = pd.DataFrame.from_records(records)
    scored = frame[frame["reward"].notna()].copy()
    groups = frame.groupby(["step", "prompt_id"], sort=False)["reward"]
    flat = groups.agg(lambda r: bool(np.isclose(np.nanmax(r), np.nanmin(r))) if r.notna().any() else True)
    scored["agrees"] = (scored["reward"].astype(float) >= 0.5) == scored["correct"].astype(bool)
    per_group = scored.groupby(["step", "prompt_id"], sort=False)["agrees"].mean().to_numpy()
    ci = bootstrap_ci(per_group, n_boot=n_boot, seed=seed, proportion=True)
    return {
        "reward": float(scored["reward"].mean()) if len(scored) else None,
        "reward_std": float(scored["reward"].std(ddof=0)) if len(scored) else None,
        "zero_std_groups": float(flat.mean()),
        "groups": int(len(flat)),
        "rollouts": int(len(frame)),
        "abstained": int(frame["reward"].isna().sum()),
        "rollout_accuracy": float(frame["correct"].mean()),
        "reward_accuracy": json_safe(ci) if len(scored) else None,
        "reward_auroc": json_safe(auroc(scored["reward"].astype(float), scored["correct"].astype(bool))),
        "tokens_generated": int(frame["tokens"].fillna(0).sum()),
    }


def _steps_settings(opts: GRPOOptions, prev: Path, seed: int, reward) -> dict:
    return {
        "options": asdict(opts),
        "prev": str(Path(prev).resolve()),
        "seed": seed,
        "reward": reward.__name__,
    }


def resumable_checkpoint(steps_dir: Path, settings: dict) -> Path | None:
    """The last complete TRL checkpoint in `steps_dir` made with `settings` (its reward records are
    written after TRL's files); a folder made with other settings is cleared."""
    if not steps_dir.is_dir():
        return None
    saved = steps_dir / "settings.json"
    if not saved.is_file() or read_json(saved) != settings:
        shutil.rmtree(steps_dir, ignore_errors=True)
        return None
    done = [p for p in steps_dir.glob("checkpoint-*") if (p / "rewards.json").is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def grpo_train(
    prompts: pd.DataFrame,
    base_model_dir: Path,
    output_dir: Path,
    opts: GRPOOptions,
    rollouts: Rollouts,
    reward,
    seed: int,
    steps_dir: Path,
    use_vllm: bool = False,
    report_to: str = "none",
    callbacks: list | None = None,
    key: str = "update.grpo",
) -> dict:
    """Train `base_model_dir` with GRPO for `opts.steps` steps on `prompts` (columns prompt_id,
    prompt: rendered, chat template included; other columns reach the reward) under `reward` (a
    trainer.rewards.Reward), writing TRL checkpoints to `steps_dir` every `opts.save_steps` steps and
    resuming from the last one found there; write the result to `output_dir` (a plain bf16 HF
    checkpoint, LoRA merged, main process only) and delete `steps_dir`. Call it on every rank.

    Returns: the reward's statistics (`reward_stats`) and records (`rollout_rewards`), TRL's per-step
    metrics (the mean over the steps and `<name>_history`: loss, reward_trl, entropy, kl,
    completion_length, clipped_ratio), steps,
    train_tokens (prompt and completion tokens of the steps, all ranks), seconds, resumed_from (the
    step resumed at, or None), trainable_params, weights_checksum, world_size.
    """
    import torch
    from accelerate import PartialState

    from trainer.memory import forget_import_tracebacks, return_freed_heap

    state = PartialState()
    steps_dir = Path(steps_dir)
    settings = _steps_settings(opts, base_model_dir, seed, reward)
    resume = resumable_checkpoint(steps_dir, settings) if state.is_main_process else None
    resume = _broadcast(resume)
    if state.is_main_process:
        steps_dir.mkdir(parents=True, exist_ok=True)
        write_json(steps_dir / "settings.json", settings)
    state.wait_for_everyone()
    if resume is not None:
        reward.records = read_json(Path(resume) / "rewards.json") if state.is_main_process else []
    try:
        with environ(**launch_env(opts, key)):
            clock = time.perf_counter()
            trainer = build_grpo_trainer(
                prompts,
                base_model_dir,
                opts,
                rollouts,
                reward,
                seed,
                steps_dir,
                use_vllm,
                report_to,
                callbacks,
            )
            build_seconds = time.perf_counter() - clock
            stats = _train(trainer, opts, resume)
            if state.is_main_process:
                stats.update(reward_stats(reward.records, seed=seed))
                stats["rollout_rewards"] = (
                    reward.records
                )  # one per rollout: step, prompt, answer, reward, verdict
            stats = _broadcast(stats)
            clock = time.perf_counter()
            try:
                save_checkpoint(
                    trainer, Path(output_dir), trainer.processing_class, lora=opts.method == "lora"
                )
            finally:
                release(trainer)
            stats["stage_seconds"] = {
                "build": round(build_seconds, 3),
                "save": round(time.perf_counter() - clock, 3),
            }
            if state.is_main_process:
                shutil.rmtree(steps_dir, ignore_errors=True)
            state.wait_for_everyone()
            return stats
    finally:
        forget_import_tracebacks()  # TRL may have imported vLLM inside this call: its frames would stay
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return_freed_heap()


def _broadcast(obj):
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    if PartialState().num_processes == 1:
        return obj
    box = [obj]
    broadcast_object_list(box)
    return box[0]


def _train(trainer, opts: GRPOOptions, resume: Path | None) -> dict:
    trainable = sum(numel(p) for p in trainer.model.parameters() if p.requires_grad)
    clock = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    seconds = time.perf_counter() - clock
    steps = [h for h in trainer.state.log_history if "loss" in h]
    tokens = next((int(h["num_tokens"]) for h in reversed(trainer.state.log_history) if "num_tokens" in h), 0)
    stats = {
        "steps": int(trainer.state.global_step),
        "resumed_from": int(resume.name.rsplit("-", 1)[1]) if resume is not None else None,
        "train_tokens": tokens,
        "seconds": round(seconds, 3),
        "trainable_params": int(trainable),
        "method": opts.method,
        "world_size": int(trainer.accelerator.num_processes),
        "weights_checksum": weights_checksum(trainer),
        "bf16": bool(trainer.args.bf16),
    }
    for name, metric in _METRICS.items():
        history = [float(h[metric]) for h in steps if metric in h]
        stats[name] = float(np.mean(history)) if history else None
        stats[f"{name}_history"] = history
    stats["train_loss"] = stats["loss"]  # over every step (TRL's training_loss: this run's steps)
    if opts.beta == 0:
        stats["kl"], stats["kl_history"] = None, []  # TRL computes no KL without a reference model
    return stats


def save_rewards(reward):
    """A callback that writes the reward's records into each TRL checkpoint, after TRL's own files (a
    checkpoint without them was cut off by a kill and is not resumed from)."""
    from transformers import TrainerCallback

    class SaveRewards(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                write_json(folder / "rewards.json", reward.records)

    return SaveRewards()


def build_grpo_trainer(
    prompts: pd.DataFrame,
    base_model_dir: Path,
    opts: GRPOOptions,
    rollouts: Rollouts,
    reward,
    seed: int,
    work_dir: Path,
    use_vllm: bool = False,
    report_to: str = "none",
    callbacks: list | None = None,
):
    """The GRPOTrainer that `grpo_train` runs (call it inside the rule's `launch_env`); its
    output_dir, where TRL's checkpoints go, is `work_dir`."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    base_model_dir = Path(base_model_dir)
    tokenizer = load_tokenizer(base_model_dir)
    columns = {c: [str(v) for v in prompts[c]] for c in prompts.columns if c != "prompt"}
    data = Dataset.from_dict(
        {"prompt": single_bos([str(p) for p in prompts["prompt"]], tokenizer), **columns}
    )
    bf16 = opts.use_bf16()
    lora = opts.method == "lora"
    settings = trainer_settings(opts, work_dir, seed, report_to)
    settings.update(
        max_steps=opts.steps,
        beta=opts.beta,
        num_generations=rollouts.num_generations,
        max_completion_length=rollouts.max_completion_length,
        temperature=rollouts.temperature,
        top_p=rollouts.top_p,
        use_vllm=use_vllm,
        save_strategy="steps" if opts.save_steps else "no",
        save_steps=opts.save_steps or 500,
        save_only_model=False,
    )
    if use_vllm:
        settings["vllm_mode"] = "colocate"
    try:
        args = GRPOConfig(**{**settings, **opts.trl})
    except ValueError as e:
        raise UserError(
            f"update.grpo: TRL's GRPOConfig refuses the settings: {str(e).splitlines()[0]}"
        ) from None
    load_dtype = torch.bfloat16 if (lora and bf16) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=load_dtype)
    return GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(opts) if lora else None,
        callbacks=[*(callbacks or []), save_rewards(reward)],
    )
