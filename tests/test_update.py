"""Update rules (trainer/update/): the `update` section and its old `sft` key, DPO's pairing rule and
its controls, and DPO trained for real with TRL on the tiny Llama (LoRA and full, the compact LM head
against TRL's own, truncated samples). The study-level checks (kill -9 inside the DPO stage, two
ranks, ZeRO-2/3) are further down; the learning itself is checked on the packaged SmolLM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from core.config import load_config, to_dict
from core.errors import UserError
from tests.conftest import ROOT
from trainer.config import CompareConfig, IterateConfig
from trainer.filters import FilterConfig, select
from trainer.update.dpo import DPOOptions, preference_pairs

# ---------------------------------------------------------------- the pairing rule


def sampled(n_prompts: int = 12, n: int = 6, seed: int = 0) -> pd.DataFrame:
    """Rows of a round as the select stage leaves them: scores, correctness, texts (some repeated)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for j in range(n):
            answer = int(rng.integers(0, 3))  # few distinct answers: identical texts happen
            rows.append(
                {
                    "prompt_id": f"p{p}",
                    "sample_idx": j,
                    "prompt": f"What is {p} + 1?",
                    "completion": f"The answer is {p + answer}.",
                    "correct": answer == 1,
                    "finish_reason": "length" if rng.random() < 0.15 else "stop",
                    "score_mc": float(rng.random()),
                }
            )
    return pd.DataFrame(rows)


def selected(rows: pd.DataFrame, filt: FilterConfig, column: str = "score_mc", seed: int = 0) -> pd.DataFrame:
    rows = rows.copy()
    rows["kept"] = select(rows, rows[column].to_numpy(), filt, seed) > 0
    return rows


def test_pairs_follow_the_documented_rule():
    """Each pair: a kept sample over a dropped one of the same prompt with a lower score and another
    text, finished samples only, at most P a prompt, every pair distinct; prompts without one counted;
    the same seed draws the same pairs and the draw does not depend on the order of the rows."""
    rows = selected(sampled(), FilterConfig("quantile", q=0.5))
    pairs, counts = preference_pairs(rows, "score_mc", FilterConfig("quantile", q=0.5), max_pairs=3, seed=7)
    by = rows.set_index(["prompt_id", "sample_idx"])
    for p in pairs.itertuples():
        c, r = by.loc[(p.prompt_id, p.chosen_idx)], by.loc[(p.prompt_id, p.rejected_idx)]
        assert c["kept"] and not r["kept"] and r["score_mc"] < c["score_mc"]
        assert c["completion"] == p.chosen != p.rejected == r["completion"]
        assert c["finish_reason"] == r["finish_reason"] == "stop"
        assert (p.chosen_correct, p.rejected_correct) == (c["correct"], r["correct"])
    per_prompt = pairs.groupby("prompt_id").size()
    assert per_prompt.max() <= 3 and not pairs.duplicated(["prompt_id", "chosen_idx", "rejected_idx"]).any()
    assert counts["pairs"] == len(pairs) and counts["prompts_paired"] == len(per_prompt)
    assert counts["prompts_paired"] + counts["prompts_unpaired"] == rows["prompt_id"].nunique()
    # a prompt gets min(P, its possible pairs)
    for pid, group in rows.groupby("prompt_id"):
        ok = group[group["finish_reason"] == "stop"]
        possible = sum(
            1
            for c in ok[ok["kept"]].itertuples()
            for r in ok[~ok["kept"]].itertuples()
            if r.score_mc < c.score_mc and r.completion != c.completion
        )
        assert per_prompt.get(pid, 0) == min(3, possible), pid
    assert counts["pair_precision"] == pytest.approx(
        (pairs["chosen_correct"] & ~pairs["rejected_correct"]).mean()
    )
    again, _ = preference_pairs(rows.sample(frac=1, random_state=1), "score_mc", FilterConfig(), 3, seed=7)
    key = ["prompt_id", "chosen_idx", "rejected_idx"]
    assert sorted(map(tuple, again[key].values)) == sorted(map(tuple, pairs[key].values))
    other, _ = preference_pairs(rows, "score_mc", FilterConfig(), 3, seed=8)
    assert sorted(map(tuple, other[key].values)) != sorted(map(tuple, pairs[key].values))


