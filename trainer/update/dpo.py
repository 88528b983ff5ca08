"""`dpo`: preference optimisation on the verifier's kept-vs-dropped samples of a prompt (TRL DPOTrainer).

Iterative DPO on self-verified samples (self-rewarding LMs, Yuan et al. 2024; iterative RPO, Pang et
al. 2024): each round the model's own samples of a prompt are paired, a kept one (chosen) against a
dropped one (rejected), and the model is trained to prefer the chosen over the rejected relative to
the round's starting checkpoint, which is the reference model. `loss_type: [sigmoid, sft]` adds RPO's
NLL term on the chosen samples (weighted by `loss_weights`).

The pairing rule, in one sentence: every kept sample of a prompt is paired with every dropped sample
of the same prompt that has a lower score under the first verifier and a different completion text,
and at most `max_pairs_per_prompt` of these pairs are drawn at random (seeded by the round and the
prompt). Where mindgap departs from, or fixes, what the papers leave open:

1. The first verifier's filter splits a prompt's samples; the scores only order chosen over rejected
   (a dropped sample never outscores a kept one under mindgap's filters, and an abstention, a NaN
   score, is never a rejected sample). Under the oracle the pairs are correct vs incorrect samples.
2. Identical completion texts are never paired (their preference would be a contradiction); a prompt
   that gives no pair (everything kept, nothing kept, or only equal texts) is counted.
3. The random filter (the control) pairs its random kept samples with its random dropped ones, no
   scores read, drawing per prompt as many pairs as the pairing above makes under its `reference`
   filter on the same scores: the same budget, without verification.
4. A sample cut off at `sampling.max_tokens` is left out, chosen or rejected, unless
   `train_on_truncated` (then it is trained on without the EOS TRL appends), as for SFT.
5. TRL's loss and metrics run on `trainer.dpo_trainer.PreferenceTrainer`, whose LM head projects the
   completion positions alone (the same log-probabilities as TRL's fused head).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import Problems, knob
from core.errors import UserError
from trainer.filters import REFERENCES, FilterConfig, stable_hash
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

# The loss types of TRL 1.16's DPOTrainer (`DPOConfig.loss_type`).
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip

# DPOConfig fields mindgap sets itself; `update.dpo.trl` may pass any other through.
_SET_BY_MINDGAP = SET_BY_MINDGAP | {"beta", "loss_type", "loss_weights"}

# The per-step metrics of TRL's DPOTrainer that a round records (mean over the steps, and the last).
_REWARDS = {
    "reward_margin": "rewards/margins",
    "reward_accuracy": "rewards/accuracies",
    "reward_chosen": "rewards/chosen",
    "reward_rejected": "rewards/rejected",
}


@dataclass
class DPOOptions(TrainingOptions):
    """How preference pairs of kept vs dropped samples train the next checkpoint (TRL DPO)."""

    beta: float = knob(0.1, "TRL's beta: how far the policy may move from the reference (higher: less)")
    loss_type: list[str] = knob(
        factory=lambda: ["sigmoid"],
        help="TRL's loss_type: sigmoid (DPO); [sigmoid, sft] is RPO (DPO + NLL on the chosen); ipo, hinge, ...",
    )
    loss_weights: list[float] | None = knob(
        None, "TRL's loss_weights, one per loss_type (e.g. [1.0, 1.0] for RPO); null: all 1"
    )
    max_pairs_per_prompt: int = knob(4, "pairs drawn at most per prompt (from every kept x dropped pair)")
    learning_rate: float = knob(5e-5, "peak learning rate")
    epochs: float = knob(1.0, "passes over the pairs")
    batch_size: int = knob(4, "pairs per device and micro-batch (each is two sequences: chosen, rejected)")
    grad_accum: int = knob(2, "micro-batches per optimizer step (default: 8 pairs a step)")
    max_length: int = knob(512, "tokens of prompt + completion; longer sequences are truncated at the end")
    train_on_truncated: bool = knob(False, "also pair samples cut off at sampling.max_tokens (no EOS added)")
    trl: dict = knob(
        factory=dict,
        help="any other field of TRL's DPOConfig, passed through (e.g. {precompute_ref_log_probs: true, label_smoothing: 0.1})",
    )

    def validate(self, key: str) -> None:
        problems = Problems()
        check_options(self, key, problems)
        if self.beta <= 0:
            problems.add(f"{key}.beta: must be > 0, got {self.beta}")
        if not self.loss_type:
            problems.add(f"{key}.loss_type: name at least one, e.g. [sigmoid] (DPO) or [sigmoid, sft] (RPO)")
        for i, name in enumerate(self.loss_type):
            if name not in LOSS_TYPES:
                problems.add(
                    f"{key}.loss_type.{i}: unknown loss '{name}'; choose among {', '.join(LOSS_TYPES)}"
                )
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            problems.add(
                f"{key}.loss_weights: {len(self.loss_weights)} weights for {len(self.loss_type)} loss types; "
                "give one per loss_type, or null"
            )
        if "exo_pair" in self.loss_type and not self.trl.get("label_smoothing"):
            problems.add(f"{key}.trl.label_smoothing: loss exo_pair needs it > 0 (EXO recommends 1e-3)")
        if self.max_pairs_per_prompt < 1:
            problems.add(f"{key}.max_pairs_per_prompt: must be >= 1, got {self.max_pairs_per_prompt}")
        with problems.check():
            check_dpo_trl_fields(self.trl, f"{key}.trl")
        problems.raise_any()


def check_dpo_trl_fields(extra: dict, key: str) -> None:
    """`extra` names only fields of TRL's DPOConfig that mindgap does not set itself."""
    from trl import DPOConfig

    check_trl_fields(extra, key, DPOConfig, _SET_BY_MINDGAP, "update.dpo")


