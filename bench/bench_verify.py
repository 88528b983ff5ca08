"""Verification: what MC, CoT and tournament verification cost against the generation they verify.

The quickstart's workload: P prompts x n samples from SmolLM2-135M-Instruct on vLLM, then the model
verifies its own samples. MC verification is one pass per row (P("Correct") vs P("Incorrect") from
log-probabilities, no decoding), so it should cost a fraction of generating the samples: target
<= 0.2x. Side by side, alternating: generation, MC as it is now (one prefill per row), and MC the old
way (one prefill per verdict word, log-probs over every prompt position), on vLLM and on the hf
sampler. Then CoT (cot_binary) and tournament verification once each, in tokens and seconds.

    .venv/bin/python bench/bench_verify.py [--prompts 16] [--n 4] [--repeats 3]
"""

from __future__ import annotations

from common import (
    Result,
    command_line,
    interleave,
    median,
    quickstart_task,
    spread,
    timed,
    verify_context,
    vllm_quiet,
    workload_parser,
    workload_sampling,
)


class PerContinuation:
    """A sampler whose `score` prefills once per (prompt, continuation) pair: the old way, for hf."""

    def __init__(self, sampler):
        self.sampler = sampler

    def score(self, prompts, continuations):
        pairs = [(p, c) for p, cs in zip(prompts, continuations) for c in cs]
        flat = self.sampler.score([p for p, _ in pairs], [[c] for _, c in pairs])
        out, k = [], 0
        for cs in continuations:
            out.append([flat[k + j][0] for j in range(len(cs))])
            k += len(cs)
        return out


def main() -> None:
    ap = workload_parser(repeats=3)
    ap.add_argument("--no_hf", action="store_true")
    args = ap.parse_args()
    vllm_quiet()

    import dataclasses

    from trainer.config import EngineConfig, VerifierConfig
    from trainer.samplers.hf import HFSampler
    from trainer.samplers.vllm import VLLMSampler
    from trainer.stages import generate_rows
    from trainer.verifiers import VERIFIERS, make_verifier

    res = Result("verification", "Verification cost against generation", command_line())
    model_dir, task, problems, prompts, shots = quickstart_task(args.prompts)
    sampling = workload_sampling(args)
    sampler = VLLMSampler(model_dir, EngineConfig(backend="vllm"), seed=0)
    print(
        f"vLLM engine ({sampler.dtype}, scoring: {sampler.scoring}) started in {sampler.start_seconds:.1f} s"
    )
    ctx = verify_context(sampler, model_dir, task, shots)
    mc = VERIFIERS["mc"](VerifierConfig("mc"), ctx)
    rows = generate_rows(sampler, task, problems, prompts, sampling, seed=0)  # also a warm-up
    gen_tokens = int(rows["n_tokens"].sum())
    mc.score(rows)

    def generate() -> dict:
        again, s = timed(lambda: generate_rows(sampler, task, problems, prompts, sampling, seed=0))
        assert again["completion"].tolist() == rows["completion"].tolist()  # the same samples each time
        return {"seconds": s}

    def mc_vllm() -> dict:
        result, s = timed(lambda: mc.score(rows))
        return {"seconds": s, "tokens": result.tokens, "scores": result.scores.tolist()}

    def mc_vllm_old() -> dict:
        mode, sampler.scoring = sampler.scoring, "prompt_logprobs"
        try:
            result, s = timed(lambda: mc.score(rows))
        finally:
            sampler.scoring = mode
        return {"seconds": s, "scores": result.scores.tolist()}

    variants = {"generate": generate, "mc_vllm": mc_vllm, "mc_vllm_old": mc_vllm_old}
    hf = None
    if not args.no_hf:
        hf = HFSampler(model_dir, EngineConfig(backend="hf"), seed=0)
        mc_hf = VERIFIERS["mc"](VerifierConfig("mc"), dataclasses.replace(ctx, sampler=hf))
        mc_hf_old = VERIFIERS["mc"](
            VerifierConfig("mc"), dataclasses.replace(ctx, sampler=PerContinuation(hf))
        )

        def run_hf(verifier):
            def run() -> dict:
                result, s = timed(lambda: verifier.score(rows))
                return {"seconds": s, "scores": result.scores.tolist()}

            return run

        variants.update({"mc_hf": run_hf(mc_hf), "mc_hf_old": run_hf(mc_hf_old)})
    runs = interleave(variants, args.repeats, warmup=1)

    gen_s = median(runs["generate"], "seconds")
    mc_s = median(runs["mc_vllm"], "seconds")
    old_s = median(runs["mc_vllm_old"], "seconds")
    res.add("generation (vLLM)", gen_s, "s", note=f"{len(rows)} samples, {gen_tokens} tokens")
    res.add("MC verification (vLLM)", mc_s, "s", note=f"{len(rows)} rows, scoring: {sampler.scoring}")
    res.add("MC verification / generation (vLLM)", mc_s / gen_s, "x", target="<= 0.2")
    res.add("MC verification the old way (vLLM)", old_s, "s", note="one prefill per verdict, prompt_logprobs")
    res.add("MC speed-up, new over old (vLLM)", old_s / mc_s, "x")
    diff_v = max(abs(a - b) for a, b in zip(runs["mc_vllm"][0]["scores"], runs["mc_vllm_old"][0]["scores"]))
    res.add("MC scores, new vs old (vLLM), max |difference|", diff_v, "")
    if hf is not None:
        h, ho = median(runs["mc_hf"], "seconds"), median(runs["mc_hf_old"], "seconds")
        res.add("MC verification (hf)", h, "s")
        res.add("MC verification the old way (hf)", ho, "s")
        res.add("MC speed-up, new over old (hf)", ho / h, "x")
        diff_h = max(abs(a - b) for a, b in zip(runs["mc_hf"][0]["scores"], runs["mc_hf_old"][0]["scores"]))
        res.add("MC scores, new vs old (hf), max |difference|", diff_h, "")
        hf.close()
    res.add("MC tokens processed", runs["mc_vllm"][0]["tokens"], "tokens")

    # CoT and tournament: generation-based, once each (their cost is in generated text).
    others = {}
    for name, cfg in {
        "cot_binary": VerifierConfig("cot_binary"),
        "tournament (cot)": VerifierConfig("tournament"),
        "tournament (mc)": VerifierConfig("tournament", id="tournament_mc", options={"mode": "mc"}),
    }.items():
        verifier = make_verifier(cfg, ctx)
        result, s = timed(lambda v=verifier: v.score(rows))
        others[name] = {"seconds": s, "tokens": int(result.tokens), **result.extra}
        res.add(f"{name} verification", s, "s", note=f"{result.tokens} tokens")
        res.add(f"{name} verification / generation", s / gen_s, "x")
    sampler.close()

    for r in runs.values():
        for m in r:
            m.pop("scores", None)
    res.details = {
        "workload": {"prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens, "rows": len(rows)},
        "generated_tokens": gen_tokens,
        "vllm_dtype": sampler.dtype,
        "vllm_scoring": sampler.scoring,
        "spread_seconds": {k: spread(v, "seconds") for k, v in runs.items()},
        "runs": runs,
        "generation_based": others,
    }
    res.write()


if __name__ == "__main__":
    main()
