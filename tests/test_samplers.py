"""Samplers on the packaged SmolLM2 model: transformers and vLLM, checked against each other.

One transformers model and one vLLM engine serve the whole module (an engine takes ~5 GB and 20+ s to
start). Generations are kept short: the machine is small and shared.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.errors import UserError
from tests.conftest import HAS_VLLM, needs_vllm
from trainer.config import EngineConfig
from trainer.samplers import available_backends, build_sampler, resolve_backend
from trainer.samplers.base import Completion

QUESTIONS = [
    "What is 2+3?",
    "Name one primary color.",
    "Write one sentence about the sea, the sky and the wind.",
]
# (sensible, nonsense) continuations of the first two questions, of similar length
CONTINUATIONS = [
    ["2 + 3 = 5.", "Purple elephants sing in fridges."],
    ["Red is a primary color.", "Seven bananas orbit the lamp."],
]
GREEDY_TOKENS = 16
# The module's two samplers run in fp32 whatever `engine.dtype: auto` resolves to on this CPU: the tests
# below check that two computations are the same (one prefill against one per continuation, in a
# batch against alone, a weight swap against a fresh load, vLLM against transformers), and in bf16
# the answer would differ with the batch it was computed in. bf16 itself is checked against this fp32
# reference in `test_bf16_scores_track_fp32`; the recipes' end-to-end tests run in the machine's regime.
REFERENCE = "float32"
# vLLM against transformers, both in fp32: other kernels, other summation orders (measured: 3e-5 nats
# on these continuations, whose log-probabilities reach -66).
FP32_ATOL = 2e-3
FP32_RTOL = 1e-4
# bf16 against fp32. bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.0039), and each of a
# continuation's tokens is read off hidden states rounded to it through 30 layers, so the error of a
# summed log-probability grows with its size: allow 0.3 nats plus 5 units of roundoff per nat.
# (Measured: ~0.2 nats on short sensible answers, ~0.7 on 10-token nonsense at -66 nats.)
BF16_UNIT_ROUNDOFF = 2.0**-8
BF16_ATOL = 0.3
BF16_RTOL = 5 * BF16_UNIT_ROUNDOFF


def render(tokenizer, questions: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]


def assert_scores_close(
    a: list[list[float]], b: list[list[float]], atol: float = FP32_ATOL, rtol: float = FP32_RTOL
) -> None:
    for row_a, row_b in zip(a, b):
        for x, y in zip(row_a, row_b):
            assert abs(x - y) <= atol + rtol * abs(y), (a, b)


def max_change(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    from trainer.samplers.hf import HFSampler

    sampler = HFSampler(smollm2_dir, EngineConfig(backend="hf", dtype=REFERENCE, batch_size=2), seed=0)
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def prompts(hf) -> list[str]:
    return render(hf.tokenizer, QUESTIONS)


@pytest.fixture(scope="module")
def hf_greedy(hf, prompts) -> list[list[Completion]]:
    return hf.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=GREEDY_TOKENS, seed=0)


@pytest.fixture(scope="module")
def hf_scores(hf, prompts) -> list[list[float]]:
    return hf.score(prompts[:2], CONTINUATIONS)


@pytest.fixture(scope="module")
def vllm_sampler(smollm2_dir):
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    from trainer.samplers.vllm import VLLMSampler

    sampler = VLLMSampler(
        smollm2_dir, EngineConfig(backend="vllm", dtype=REFERENCE, max_model_len=512), seed=0
    )
    print(f"\nvLLM engine start: {sampler.start_seconds:.1f} s")
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def perturbed_dir(tmp_path_factory, smollm2_dir) -> Path:
    """The packaged model with layer 0's MLP output doubled and its (tied) embeddings scaled: same
    architecture, different scores, and an LM head that a swap must load too (vLLM 0.32's in-place
    reload put a tied head's old weights back: trainer.samplers.vllm.MindgapWorkerExtension)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("smollm2-perturbed")
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(2.0)
        model.model.embed_tokens.weight.mul_(1.25)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def perturbed_scores(perturbed_dir, prompts) -> list[list[float]]:
    """Scores from a fresh transformers load of the perturbed copy: what a weight swap must reproduce."""
    from trainer.samplers.hf import HFSampler

    fresh = HFSampler(perturbed_dir, EngineConfig(backend="hf", dtype=REFERENCE, batch_size=2), seed=0)
    try:
        return fresh.score(prompts[:2], CONTINUATIONS)
    finally:
        fresh.close()


# ---------------------------------------------------------------- backends (no model)


def test_available_backends():
    backends = available_backends()
    assert backends[-1] == "hf"
    assert ("vllm" in backends) == HAS_VLLM
    assert resolve_backend("auto") == ("vllm" if HAS_VLLM else "hf")
    assert resolve_backend("hf") == "hf"
    with pytest.raises(UserError, match="engine.backend"):
        resolve_backend("onnx")


@pytest.mark.parametrize("backend", ["hf", "vllm", "auto"])
def test_build_sampler_on_a_dir_without_config_is_a_user_error(tmp_path, backend):
    if backend == "vllm" and not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    with pytest.raises(UserError) as e:
        build_sampler(tmp_path, EngineConfig(backend=backend), seed=0)
    assert str(tmp_path) in str(e.value)


@pytest.mark.slow
def test_build_sampler_on_a_broken_model_dir_is_a_user_error(tmp_path, smollm2_dir):
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(smollm2_dir / name, tmp_path / name)  # no weights
    with pytest.raises(UserError) as e:
        build_sampler(tmp_path, EngineConfig(backend="hf"), seed=0)
    assert str(tmp_path) in str(e.value)


def test_plan_carriers_groups_continuations_that_share_all_but_their_last_token():
    from trainer.samplers.base import plan_carriers

    # SmolLM2: "Correct" = [38323], "Incorrect" = [788, 18382]: one pass over prompt + In + correct.
    (carrier,) = plan_carriers(0, [[38323], [788, 18382]])
    assert carrier.tokens == [788, 18382]
    assert sorted(carrier.members) == [(0, [38323]), (1, [788, 18382])]
    assert carrier.rows == [[788, 38323], [18382]]
    # "Winner: A" / "Winner: B": same prefix, different last token.
    assert len(plan_carriers(0, [[5, 6, 7], [5, 6, 8]])) == 1
    # Differing before the last token: two passes; empty continuations: none.
    assert [c.tokens for c in plan_carriers(3, [[1, 2], [3, 4], []])] == [[1, 2], [3, 4]]
    # A cap on the ids read per pass splits a group.
    assert len(plan_carriers(0, [[1, 2], [1, 3], [1, 4]], max_ids=3)) == 2
    # Reading: a member sums its rows.
    lp = {(0, 788): -1.0, (0, 38323): -2.0, (1, 18382): -0.5}
    assert carrier.read(lambda r, t: lp[(r, t)]) == {0: -2.0, 1: -1.5}


# ---------------------------------------------------------------- transformers


@pytest.mark.slow
def test_hf_generate_shapes_counts_and_seeding(hf, prompts):
    kw = dict(n=2, temperature=0.9, top_p=0.95, max_tokens=6)
    out = hf.generate(prompts, seed=1, **kw)  # batch_size=2: two batches, the first left-padded
    assert len(out) == len(prompts)
    for comps in out:
        assert len(comps) == 2
        for c in comps:
            assert isinstance(c, Completion)
            assert 1 <= c.n_tokens <= 6
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert c.n_tokens == 6
            assert "<|im_end|>" not in c.text and "<|im_start|>" not in c.text
            # the text re-encodes to (about) the generated tokens, the eos aside
            assert abs(len(hf.encode(c.text)) - (c.n_tokens - (c.finish_reason == "stop"))) <= 2
    assert hf.generate(prompts, seed=1, **kw) == out  # same seed, same samples
    other = hf.generate(prompts[:1], seed=2, **kw)
    assert [c.text for c in other[0]] != [c.text for c in out[0]]


@pytest.mark.slow
def test_hf_greedy_ignores_padding_and_repeats_for_n(hf, prompts, hf_greedy):
    assert [len(c) for c in hf_greedy] == [1, 1, 1]
    assert hf_greedy[0][0].text.strip().startswith("2 + 3 = 5")
    assert hf_greedy[0][0].finish_reason == "stop"
    # Prompt 1 decoded alone (no padding) and beside the longer prompt 2 (so left-padded): the same
    # tokens (in fp32; in bf16 a matmul over another batch shape may round a near-tie differently).
    alone = hf.generate([prompts[1]], n=3, temperature=0.0, top_p=1.0, max_tokens=8, seed=5)
    assert len(alone[0]) == 3 and len({c.text for c in alone[0]}) == 1
    assert len(hf.encode(prompts[2])) > len(hf.encode(prompts[1]))
    padded = hf.generate([prompts[2], prompts[1]], n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=0)
    assert padded[1][0] == alone[0][0]
    assert hf.encode(padded[0][0].text)[:8] == hf.encode(hf_greedy[2][0].text)[:8]


@pytest.mark.slow
def test_hf_score_ranks_sensible_above_nonsense(hf_scores):
    for sensible, nonsense in hf_scores:
        assert sensible < 0 and nonsense < 0
        assert sensible > nonsense + 5


@pytest.mark.slow
def test_hf_score_is_a_sum_of_token_logprobs(hf, prompts, hf_scores):
    # Scoring a continuation in two parts sums to the whole (the split falls on a token boundary).
    first = hf.score([prompts[0]], [["2 + 3", ""]])[0]
    assert first[1] == 0.0  # an empty continuation
    rest = hf.score([prompts[0] + "2 + 3"], [[" = 5."]])[0][0]
    assert abs(first[0] + rest - hf_scores[0][0]) < 0.05


VERDICTS = [["Correct", "Incorrect"], ["Winner: A", "Winner: B"], ["Red is a primary color.", "Red", ""]]


def per_continuation(sampler, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
    """The old way: one prefill for every (prompt, continuation) pair."""
    pairs = [(p, c) for p, cs in zip(prompts, continuations) for c in cs]
    flat = sampler.score([p for p, _ in pairs], [[c] for _, c in pairs])
    out, k = [], 0
    for cs in continuations:
        out.append([flat[k + j][0] for j in range(len(cs))])
        k += len(cs)
    return out


@pytest.mark.slow
def test_hf_one_prefill_per_prompt_equals_one_per_continuation(hf, prompts):
    one = hf.score(prompts, VERDICTS)
    each = per_continuation(hf, prompts, VERDICTS)
    assert one[2][2] == 0.0
    assert max_change(one, each) < 2e-3, (one, each)


@pytest.mark.slow
def test_hf_load_weights_swaps_in_place(hf, prompts, hf_scores, perturbed_dir, perturbed_scores, smollm2_dir):
    expected = perturbed_scores
    model = hf.model
    hf.load_weights(perturbed_dir)
    try:
        assert hf.model is model and hf.model_dir == perturbed_dir
        assert hf.score(prompts[:2], CONTINUATIONS) == expected
        assert max_change(expected, hf_scores) > 1.0  # the perturbation matters
    finally:
        hf.load_weights(smollm2_dir)
    assert hf.score(prompts[:2], CONTINUATIONS) == hf_scores


# ---------------------------------------------------------------- vLLM (against transformers)


@needs_vllm
@pytest.mark.slow
def test_vllm_greedy_matches_hf(vllm_sampler, prompts, hf_greedy):
    t0 = time.perf_counter()
    out = vllm_sampler.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_tokens=GREEDY_TOKENS, seed=0)
    seconds = time.perf_counter() - t0
    n_tokens = sum(cs[0].n_tokens for cs in out)  # decoded once per prompt, then repeated
    print(f"\nvLLM greedy: {n_tokens} tokens in {seconds:.1f} s ({n_tokens / seconds:.0f} tok/s)")
    enc = vllm_sampler.encode
    for v, h in zip(out, hf_greedy):
        assert len(v) == 2 and v[0] == v[1]
        # The backends' fp32 kernels sum in other orders; a long greedy run may part ways on a near-tie,
        # so the first 8 tokens must agree, and agreeing texts must agree in count and reason.
        assert enc(v[0].text)[:8] == enc(h[0].text)[:8], (v[0].text, h[0].text)
        if v[0].text == h[0].text:
            assert (v[0].n_tokens, v[0].finish_reason) == (h[0].n_tokens, h[0].finish_reason)
    assert sum(v[0].text == h[0].text for v, h in zip(out, hf_greedy)) >= 2


@needs_vllm
@pytest.mark.slow
def test_vllm_generate_shapes_counts_and_seeding(vllm_sampler, prompts):
    kw = dict(n=3, temperature=1.0, top_p=1.0, max_tokens=8)
    out = vllm_sampler.generate(prompts, seed=7, **kw)
    assert [len(c) for c in out] == [3, 3, 3]
    for comps in out:
        for c in comps:
            assert 1 <= c.n_tokens <= 8 and c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert c.n_tokens == 8
            assert "<|im_end|>" not in c.text
    texts = [[c.text for c in cs] for cs in out]
    assert any(len(set(t)) > 1 for t in texts)  # n samples, not one sample n times
    # Reproducible under the same seed, even after other work on the engine.
    vllm_sampler.generate(prompts[:1], seed=3, **kw)
    assert vllm_sampler.generate(prompts, seed=7, **kw) == out
    assert [c.text for c in vllm_sampler.generate(prompts[:1], seed=8, **kw)[0]] != texts[0]


@needs_vllm
@pytest.mark.slow
def test_vllm_long_prompt_is_a_user_error(vllm_sampler):
    with pytest.raises(UserError, match="max_model_len"):
        vllm_sampler.generate(["word " * 600], n=1, temperature=0.0, top_p=1.0, max_tokens=4, seed=0)


@needs_vllm
@pytest.mark.slow
def test_vllm_scores_agree_with_hf(vllm_sampler, prompts, hf_scores):
    scores = vllm_sampler.score(prompts[:2], CONTINUATIONS)
    print(f"\nhf vs vLLM scores: hf={hf_scores} vllm={scores} max diff {max_change(scores, hf_scores):.3f}")
    assert_scores_close(scores, hf_scores)
    for sensible, nonsense in scores:
        assert sensible > nonsense + 5
    # Alone, it is scored in another batch (and without the prefix cache's blocks): the same to rounding.
    alone = vllm_sampler.score(prompts[:1], [["", "2 + 3 = 5."]])
    assert alone[0][0] == 0.0 and abs(alone[0][1] - scores[0][0]) < 1e-3


@needs_vllm
@pytest.mark.slow
def test_vllm_one_prefill_per_prompt_equals_one_per_continuation(vllm_sampler, prompts, hf):
    """The forced-decoding scorer (one request per prompt and verdict pair) against the old scorer
    (one prefill per continuation, prompt_logprobs over the whole sequence) and transformers."""
    expected_mode = (
        "prompt_token_ids" if vllm_sampler.llm.llm_engine.vllm_config.use_v2_model_runner else "forced"
    )
    assert vllm_sampler.scoring == expected_mode
    t0 = time.perf_counter()
    one = vllm_sampler.score(prompts, VERDICTS)
    t_one = time.perf_counter() - t0
    mode, vllm_sampler.scoring = vllm_sampler.scoring, "prompt_logprobs"
    try:
        t0 = time.perf_counter()
        each = vllm_sampler.score(prompts, VERDICTS)
        t_each = time.perf_counter() - t0
    finally:
        vllm_sampler.scoring = mode
    print(f"\nvLLM scoring: one prefill per prompt {t_one:.2f} s, one per continuation {t_each:.2f} s")
    assert one[2][2] == each[2][2] == 0.0
    # Same dtype, other kernels (a decode step reads what a prefill row computed): tight in fp32.
    assert max_change(one, each) < 2e-3, (one, each)
    assert_scores_close(one, hf.score(prompts, VERDICTS))


@needs_vllm
@pytest.mark.slow
def test_vllm_load_weights_matches_a_fresh_load_and_swaps_back(
    vllm_sampler, prompts, perturbed_dir, perturbed_scores, smollm2_dir
):
    expected = perturbed_scores
    before = vllm_sampler.score(prompts[:2], CONTINUATIONS)

    t0 = time.perf_counter()
    vllm_sampler.load_weights(perturbed_dir)
    print(f"\nvLLM weight swap: {time.perf_counter() - t0:.2f} s")
    try:
        assert vllm_sampler.model_dir == perturbed_dir
        after = vllm_sampler.score(prompts[:2], CONTINUATIONS)
        assert max_change(after, before) > 1.0  # the new weights are in use
        assert_scores_close(after, expected)
    finally:
        vllm_sampler.load_weights(smollm2_dir)
    back = vllm_sampler.score(prompts[:2], CONTINUATIONS)
    assert back == before  # the same weights, inputs and batches: the same numbers, bit for bit


# ---------------------------------------------------------------- bf16 against the fp32 reference


@pytest.fixture()
def bf16_sampler(request, smollm2_dir):
    """A bf16 sampler of the backend named by the test's parameter (bf16 is emulated, and slower, on
    CPUs without AVX512-BF16/AMX, but numerically the same)."""
    backend = request.param
    if backend == "vllm" and not HAS_VLLM:
        pytest.skip("vLLM is not installed")
    engine = EngineConfig(backend=backend, dtype="bfloat16", batch_size=2, max_model_len=512, kv_cache_gb=1)
    sampler = build_sampler(smollm2_dir, engine, seed=0)
    yield sampler
    sampler.close()


@pytest.mark.slow
@pytest.mark.parametrize("bf16_sampler", ["hf", "vllm"], indirect=True)
def test_bf16_scores_track_fp32_and_repeat_exactly(bf16_sampler, prompts, hf_scores):
    scores = bf16_sampler.score(prompts[:2], CONTINUATIONS)
    print(f"\nbf16 {bf16_sampler.backend} against fp32 hf: max diff {max_change(scores, hf_scores):.3f}")
    assert_scores_close(scores, hf_scores, atol=BF16_ATOL, rtol=BF16_RTOL)
    for sensible, nonsense in scores:
        assert sensible > nonsense + 5
    # Other work in between (another batch shape), then the same call: bit for bit the same, because
    # the batches a call runs in depend on its inputs alone.
    bf16_sampler.score(prompts, VERDICTS)
    assert bf16_sampler.score(prompts[:2], CONTINUATIONS) == scores


@needs_vllm
@pytest.mark.slow
def test_stop_strings_end_completions_alike_on_both_backends(hf, vllm_sampler, prompts, hf_greedy):
    """A completion ends before the first stop string it writes; the tokens that wrote it are counted."""
    full = hf_greedy[2][0]
    words = full.text.split()
    assert len(words) >= 5, full.text  # the sentence about the sea runs past the stop word
    stop = " " + words[3]
    expected = full.text[: full.text.find(stop)]
    kw = dict(n=1, temperature=0.0, top_p=1.0, max_tokens=GREEDY_TOKENS, seed=0)
    (h,) = hf.generate(prompts[2:], stop=[stop, "never written"], **kw)[0]
    (v,) = vllm_sampler.generate(prompts[2:], stop=[stop, "never written"], **kw)[0]
    assert h.text == v.text == expected
    assert h.finish_reason == v.finish_reason == "stop"
    assert h.n_tokens == v.n_tokens < full.n_tokens


@needs_vllm
@pytest.mark.slow
def test_vllm_sleep_is_a_no_op_on_cpu_and_close_frees_the_engine(vllm_sampler, prompts):
    import psutil

    vllm_sampler.sleep()
    vllm_sampler.wake_up()
    if vllm_sampler.cpu:
        assert not vllm_sampler.asleep
    assert vllm_sampler.generate(prompts[:1], n=1, temperature=0.0, top_p=1.0, max_tokens=4, seed=0)

    def is_engine(p: psutil.Process) -> bool:  # not multiprocessing's resource tracker, which stays
        try:
            return "resource_tracker" not in " ".join(p.cmdline())
        except psutil.Error:
            return False

    engine_procs = [p for p in psutil.Process().children(recursive=True) if is_engine(p)]
    assert engine_procs  # the engine core process (and on CPU its worker)
    vllm_sampler.close()
    gone, alive = psutil.wait_procs(engine_procs, timeout=30)
    assert not alive, [p.name() for p in alive]
    with pytest.raises(RuntimeError, match="close"):
        vllm_sampler.generate(prompts[:1], n=1, temperature=0.0, top_p=1.0, max_tokens=4, seed=0)
    vllm_sampler.close()  # twice is fine