# ---------------------------------------------------------------- pairs


def preference_pairs(
    rows: pd.DataFrame,
    column: str,
    filt: FilterConfig,
    max_pairs: int,
    seed: int,
    train_on_truncated: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """The preference pairs of the module's pairing rule, from a round's selected rows (`kept` by the
    filter `filt` on the scores in `column`), and their counts: pairs, prompts with and without a
    pair, the share of pairs whose chosen is correct and rejected incorrect (`pair_precision`) and
    the reverse (`pair_inverted`), and under the random filter the pairs its reference would make.

    Each pair: prompt_id, prompt, chosen, rejected (completion texts), the two samples' sample_idx,
    score, correctness and finish_reason. Pairs come prompt by prompt in row order, within a prompt by
    chosen then rejected sample index; each prompt draws from its own generator (the seed and the
    prompt id), so the draw depends neither on row order nor on the other prompts.
    """
    scores = rows[column].to_numpy(dtype=float)
    kept = rows["kept"].to_numpy(dtype=bool)
    texts = rows["completion"].to_numpy()
    finished = (
        (rows["finish_reason"] != "length").to_numpy()
        if "finish_reason" in rows
        else np.ones(len(rows), bool)
    )
    eligible = np.ones(len(rows), bool) if train_on_truncated else finished
    sample = rows["sample_idx"].to_numpy() if "sample_idx" in rows else np.arange(len(rows))
    control = filt.name == "random"
    reference = REFERENCES[filt.reference](rows, scores, filt) > 0 if control else None

    def candidates(idx: np.ndarray, chosen_set: np.ndarray, by_score: bool) -> list[tuple[int, int]]:
        return [
            (c, r)
            for c in idx
            if chosen_set[c] and eligible[c]
            for r in idx
            if not chosen_set[r]
            and eligible[r]
            and texts[c] != texts[r]
            and (not by_score or scores[r] < scores[c])  # False for a NaN (abstained) score
        ]

    picked: list[tuple[int, int]] = []
    paired = unpaired = budget = 0
    for pid, idx in rows.groupby("prompt_id", sort=False).indices.items():
        idx = idx[np.argsort(sample[idx], kind="stable")]
        if control:
            target = min(max_pairs, len(candidates(idx, reference, by_score=True)))
            budget += target
            pool = candidates(idx, kept, by_score=False)
        else:
            pool = candidates(idx, kept, by_score=True)
            target = max_pairs
        n = min(target, len(pool))
        if n == 0:
            unpaired += 1
            continue
        paired += 1
        rng = np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(str(pid))])
        picked += [pool[i] for i in sorted(rng.choice(len(pool), size=n, replace=False))]

    c = [p[0] for p in picked]
    r = [p[1] for p in picked]
    col = {name: rows[name].to_numpy() for name in ("prompt_id", "prompt", "completion", "correct")}
    reasons = rows["finish_reason"].to_numpy() if "finish_reason" in rows else np.full(len(rows), "stop")
    pairs = pd.DataFrame(
        {
            "prompt_id": col["prompt_id"][c],
            "prompt": col["prompt"][c],
            "chosen": col["completion"][c],
            "rejected": col["completion"][r],
            "chosen_idx": sample[c],
            "rejected_idx": sample[r],
            "chosen_score": scores[c],
            "rejected_score": scores[r],
            "chosen_correct": col["correct"][c].astype(bool),
            "rejected_correct": col["correct"][r].astype(bool),
            "chosen_finish_reason": reasons[c],
            "rejected_finish_reason": reasons[r],
        }
    )
    right = (pairs["chosen_correct"] & ~pairs["rejected_correct"]).mean() if len(pairs) else None
    wrong = (~pairs["chosen_correct"] & pairs["rejected_correct"]).mean() if len(pairs) else None
    counts = {
        "pairs": len(pairs),
        "prompts_paired": paired,
        "prompts_unpaired": unpaired,
        "pair_precision": None if right is None else float(right),
        "pair_inverted": None if wrong is None else float(wrong),
    }
    if control:
        counts["pairs_reference"] = budget
    return pairs, counts