def test_truncated_samples_are_paired_only_when_asked():
    rows = selected(sampled(), FilterConfig("quantile", q=0.5))
    every, _ = preference_pairs(rows, "score_mc", FilterConfig(), 100, seed=0, train_on_truncated=True)
    finished, _ = preference_pairs(rows, "score_mc", FilterConfig(), 100, seed=0)
    cut = every[(every["chosen_finish_reason"] == "length") | (every["rejected_finish_reason"] == "length")]
    assert len(cut) > 0 and len(every) == len(finished) + len(cut)


def test_oracle_pairs_are_correct_over_incorrect():
    rows = sampled()
    rows["score_oracle"] = rows["correct"].astype(float)
    for filt in (FilterConfig("threshold", tau=0.5), FilterConfig("quantile", q=0.5)):
        pairs, counts = preference_pairs(selected(rows, filt, "score_oracle"), "score_oracle", filt, 100, 0)
        assert len(pairs) and pairs["chosen_correct"].all() and not pairs["rejected_correct"].any()
        assert counts["pair_precision"] == 1.0 and counts["pair_inverted"] == 0.0


def test_random_control_draws_as_many_pairs_per_prompt_as_its_reference():
    """Under `filter: random` the pairs are the random kept samples against the random dropped ones,
    no score read, and each prompt gets as many as the reference filter's pairing would make."""
    rows = sampled(n_prompts=30)
    ref = FilterConfig("quantile", q=0.5)
    control = FilterConfig("random", q=0.5, reference="quantile")
    verified, _ = preference_pairs(selected(rows, ref), "score_mc", ref, 2, seed=3)
    random_rows = selected(rows, control, seed=11)
    drawn, counts = preference_pairs(random_rows, "score_mc", control, 2, seed=3)
    assert counts["pairs_reference"] == len(verified)
    want = verified.groupby("prompt_id").size()
    got = drawn.groupby("prompt_id").size()
    # as many per prompt, except where the random split cannot make them (equal texts)
    assert all(got.get(p, 0) <= want.get(p, 0) for p in rows["prompt_id"].unique())
    assert (got == want.reindex(got.index)).mean() > 0.8
    by = random_rows.set_index(["prompt_id", "sample_idx"])
    assert all(by.loc[(p.prompt_id, p.chosen_idx), "kept"] for p in drawn.itertuples())
    assert not any(by.loc[(p.prompt_id, p.rejected_idx), "kept"] for p in drawn.itertuples())
    # the scores play no part: a chosen sample outscored by its rejected one happens
    assert (drawn["rejected_score"] > drawn["chosen_score"]).any()


# ---------------------------------------------------------------- the update section


