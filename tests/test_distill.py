"""Distillation (trainer/distill.py) with real TRL on the tiny Llama: LoRA and full fine-tunes, the saved
checkpoint, completion-only masking, determinism, and two gloo ranks under `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.errors import UserError
from trainer.distill import SFTOptions, build_trainer, distill
from trainer.training import model_from_gathered_state

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "distill_2proc.py"
pytestmark = pytest.mark.slow


def arith_rows(model_dir: Path, n: int = 16) -> pd.DataFrame:
    """Chat-rendered prompts; half the completions end with the EOS text already, half do not."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for i in range(n):
        a, b = i % 7 + 2, i % 5 + 3
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": f"What is {a} + {b}?"}], tokenize=False, add_generation_prompt=True
        )
        completion = f"{a} + {b} = {a + b}. The answer is {a + b}."
        rows.append({"prompt": prompt, "completion": completion + (tok.eos_token if i % 2 == 0 else "")})
    return pd.DataFrame(rows)


def opts(method: str, **kw) -> SFTOptions:
    # fp32 in every CPU regime: these tests compare runs (seeds, TRL's head, ranks) to 1e-4 and 1e-5;
    # bf16 SFT is checked on its own (test_bf16_sft_on_cpu_trains_and_saves)
    kw = {"learning_rate": 1e-3, "batch_size": 8, "epochs": 2, "max_length": 128, "bf16": False, **kw}
    return SFTOptions(method=method, **kw)


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def safetensors_dtypes(model_dir: Path) -> set[str]:
    from safetensors import safe_open

    dtypes = set()
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            dtypes |= {st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118 (safe_open has no iterator)
    return dtypes


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "checkpoint"
    return distill(arith_rows(tiny_model_dir), tiny_model_dir, out, opts("lora"), seed=0), out


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "checkpoint"
    return distill(arith_rows(tiny_model_dir), tiny_model_dir, out, opts("full"), seed=0), out


def check_checkpoint(out: Path, base: Path | None = None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    files = sorted(p.name for p in out.iterdir())
    assert "config.json" in files and "tokenizer.json" in files, files
    assert not [f for f in files if f.startswith("adapter")], files  # merged, not an adapter
    assert [f for f in files if f.endswith(".safetensors")], files
    assert safetensors_dtypes(out) == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert not any(p.name.startswith(".") for p in out.parent.iterdir()), "temp dirs left behind"
    if base is not None:  # what vLLM stops on: the base model's generation config, EOS list and all
        assert (
            GenerationConfig.from_pretrained(out).eos_token_id
            == GenerationConfig.from_pretrained(base).eos_token_id
        )


@pytest.fixture(scope="module")
def two_eos_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model whose generation_config.json (alone, not config.json) lists two EOS ids, as
    instruct models' often do: what a checkpoint rebuilt from its config alone would lose."""
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    out = tmp_path_factory.mktemp("two-eos") / "model"
    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    gen = GenerationConfig.from_pretrained(out)
    gen.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    gen.save_pretrained(out)
    return out


def test_lora_trains_and_saves_a_merged_bf16_checkpoint(lora_run, tiny_model_dir):
    stats, out = lora_run
    assert stats["steps"] == 4 and stats["samples"] == 16
    assert len(stats["loss_history"]) == 4
    assert stats["loss_history"][-1] < stats["loss_history"][0]
    assert stats["train_tokens"] > 0 and stats["tokens_per_second"] > 0 and stats["seconds"] > 0
    assert 0 < stats["trainable_params"] < 200_000  # r=16 adapters on 2 small layers, nothing else
    check_checkpoint(out)
    base, tuned = weights(tiny_model_dir), weights(out)
    assert set(base) == set(tuned)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (base[q] == tuned[q]).all(), "LoRA was not merged into the weights"
    emb = "model.embed_tokens.weight"
    assert (base[emb] == tuned[emb]).all()  # all-linear LoRA leaves the embeddings alone


def test_full_trains_every_weight_and_saves_bf16(full_run, tiny_model_dir):
    stats, out = full_run
    assert stats["loss_history"][-1] < stats["loss_history"][0]
    assert stats["trainable_params"] > 6_000_000  # the whole tiny model, embeddings included
    check_checkpoint(out)
    base, tuned = weights(tiny_model_dir), weights(out)
    assert not (base["model.embed_tokens.weight"] == tuned["model.embed_tokens.weight"]).all()


def test_same_seed_gives_identical_weights(lora_run, tiny_model_dir, tmp_path):
    stats, out = lora_run
    again = distill(arith_rows(tiny_model_dir), tiny_model_dir, tmp_path / "again", opts("lora"), seed=0)
    assert again["loss_history"] == stats["loss_history"]
    first, second = weights(out), weights(tmp_path / "again")
    assert all((first[k] == second[k]).all() for k in first)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_compact_head_learns_exactly_what_trl_learns(tiny_model_dir, tmp_path, method):
    """DistillTrainer only skips work the loss never reads (the prompt rows' projection through the
    vocabulary, the per-step entropy and top-1 accuracy): on the same batches it gives TRL's loss to
    1e-4, and after training the same weights."""
    import torch
    from trl import SFTTrainer

    from trainer import sft_trainer

    rows = arith_rows(tiny_model_dir)
    o = opts(method, batch_size=4, epochs=1)
    ours = build_trainer(rows, tiny_model_dir, o, seed=0, work_dir=tmp_path / "ours")
    real = sft_trainer.DistillTrainer
    try:
        sft_trainer.DistillTrainer = SFTTrainer  # the same build, with TRL's own trainer
        trl = build_trainer(rows, tiny_model_dir, o, seed=0, work_dir=tmp_path / "trl")
    finally:
        sft_trainer.DistillTrainer = real
    assert type(ours) is real and type(trl) is SFTTrainer
    batch = next(iter(ours.get_train_dataloader()))
    with torch.no_grad():
        a = ours.compute_loss(ours.model, dict(batch)).item()
        b = trl.compute_loss(trl.model, dict(batch)).item()
    assert abs(a - b) < 1e-4, (a, b)
    ours.train()
    trl.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (ours, trl)]
    assert len(losses[0]) == len(losses[1]) > 1
    assert all(abs(x - y) < 1e-4 for x, y in zip(*losses)), losses
    wa = dict(ours.model.named_parameters())
    for name, p in trl.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(wa[name], p, atol=1e-5), name


def test_loss_covers_completions_only_and_ends_with_one_eos(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    rows = arith_rows(tiny_model_dir, n=4)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = build_trainer(rows, tiny_model_dir, opts("lora", batch_size=4), seed=0, work_dir=tmp_path)
    assert trainer.completion_only_loss
    batch = next(iter(trainer.get_train_dataloader()))
    expected = []  # (token ids of prompt + completion + one EOS, prompt length)
    for prompt, completion in zip(rows["prompt"], rows["completion"]):
        text = completion if completion.endswith(tok.eos_token) else completion + tok.eos_token
        expected.append((tok(prompt + text)["input_ids"], len(tok(prompt)["input_ids"])))
    assert batch["input_ids"].shape[0] == 4
    for input_ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        full, n_prompt = next((f, n) for f, n in expected if input_ids[: len(f)] == f)
        assert full[-1] == tok.eos_token_id and full[-2] != tok.eos_token_id
        assert labels[:n_prompt] == [-100] * n_prompt, "prompt tokens carry loss"
        assert labels[n_prompt : len(full)] == full[n_prompt:], "completion tokens (with the EOS) lack loss"
        # padding has no loss; a second EOS appended by TRL would show up here with a label
        assert labels[len(full) :] == [-100] * (len(labels) - len(full)), (
            "EOS doubled, or padding carries loss"
        )
    assert not os.listdir(tmp_path)  # building the trainer writes nothing


def test_truncated_samples_train_without_an_eos(tiny_model_dir, tmp_path):
    """A sample cut off at the token budget did not end there: with `train_on_truncated` it is
    trained on as it stands, without the EOS that TRL appends to every completion."""
    from transformers import AutoTokenizer

    rows = arith_rows(tiny_model_dir, n=4)
    rows["finish_reason"] = ["stop", "length", "stop", "length"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = build_trainer(
        rows, tiny_model_dir, opts("lora", batch_size=4, train_on_truncated=True), seed=0, work_dir=tmp_path
    )
    ends = [ids[-1] == tok.eos_token_id for ids in trainer.train_dataset["input_ids"]]
    assert ends == [True, False, True, False]
    for ids, labels in zip(trainer.train_dataset["input_ids"], trainer.train_dataset["labels"]):
        assert len(ids) == len(labels) and labels[-1] == ids[-1]  # the last kept token still trains
    with pytest.raises(UserError, match="sft.packing"):
        build_trainer(
            rows,
            tiny_model_dir,
            opts("lora", batch_size=4, packing=True, train_on_truncated=True),
            seed=0,
            work_dir=tmp_path,
        )


def test_zero3_gathered_lora_state_is_merged_by_peft(tiny_model_dir):
    """What ZeRO-3's save does with the state dict it gathered: a PeftModel rebuilt on CPU from it,
    merged by PEFT, equals merging the live PeftModel."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    peft = get_peft_model(model, lora)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at zero; make the adapters matter
    gathered = {k: v.clone() for k, v in peft.state_dict().items()}
    model.generation_config.eos_token_id = [2, 0]  # what only generation_config.json may hold
    rebuilt = model_from_gathered_state(
        model.config, gathered, peft.peft_config["default"], generation_config=model.generation_config
    )
    expected = peft.merge_and_unload().to(torch.bfloat16).state_dict()
    got = rebuilt.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert rebuilt.generation_config.eos_token_id == [2, 0]


@pytest.mark.parametrize("regime", ["bfloat16", "float32"])
def test_bf16_auto_follows_the_cpu_regime(monkeypatch, regime):
    """On a CPU, `sft.bf16: auto` trains in bf16 exactly where `engine.dtype: auto` samples in it."""
    monkeypatch.setenv("MINDGAP_CPU_DTYPE", regime)
    assert SFTOptions(bf16="auto").use_bf16() is (regime == "bfloat16")


def test_bf16_sft_on_cpu_trains_and_saves(tiny_model_dir, tmp_path):
    """bf16 autocast SFT on a CPU (native or emulated bf16): the loss falls and a bf16 checkpoint loads."""
    out = tmp_path / "checkpoint"
    stats = distill(arith_rows(tiny_model_dir), tiny_model_dir, out, opts("lora", bf16=True), seed=0)
    assert stats["bf16"] is True
    assert stats["loss_history"][-1] < stats["loss_history"][0]
    check_checkpoint(out)


def test_options_and_inputs_are_checked(tiny_model_dir, tmp_path):
    for bad, field in [
        ({"method": "qlora"}, "sft.method"),
        ({"bf16": "maybe"}, "sft.bf16"),
        ({"epochs": 0}, "sft.epochs"),
        ({"deepspeed": "nope.json"}, "sft.deepspeed"),
        ({"warmup_ratio": 1.5}, "sft.warmup_ratio"),
    ]:
        with pytest.raises(UserError, match=field):
            SFTOptions(**bad).validate("sft")
    SFTOptions(deepspeed=str(ROOT / "launch" / "ds_zero2.json"), bf16=True).validate("sft")
    assert SFTOptions(bf16="true").use_bf16() is True
    assert SFTOptions(bf16="false").use_bf16() is False
    with pytest.raises(ValueError, match="no rows"):
        distill(
            pd.DataFrame({"prompt": [], "completion": []}), tiny_model_dir, tmp_path / "x", SFTOptions(), 0
        )
    assert not (tmp_path / "x").exists()
    if "LOCAL_RANK" not in os.environ:  # a plain process: DeepSpeed needs a launcher, and says so
        with pytest.raises(UserError, match="sft.deepspeed"):
            ds = SFTOptions(deepspeed=str(ROOT / "launch" / "ds_zero2.json"))
            distill(arith_rows(tiny_model_dir, 2), tiny_model_dir, tmp_path / "y", ds, 0)
        assert not (tmp_path / "y").exists()


# ---------------------------------------------------------------- several processes


def launch(
    config: str,
    model_dir: Path,
    out: Path,
    method: str,
    rounds: int = 1,
    num_processes: int | None = None,
    rule: str = "sft",
):
    """Run tests/scripts/distill_2proc.py under `accelerate launch`; return the RESULT lines by (round, rank)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch" / config)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    cmd += [str(SCRIPT), str(model_dir), str(out), method, str(rounds), rule]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    lines = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return sorted((json.loads(line) for line in lines), key=lambda r: (r["round"], r["rank"]))


@pytest.fixture(scope="module")
def ddp_run(two_eos_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return launch("cpu_2proc.yaml", two_eos_dir, out, "lora", rounds=2), out


def test_two_gloo_ranks_stay_in_sync_and_save_once(ddp_run, two_eos_dir):
    """Two rounds in the same two processes, as the loop runs them: the second starts from the first's output."""
    results, out = ddp_run
    assert [(r["round"], r["rank"]) for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for rank0, rank1 in (results[:2], results[2:]):
        assert rank0["world_size"] == rank1["world_size"] == rank0["stats"]["world_size"] == 2
        assert rank0["checksum"] == rank1["checksum"], "the ranks' weights drifted apart (no DDP sync)"
        assert (rank0["saves"], rank1["saves"]) == (1, 0)  # only the main process writes the checkpoint
        assert rank0["stats"]["loss_history"] == rank1["stats"]["loss_history"]
        assert rank0["stats"]["steps"] == 2  # 16 rows / (4 per device x 2 ranks), one epoch
        assert rank0["model_freed"] and rank1["model_freed"]
    assert (
        results[2]["stats"]["loss_history"][0] < results[0]["stats"]["loss_history"][0]
    )  # round 1 built on 0
    assert sorted(p.name for p in out.iterdir()) == ["round_0", "round_1"]
    for r in ("round_0", "round_1"):
        assert sorted(p.name for p in (out / r).iterdir()) == ["checkpoint"]
        check_checkpoint(out / r / "checkpoint", base=two_eos_dir)


@pytest.mark.skipif(
    os.environ.get("MINDGAP_SKIP_DEEPSPEED") == "1",
    reason="MINDGAP_SKIP_DEEPSPEED=1 (DeepSpeed on CPU: ~1 min a test, plus ~4 min to compile its shm op on first use)",
)
@pytest.mark.parametrize("config", ["zero2.yaml", "zero3.yaml"])
def test_deepspeed_lora_on_cpu_matches_ddp(config, ddp_run, two_eos_dir, tmp_path):
    """ZeRO-2 shards optimizer state and gradients, ZeRO-3 the weights too; either way the ranks train
    as the DDP run does, the (gathered, merged) checkpoint equals its and keeps the base model's
    generation config, and the DeepSpeed engine lets go of the model once the stage is done."""
    import torch

    results = launch(config, two_eos_dir, tmp_path, "lora", num_processes=2)
    assert [r["saves"] for r in results] == [1, 0]
    assert [r["model_freed"] for r in results] == [True, True]
    assert results[0]["stats"]["world_size"] == 2
    if config == "zero2.yaml":  # weights stay replicated: both ranks hold the same ones
        assert results[0]["checksum"] == results[1]["checksum"] is not None
    ddp_results, ddp_out = ddp_run
    assert results[0]["stats"]["loss_history"] == pytest.approx(
        ddp_results[0]["stats"]["loss_history"], abs=1e-4
    )
    check_checkpoint(tmp_path / "round_0" / "checkpoint", base=two_eos_dir)
    a, b = weights(ddp_out / "round_0" / "checkpoint"), weights(tmp_path / "round_0" / "checkpoint")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2) for k in a)