# ---------------------------------------------------------------- the rule


class DPORule(UpdateRule):
    name = "dpo"
    stage = "dpo"
    options = DPOOptions

    @classmethod
    def check(cls, opts: DPOOptions, verifier, filt: FilterConfig, key: str) -> None:
        where = "filter" if verifier.filter is None else "verifiers.0.filter"
        split = filt.reference if filt.name == "random" else filt.name
        q_key = f"{where}.q"
        tau_key = f"{where}.tau"
        # Every verifier scores in [0, 1]: these filters keep every sample of a prompt, or none.
        if split == "quantile" and filt.q == 0:
            why = f"{q_key} 0 keeps every sample, so none is rejected"
        elif split == "threshold" and filt.tau <= 0:
            why = f"{tau_key} {filt.tau:g} keeps every sample (scores lie in [0, 1]), so none is rejected"
        elif split == "threshold" and filt.tau > 1:
            why = f"{tau_key} {filt.tau:g} keeps no sample (scores lie in [0, 1]), so none is chosen"
        else:
            return
        raise UserError(
            f"{key.rsplit('.', 1)[0]}.name: dpo pairs a prompt's kept samples with its dropped ones, but {why}; "
            f"change the filter (e.g. {where}: {{name: quantile, q: 0.5}})"
        )

    def training_data(self, rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, dict]:
        pairs, counts = preference_pairs(
            rows,
            self.verifier.column,
            self.filter,
            self.opts.max_pairs_per_prompt,
            seed,
            self.opts.train_on_truncated,
        )
        return pairs, {f"dpo_{k}": v for k, v in counts.items()}

    def nothing_to_train(self, rows: pd.DataFrame, counts: dict) -> str:
        kept = int(rows["kept"].sum())
        hint = "" if self.opts.train_on_truncated else f", or set {self.key}.train_on_truncated"
        return (
            f"the filter kept {kept} of the {len(rows)} samples and no prompt gives a preference pair of a "
            f"kept and a dropped sample ({counts['dpo_prompts_unpaired']} prompts without one), so there is "
            "nothing to train on; change `filter` (a prompt needs kept and dropped samples of different "
            f"texts), change the verifier or raise sampling.n{hint}"
        )

    def train(
        self, rows: pd.DataFrame, prev: Path, out: Path, seed: int, callbacks: list | None = None
    ) -> tuple[Path, dict]:
        pairs, _ = self.training_data(rows, seed)
        stats = preference_train(pairs, prev, out, self.opts, seed, callbacks=callbacks, key=self.key)
        stats["pairs_drawn"] = [
            [str(p), int(a), int(b)]
            for p, a, b in zip(pairs["prompt_id"], pairs["chosen_idx"], pairs["rejected_idx"])
        ]  # (prompt_id, chosen sample_idx, rejected sample_idx): the round's pairs, as drawn
        return out, stats

    def record(self, stats: dict) -> dict:
        out = {
            "dpo_loss": stats.get("train_loss"),
            "dpo_steps": stats.get("steps"),
            "dpo_tokens": stats.get("train_tokens"),
            "dpo_tokens_per_second": stats.get("tokens_per_second"),
        }
        for name in _REWARDS:
            out[f"dpo_{name}"] = stats.get(name)
            out[f"dpo_{name}_last"] = (stats.get(f"{name}_history") or [None])[-1]
        return out