def write(tmp_path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_update_section_names_the_rule_and_holds_each_rules_options(tmp_path):
    cfg = load_config(
        IterateConfig,
        ["--update.name", "dpo", "--update.dpo.beta", "0.2", "--update.dpo.loss_type", "[sigmoid, sft]"],
    )
    assert cfg.update.name == "dpo" and cfg.update.options is cfg.update.dpo
    assert cfg.update.dpo.beta == 0.2 and cfg.update.dpo.loss_type == ["sigmoid", "sft"]
    # only the named rule's options are read: another rule's may stay set (a comparison shares them)
    cfg = load_config(IterateConfig, ["--update.dpo.beta", "0.3"])
    assert cfg.update.name == "sft" and cfg.update.options is cfg.update.sft


def test_an_old_sft_section_is_the_sft_rule(tmp_path):
    """A config written before `update` existed: `sft:` is read as update.sft, in a file and as an
    override, and a later layer still overrides it; both at once is a mistake."""
    path = write(tmp_path, "sft: {method: full, epochs: 3}\n")
    cfg = load_config(IterateConfig, ["--config", path, "--sft.learning_rate", "0.001"])
    assert cfg.update.name == "sft" and cfg.update.sft.method == "full"
    assert cfg.update.sft.epochs == 3 and cfg.update.sft.learning_rate == 0.001
    assert load_config(IterateConfig, ["--config", path, "--update.sft.epochs", "4"]).update.sft.epochs == 4
    with pytest.raises(UserError, match="sft: the old name of update.sft; set one of them"):
        load_config(
            IterateConfig,
            ["--config", write(tmp_path, "sft: {epochs: 3}\nupdate: {sft: {epochs: 2}}\n", "both.yaml")],
        )
    spec = {"base": path, "conditions": [{"name": "a"}, {"name": "b", "overrides": {"sft": {"epochs": 5}}}]}
    (tmp_path / "compare.yaml").write_text(json.dumps({**spec, "control": "a"}))
    studies = load_config(CompareConfig, ["--config", str(tmp_path / "compare.yaml")]).studies()
    assert studies["a"][0].update.sft.epochs == 3 and studies["b"][0].update.sft.epochs == 5


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--update.name", "ppo"], "update.name: unknown value 'ppo'; choose one of sft, dpo"),
        (["--update", "ppo"], "update.name: unknown value 'ppo'; choose one of sft, dpo"),
        (["--update.dpo.packing", "true"], "unknown config key 'update.dpo.packing'"),  # an sft option
        (["--update.sft.beta", "0.1"], "unknown config key 'update.sft.beta'"),  # a dpo option
        (["--update.beta", "0.1"], "unknown config key 'update.beta'"),
        (["--update.dpo.loss_type", "[sigmoid, rpo]"], "update.dpo.loss_type.1: unknown loss 'rpo'"),
        (["--update.dpo.loss_weights", "[1.0]", "--update.dpo.loss_type", "[sigmoid, sft]"], "loss_weights"),
        (["--update.dpo.trl", "{precompute_ref_logprobs: true}"], "TRL's DPOConfig has no field"),
        (["--update.dpo.trl", "{beta: 0.5}"], "update.dpo.trl.beta: set by mindgap"),
        (["--update.dpo.max_pairs_per_prompt", "0"], "update.dpo.max_pairs_per_prompt: must be >= 1"),
        # a filter that can never give a pair of a kept and a dropped sample
        (["--update.name", "dpo", "--filter.q", "0"], "update.name: dpo pairs a prompt's kept samples"),
        (["--update.name", "dpo", "--filter", "{name: threshold, tau: 0}"], "filter.tau 0 keeps every"),
        (["--update.name", "dpo", "--filter", "{name: threshold, tau: 1.5}"], "filter.tau 1.5 keeps no"),
        (["--update.name", "dpo", "--filter", "{name: random, q: 0}"], "filter.q 0 keeps every"),
        (
            ["--update.name", "dpo", "--verifiers", "[{name: mc, filter: {name: quantile, q: 0}}]"],
            "verifiers.0.filter.q 0 keeps every",
        ),
    ],
)
def test_update_mistakes_are_one_line(argv, line):
    with pytest.raises(UserError) as e:
        load_config(IterateConfig, argv)
    assert line in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_dpo_mistake_exits_2_with_its_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "iterate.py"), "--update.name", "dpo", "--filter.q", "0"]
        + ["--output_dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2 and r.stdout == "", r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "error: update.name: dpo pairs a prompt's kept samples with its dropped ones, but filter.q 0 keeps "
        "every sample, so none is rejected; change the filter (e.g. filter: {name: quantile, q: 0.5})"
    ]
    assert not (tmp_path / "x").exists()


