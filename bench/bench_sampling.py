"""Sampling: mindgap's vLLM sampler against a plain `vllm.LLM.generate` script, and against the hf sampler.

All three sample the same prompts (the quickstart's: 2-digit addition, SmolLM2-135M-Instruct chat
prompts) with the same settings (n, temperature, top_p, max_tokens). "plain" is what a script
without mindgap would do: `llm.generate(prompt_texts, SamplingParams(...))` on the very same engine,
so the ratio isolates mindgap's own work around it (tokenizing, request building, the CPU
reproducibility protocol of pause / reseed / prefix-cache reset / enqueue / resume, and turning outputs
into rows). Figures are tokens generated per second over alternating repeats, pooled (all tokens /
all seconds: sampled lengths vary from call to call).

    .venv/bin/python bench/bench_sampling.py [--prompts 16] [--repeats 6] [--hf_repeats 3]
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
    vllm_quiet,
    workload_parser,
)


def pooled(runs: list[dict]) -> float:
    return sum(r["tokens"] for r in runs) / sum(r["seconds"] for r in runs)


def main() -> None:
    ap = workload_parser(repeats=6)
    ap.add_argument("--hf_repeats", type=int, default=3, help="0 skips the hf sampler")
    args = ap.parse_args()
    vllm_quiet()

    from vllm import SamplingParams

    from trainer.config import EngineConfig
    from trainer.samplers.hf import HFSampler
    from trainer.samplers.vllm import VLLMSampler

    res = Result("sampling", "Sampling: mindgap vLLM sampler vs plain vLLM vs hf sampler", command_line())
    model_dir, _, _, prompts, _ = quickstart_task(args.prompts)
    kw = dict(n=args.n, temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens)
    sampler = VLLMSampler(model_dir, EngineConfig(backend="vllm"), seed=0)
    print(f"vLLM engine ({sampler.dtype}) started in {sampler.start_seconds:.1f} s", flush=True)
    llm = sampler.llm
    # The plain script's inputs are the prompt texts; vLLM tokenizes them itself. Check it sees the
    # same tokens as mindgap (which tokenizes without adding special tokens).
    check = llm.generate(prompts[:2], SamplingParams(max_tokens=1), use_tqdm=False)
    assert [list(o.prompt_token_ids) for o in check] == [sampler.encode(p) for p in prompts[:2]]

    seeds = iter(range(1000))

    def mindgap() -> dict:
        outs, s = timed(lambda: sampler.generate(prompts, seed=next(seeds), **kw))
        tokens = sum(c.n_tokens for cs in outs for c in cs)
        return {"seconds": s, "tokens": tokens, "tok_per_s": tokens / s}

    def plain() -> dict:
        params = SamplingParams(n=args.n, temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens)
        # Fresh prompts, as in a study (each call there samples other prompts or new weights): the same
        # prompts again would be served from the prefix cache, which mindgap's sampler resets per call.
        llm.reset_prefix_cache()
        outs, s = timed(lambda: llm.generate(prompts, params, use_tqdm=False))
        tokens = sum(len(o.token_ids) for r in outs for o in r.outputs)
        return {"seconds": s, "tokens": tokens, "tok_per_s": tokens / s}

    hf = HFSampler(model_dir, EngineConfig(backend="hf"), seed=0) if args.hf_repeats else None

    def hf_run() -> dict:
        outs, s = timed(lambda: hf.generate(prompts, seed=next(seeds), **kw))
        tokens = sum(c.n_tokens for cs in outs for c in cs)
        return {"seconds": s, "tokens": tokens, "tok_per_s": tokens / s}

    mindgap()  # warm-up of both paths (first-call allocations), not counted
    plain()
    runs = interleave({"mindgap_vllm": mindgap, "plain_vllm": plain}, args.repeats, warmup=1)
    if hf is not None:
        # hf is slow: fewer repeats, each next to a mindgap vLLM run so both see the same load.
        more = interleave({"mindgap_vllm": mindgap, "hf": hf_run}, args.hf_repeats)
        runs["hf"] = more["hf"]
        runs["mindgap_vllm_beside_hf"] = more["mindgap_vllm"]
        hf_dtype = str(hf.model.dtype).removeprefix("torch.")
        hf.close()
    sampler.close()

    # Sampled lengths differ from call to call, and a call's speed depends on them (a batch runs until
    # its longest sample ends): throughput pooled over the repeats (all tokens / all seconds) is the
    # figure, the median of the per-call rates is shown beside it.
    m, p = pooled(runs["mindgap_vllm"]), pooled(runs["plain_vllm"])
    note = "median of calls {:.1f} tok/s"
    res.add("mindgap vLLM sampler", m, "tok/s", note=note.format(median(runs["mindgap_vllm"], "tok_per_s")))
    res.add("plain vllm.LLM.generate", p, "tok/s", note=note.format(median(runs["plain_vllm"], "tok_per_s")))
    res.add("mindgap / plain vLLM (throughput)", m / p, "x", target=">= 0.95")
    if hf is not None:
        h = pooled(runs["hf"])
        beside = pooled(runs["mindgap_vllm_beside_hf"])
        res.add("hf sampler (transformers generate)", h, "tok/s", note=f"engine.dtype auto: {hf_dtype}")
        res.add("mindgap vLLM / hf sampler", beside / h, "x")
    res.details = {
        "workload": {"prompts": len(prompts), **kw, "dtype_vllm": sampler.dtype},
        "spread_tok_per_s": {k: spread(v, "tok_per_s") for k, v in runs.items()},
        "runs": runs,
    }
    res.write()


if __name__ == "__main__":
    main()