# ---------------------------------------------------------------- training


def preference_train(
    pairs: pd.DataFrame,
    base_model_dir: Path,
    output_dir: Path,
    opts: DPOOptions,
    seed: int,
    report_to: str = "none",
    callbacks: list | None = None,
    key: str = "update.dpo",
) -> dict:
    """Train `base_model_dir` with DPO on `pairs` (columns prompt, chosen, rejected; optionally
    chosen_finish_reason, rejected_finish_reason), the starting model being the reference; write
    the result to `output_dir` (a plain bf16 HF checkpoint, LoRA merged, main process only).

    Call it on every rank when launched with accelerate; all ranks return the same stats (timings
    aside): train_loss (mean over the run), loss_history, steps, pairs, train_tokens (chosen and
    rejected sequences, all ranks), seconds, tokens_per_second, trainable_params, weights_checksum
    (None under ZeRO-3), and TRL's reward metrics, each as the mean over the steps and per step
    (`<name>_history`): reward_margin (rewards/margins), reward_accuracy (rewards/accuracies: the
    share of pairs whose chosen gets the higher implicit reward), reward_chosen, reward_rejected.
    """
    import torch

    from trainer.memory import return_freed_heap

    if pairs is None or len(pairs) == 0:
        raise ValueError("preference_train: no pairs to train on")
    output_dir = Path(output_dir)
    scratch = Path(tempfile.mkdtemp(prefix="mindgap-dpo-"))  # the Trainer's output_dir; nothing lands there
    try:
        with environ(**launch_env(opts, key)):
            clock = time.perf_counter()
            trainer = build_dpo_trainer(pairs, base_model_dir, opts, seed, scratch, report_to, callbacks)
            build_seconds = time.perf_counter() - clock
            stats = _train(trainer, opts)
            clock = time.perf_counter()
            try:
                save_checkpoint(trainer, output_dir, trainer.processing_class, lora=opts.method == "lora")
            finally:
                release(trainer)
            stats["stage_seconds"] = {
                "build": round(build_seconds, 3),
                "save": round(time.perf_counter() - clock, 3),
            }
            return stats
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return_freed_heap()


def _train(trainer, opts: DPOOptions) -> dict:
    trainable = sum(numel(p) for p in trainer.model.parameters() if p.requires_grad)
    clock = time.perf_counter()
    result = trainer.train()  # never evaluate() first: it marks the model prepared and disables DDP
    seconds = time.perf_counter() - clock
    steps = [h for h in trainer.state.log_history if "loss" in h]
    tokens = next((int(h["num_tokens"]) for h in reversed(trainer.state.log_history) if "num_tokens" in h), 0)
    stats = {
        "train_loss": float(result.training_loss),
        "loss_history": [float(h["loss"]) for h in steps],
        "steps": int(trainer.state.global_step),
        "pairs": len(trainer.train_dataset),
        "train_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None,
        "trainable_params": int(trainable),
        "method": opts.method,
        "loss_type": list(opts.loss_type),
        "world_size": int(trainer.accelerator.num_processes),
        "weights_checksum": weights_checksum(trainer),
        "bf16": bool(trainer.args.bf16),
    }
    for name, metric in _REWARDS.items():
        history = [float(h[metric]) for h in steps if metric in h]
        stats[name] = float(np.mean(history)) if history else None
        stats[f"{name}_history"] = history
    return stats