def test_a_study_folder_from_before_the_update_section_resumes(tmp_path):
    """A study.json written by the code before `update` (its config has `sft`, no `update`) resumes
    under a config that says the same with `update`, and is rewritten in the new shape."""
    from core.io import read_json, write_json
    from trainer.loop import open_study_folder

    def _start(out, cfg):
        run = open_study_folder(cfg)
        run.begin()
        return run.meta

    out = tmp_path / "study"
    quickstart = str(ROOT / "recipes" / "configs" / "quickstart.yaml")
    cfg = load_config(IterateConfig, ["--output_dir", str(out)], default_config=quickstart)
    old = to_dict(cfg)
    old["sft"] = old.pop("update")["sft"]
    out.mkdir()
    write_json(out / "study.json", {"config": old, "versions": {}, "wandb_run_id": "abc"})
    meta = _start(out, cfg)
    assert meta["wandb_run_id"] == "abc" and read_json(out / "study.json")["config"] == to_dict(cfg)
    changed = load_config(IterateConfig, ["--output_dir", str(out), "--update.sft.epochs", "5"], quickstart)
    write_json(out / "study.json", {"config": old, "versions": {}})
    with pytest.raises(UserError, match="a different 'update.sft"):
        _start(out, changed)
    # the options of a rule the study does not use may change on a resume
    unused = load_config(IterateConfig, ["--output_dir", str(out), "--update.dpo.beta", "0.5"], quickstart)
    write_json(out / "study.json", {"config": old, "versions": {}})
    assert _start(out, unused)["config"]["update"]["dpo"]["beta"] == 0.5


def test_a_round_without_pairs_says_why():
    """Where the filter keeps every sample of a prompt (or none), DPO has no pair: the round stops
    with a message of the kind an empty kept set gives under SFT."""
    from trainer.update import UpdateConfig, make_rule
    from trainer.verifiers.base import VerifierConfig

    rows = sampled(n_prompts=3).assign(kept=True)
    rule = make_rule(UpdateConfig(name="dpo"), VerifierConfig("mc"), FilterConfig("quantile", q=0.5))
    pairs, counts = rule.training_data(rows, seed=0)
    assert len(pairs) == 0 and counts["dpo_pairs"] == 0 and counts["dpo_prompts_unpaired"] == 3
    assert rule.nothing_to_train(rows, counts) == (
        f"the filter kept {len(rows)} of the {len(rows)} samples and no prompt gives a preference pair of a "
        "kept and a dropped sample (3 prompts without one), so there is nothing to train on; change "
        "`filter` (a prompt needs kept and dropped samples of different texts), change the verifier or "
        "raise sampling.n, or set update.dpo.train_on_truncated"
    )


def test_the_update_rules_comparison_loads():
    """recipes/configs/compare_update_rules.yaml: SFT and DPO, each under MC self-verification, its
    random control and the oracle, on the quickstart study, 2 training seeds each (RPO is one loss_type
    away and not among the measured conditions)."""
    cfg = load_config(
        CompareConfig, ["--config", str(ROOT / "recipes" / "configs" / "compare_update_rules.yaml")]
    )
    studies = {name: runs[0] for name, runs in cfg.studies().items()}
    assert len(studies) == 10 and cfg.control == "sft_random"  # and 4 GRPO conditions: tests/test_grpo.py
    assert cfg.replicates == 2
    assert cfg.controls() == {
        **{f"dpo_{c}": "dpo_random" for c in ("mc", "oracle")},
        **{f"grpo_{c}": "grpo_random" for c in ("mc", "majority", "oracle")},
    }
    for rule in ("sft", "dpo"):
        mc, oracle, random = (studies[f"{rule}_{c}"] for c in ("mc", "oracle", "random"))
        assert mc.update.name == oracle.update.name == random.update.name == rule
        assert [v.name for v in mc.verifiers] == ["mc"] and mc.filter.name == "quantile"
        assert oracle.verifiers[0].name == "oracle" and random.filter.name == "random"
        if rule == "dpo":
            assert mc.update.dpo.loss_type == ["sigmoid"]
    assert len({s.task.name for s in studies.values()}) == 1
    assert {(s.rounds, s.task.test_size) for s in studies.values()} == {(1, 96)}


# ---------------------------------------------------------------- DPO trained for real (tiny Llama)


def arith_pairs(model_dir, n: int = 16) -> pd.DataFrame:
    """Chat-rendered prompts; the chosen completion right, the rejected one off by one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for i in range(n):
        a, b = i % 7 + 2, i % 5 + 3
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": f"What is {a} + {b}?"}], tokenize=False, add_generation_prompt=True
        )
        rows.append(
            {
                "prompt": prompt,
                "chosen": f"{a} + {b} = {a + b}. The answer is {a + b}.",
                "rejected": f"{a} + {b} = {a + b + 1}. The answer is {a + b + 1}.",
            }
        )
    return pd.DataFrame(rows)


def dpo_opts(method: str, **kw) -> DPOOptions:
    # fp32 in every CPU regime: runs are compared to 1e-4 (bf16 is trained in test_dpo_in_bf16)
    kw = {
        "learning_rate": 1e-3,
        "batch_size": 4,
        "grad_accum": 1,
        "epochs": 1,
        "max_length": 128,
        "bf16": False,
        **kw,
    }
    return DPOOptions(method=method, **kw)


@pytest.fixture(scope="module")
def dpo_lora(tiny_model_dir, tmp_path_factory):
    from trainer.update.dpo import preference_train

    out = tmp_path_factory.mktemp("dpo-lora") / "checkpoint"
    return preference_train(arith_pairs(tiny_model_dir), tiny_model_dir, out, dpo_opts("lora"), seed=0), out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_compact_head_gives_trls_dpo_loss(tiny_model_dir, tmp_path, method):
    """PreferenceTrainer skips only the projection of the prompt positions: on the same batches it
    gives DPOTrainer's loss and metrics to 1e-4, and after two steps the same weights."""
    import torch
    from trl import DPOTrainer

    from trainer import dpo_trainer
    from trainer.training import environ, launch_env
    from trainer.update.dpo import build_dpo_trainer

    pairs, o = arith_pairs(tiny_model_dir, 8), dpo_opts(method)
    with environ(**launch_env(o, "update.dpo")):
        ours = build_dpo_trainer(pairs, tiny_model_dir, o, 0, tmp_path / "ours")
        real = dpo_trainer.PreferenceTrainer
        try:
            dpo_trainer.PreferenceTrainer = DPOTrainer  # the same build, with TRL's own trainer
            trl = build_dpo_trainer(pairs, tiny_model_dir, o, 0, tmp_path / "trl")
        finally:
            dpo_trainer.PreferenceTrainer = real
        assert type(ours) is real and type(trl) is DPOTrainer
        batch = next(iter(ours.get_train_dataloader()))
        with torch.no_grad():
            a = ours.compute_loss(ours.model, dict(batch)).item()
            b = trl.compute_loss(trl.model, dict(batch)).item()
        assert abs(a - b) < 1e-4, (a, b)
        for name in ("rewards/margins", "logps/chosen", "entropy", "logits/chosen", "mean_token_accuracy"):
            x, y = ([*t._metrics["train"][name], *t._metrics["eval"][name]][-1] for t in (ours, trl))
            assert abs(x - y) < 1e-3 * max(1.0, abs(y)), (name, x, y)
        ours.train()
        trl.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (ours, trl)]
    assert len(losses[0]) == len(losses[1]) == 2
    assert all(abs(x - y) < 1e-4 for x, y in zip(*losses)), losses
    # Adam moves a weight by about the learning rate whatever its gradient's size: where a gradient is
    # near zero, rounding (TRL's chunked head sums in another order) can move it by a few 1e-5
    mine = dict(ours.model.named_parameters())
    for name, p in trl.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(mine[name], p, atol=1e-4), (name, (mine[name] - p).abs().max().item())