def build_dpo_trainer(
    pairs: pd.DataFrame,
    base_model_dir: Path,
    opts: DPOOptions,
    seed: int,
    work_dir: Path,
    report_to: str = "none",
    callbacks: list | None = None,
):
    """The PreferenceTrainer that `preference_train` runs, ready to train (call it inside the rule's
    `launch_env`). `work_dir` becomes the Trainer's output_dir; with saving off nothing lands there."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from trainer.dpo_trainer import PreferenceTrainer

    missing = {"prompt", "chosen", "rejected"} - set(pairs.columns)
    if missing:
        raise ValueError(f"preference_train: pairs lack the column(s) {sorted(missing)}")
    if opts.trl.get("precompute_ref_log_probs") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            "update.dpo.trl.precompute_ref_log_probs: TRL caches the reference log-probabilities in a file "
            "that only the main process writes and sees, so it runs in one process only; leave it off "
            "under a multi-process launch"
        )
    base_model_dir = Path(base_model_dir)
    tokenizer = load_tokenizer(base_model_dir)
    unfinished = {
        side: [reason == "length" for reason in pairs[f"{side}_finish_reason"]]
        if f"{side}_finish_reason" in pairs
        else [False] * len(pairs)
        for side in ("chosen", "rejected")
    }
    # TRL appends the EOS text to every chosen and rejected completion; a truncated one loses it again
    # after tokenization (below), so the model does not learn to stop where a token budget ran out.
    data = Dataset.from_dict(
        {
            "prompt": single_bos([str(p) for p in pairs["prompt"]], tokenizer),
            "chosen": [str(t) for t in pairs["chosen"]],
            "rejected": [str(t) for t in pairs["rejected"]],
            "chosen_truncated": unfinished["chosen"],
            "rejected_truncated": unfinished["rejected"],
        }
    )
    bf16 = opts.use_bf16()
    lora = opts.method == "lora"
    settings = dict(
        trainer_settings(opts, work_dir, seed, report_to),
        beta=opts.beta,
        loss_type=list(opts.loss_type),
        loss_weights=list(opts.loss_weights) if opts.loss_weights is not None else None,
    )
    args = DPOConfig(**{**settings, **opts.trl})
    # After the config: under ZeRO-3 its DeepSpeed settings make from_pretrained load the weights
    # partitioned across ranks. Frozen LoRA base weights can stay bf16; weights that train keep fp32
    # masters (with bf16 autocast). Full fine-tuning: TRL loads the reference model from the same
    # directory (`config._name_or_path`) in the policy's dtype; under LoRA the reference is the policy
    # with its adapters disabled.
    load_dtype = torch.bfloat16 if (lora and bf16) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=load_dtype)
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(opts) if lora else None,
        callbacks=callbacks,
    )
    if any(unfinished["chosen"]) or any(unfinished["rejected"]):
        trainer.train_dataset = _drop_final_eos(trainer.train_dataset, tokenizer.eos_token_id)
    return trainer


def _drop_final_eos(dataset, eos_id: int):
    """The tokenized pairs without the EOS that TRL appended to a truncated chosen or rejected sample."""

    def strip(example: dict) -> dict:
        for side in ("chosen", "rejected"):
            ids = example[f"{side}_ids"]
            if example[f"{side}_truncated"] and ids and ids[-1] == eos_id:
                example[f"{side}_ids"] = ids[:-1]
        return example

    return dataset.map(strip, desc="Dropping the EOS of truncated samples")