@pytest.mark.slow
def test_dpo_lora_trains_and_saves_a_merged_checkpoint(dpo_lora, tiny_model_dir):
    from tests.test_distill import check_checkpoint, weights

    stats, out = dpo_lora
    assert stats["steps"] == 4 and stats["pairs"] == 16 and len(stats["loss_history"]) == 4
    assert stats["train_tokens"] > 0 and 0 < stats["trainable_params"] < 200_000
    for name in ("reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected"):
        assert len(stats[f"{name}_history"]) == 4 and stats[name] == pytest.approx(
            np.mean(stats[f"{name}_history"])
        )
    # the first step sees the policy equal to its reference: no margin yet
    assert stats["reward_margin_history"][0] == 0 and stats["reward_accuracy_history"][0] == 0
    check_checkpoint(out)
    base, tuned = weights(tiny_model_dir), weights(out)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (base[q] == tuned[q]).all(), "LoRA was not merged into the weights"


@pytest.mark.slow
def test_dpo_full_and_truncated_samples(tiny_model_dir, tmp_path):
    """A full fine-tune (its reference a frozen copy of the starting model) trains every weight; a
    truncated chosen or rejected sample is trained on without the EOS TRL appends."""
    from tests.test_distill import check_checkpoint, weights
    from trainer.training import environ, launch_env
    from trainer.update.dpo import build_dpo_trainer, preference_train

    pairs = arith_pairs(tiny_model_dir, 4)
    pairs["chosen_finish_reason"] = ["stop", "length", "stop", "stop"]
    pairs["rejected_finish_reason"] = ["stop", "stop", "length", "stop"]
    o = dpo_opts("full", train_on_truncated=True)
    with environ(**launch_env(o, "update.dpo")):
        trainer = build_dpo_trainer(pairs, tiny_model_dir, o, 0, tmp_path / "work")
    eos = trainer.processing_class.eos_token_id
    ends = [
        (c[-1] == eos, r[-1] == eos)
        for c, r in zip(trainer.train_dataset["chosen_ids"], trainer.train_dataset["rejected_ids"])
    ]
    assert ends == [(True, True), (False, True), (True, False), (True, True)]
    assert trainer.ref_model is not None
    stats = preference_train(pairs, tiny_model_dir, tmp_path / "checkpoint", o, seed=0)
    assert stats["trainable_params"] > 6_000_000 and stats["steps"] == 1
    check_checkpoint(tmp_path / "checkpoint")
    base, tuned = weights(tiny_model_dir), weights(tmp_path / "checkpoint")
    assert not (base["model.embed_tokens.weight"] == tuned["model.embed_tokens.weight"]).all()


# ---------------------------------------------------------------- DPO in the loop


def dpo_study_args(model, out, rounds: int = 1) -> list[str]:
    from tests.test_iterate import study_args

    return study_args(model, out, rounds=rounds) + [
        "--update.name", "dpo",
        "--update.dpo.batch_size", "4",
        "--update.dpo.max_length", "256",
        "--update.dpo.train_on_truncated", "true",  # the tiny random model never ends a sample
    ]  # fmt: skip


@pytest.mark.slow
def test_a_dpo_study_killed_inside_its_dpo_stage_resumes_to_the_same_numbers(tmp_path, tiny_model_dir):
    """kill -9 while round 1 trains with DPO, then the same command: the metrics of an uninterrupted
    run, fp32 (the tiny model's CPU regime is forced). The round records its pairs and TRL's reward
    metrics in metrics.jsonl, report.md and W&B."""
    from tests.helpers import markdown_tables
    from tests.test_iterate import kill, launch, run, stable, wait_for

    fp32 = ["--engine.dtype", "float32", "--update.dpo.bf16", "false"]
    ref = tmp_path / "ref"
    run(dpo_study_args(tiny_model_dir, ref) + fp32 + ["--report_to", "wandb"])
    expected = stable(ref / "metrics.jsonl")
    train = expected[1]["train"]
    assert train["rule"] == "dpo" and train["dpo_pairs"] > 0 and train["dpo_steps"] > 0
    assert train["dpo_pairs"] == len(json.loads((ref / "round_001" / "dpo.json").read_text())["pairs_drawn"])
    for key in ("dpo_loss", "dpo_tokens", "dpo_reward_margin", "dpo_reward_accuracy", "dpo_pair_precision"):
        assert train[key] is not None, key
    assert train["dpo_prompts_paired"] + train["dpo_prompts_unpaired"] == 6
    table, _ = markdown_tables((ref / "report.md").read_text())
    assert table[1]["pairs (unpaired prompts)"] == f"{train['dpo_pairs']} ({train['dpo_prompts_unpaired']})"
    assert table[1]["reward margin"] == f"{train['dpo_reward_margin']:.3f}"
    (run_dir,) = (ref / "wandb").glob("offline-run-*")
    (record,) = run_dir.glob("run-*.wandb")  # the offline run's log of what it would send
    assert all(
        f"train/dpo_{k}".encode() in record.read_bytes()
        for k in ("pairs", "reward_margin", "reward_accuracy")
    )

    out = tmp_path / "killed"
    args = dpo_study_args(tiny_model_dir, out) + fp32
    log = tmp_path / "killed.log"
    proc = launch(args, log)
    wait_for(proc, out / "round_001" / "selection.parquet", log)
    time.sleep(1.0)
    kill(proc)
    assert not (out / "round_001" / "dpo.json").exists()
    run(args)
    assert stable(out / "metrics.jsonl") == expected


# ---------------------------------------------------------------- DPO on several processes


@pytest.fixture(scope="module")
def dpo_ddp(tiny_model_dir, tmp_path_factory):
    from tests.test_distill import launch

    out = tmp_path_factory.mktemp("dpo-ddp")
    return launch("cpu_2proc.yaml", tiny_model_dir, out, "lora", rule="dpo"), out


@pytest.mark.slow
def test_dpo_on_two_gloo_ranks_stays_in_sync_and_saves_once(dpo_ddp):
    from tests.test_distill import check_checkpoint

    results, out = dpo_ddp
    assert [(r["round"], r["rank"]) for r in results] == [(0, 0), (0, 1)]
    rank0, rank1 = results
    assert rank0["stats"]["world_size"] == 2 and rank0["stats"]["steps"] == 2  # 16 pairs / (4 x 2 ranks)
    assert rank0["checksum"] == rank1["checksum"], "the ranks' weights drifted apart (no DDP sync)"
    assert (rank0["saves"], rank1["saves"]) == (1, 0) and rank0["model_freed"] and rank1["model_freed"]
    assert rank0["stats"]["reward_margin_history"] == rank1["stats"]["reward_margin_history"]
    check_checkpoint(out / "round_0" / "checkpoint")


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MINDGAP_SKIP_DEEPSPEED") == "1", reason="MINDGAP_SKIP_DEEPSPEED=1 (DeepSpeed on CPU)"
)
@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_dpo_under_deepspeed_on_cpu_matches_ddp(config, dpo_ddp, tiny_model_dir, tmp_path):
    """ZeRO-2 and ZeRO-3 (weights sharded: the LoRA policy's reference is itself with its adapters
    off) train as the DDP run does, and the gathered, merged checkpoint equals its."""
    import torch

    from tests.test_distill import check_checkpoint, launch, weights

    results = launch(config, tiny_model_dir, tmp_path, "lora", num_processes=2, rule="dpo")
    assert [r["saves"] for r in results] == [1, 0] and all(r["model_freed"] for r in results)
    ddp, ddp_out = dpo_ddp
    assert results[0]["stats"]["loss_history"] == pytest.approx(ddp[0]["stats"]["loss_history"], abs=1e-4)
    check_checkpoint(tmp_path / "round_0" / "checkpoint")
    a, b = weights(ddp_out / "round_0" / "checkpoint"), weights(tmp_path / "round_0" / "checkpoint")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2) for k in a)
