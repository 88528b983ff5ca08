"""Rounds: a 5-round self-improvement study, run as a user runs it, and what each round costs.

Runs `recipes/iterate.py` (the quickstart config, smaller) in a subprocess and reads its
metrics.jsonl: seconds per stage per round, the time to swap each new checkpoint into the running vLLM
engine, and the resident memory of the study's processes (the recipe and its engine processes) after
every round, which must stay flat: no round may leave memory behind. A sampler polls the process tree
meanwhile for the peak.

    .venv/bin/python bench/bench_rounds.py [--rounds 5] [--train_size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, Result, command_line

from trainer.memory import rss_by_process, rss_mb


def study_args(out: Path, rounds: int, train_size: int, test_size: int, n: int, backend: str) -> list[str]:
    return [
        "--output_dir", str(out),
        "--rounds", str(rounds),
        "--report_to", "none",
        "--engine.backend", backend,
        "--task.train_size", str(train_size),
        "--task.test_size", str(test_size),
        "--sampling.n", str(n),
        "--sampling.max_tokens", "64",
        "--eval_sampling.n", "2",
        "--eval_sampling.max_tokens", "64",
        "--filter.q", "0.5",
        "--sft.epochs", "1",
        "--bootstrap", "100",
        "--saturation.relative_gap_below", "null",
        "--saturation.pass_at_k_drop", "null",
        "--saturation.diversity_drop", "null",
    ]  # fmt: skip


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--train_size", type=int, default=16)
    ap.add_argument("--test_size", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--backend", default="vllm")
    ap.add_argument("--keep", action="store_true", help="keep the study's output directory")
    args = ap.parse_args()

    res = Result(
        "rounds", f"A {args.rounds}-round study: seconds per stage, swap time, memory", command_line()
    )
    out = Path(tempfile.mkdtemp(prefix="bench-rounds-")) / "study"
    cmd = [sys.executable, str(ROOT / "recipes" / "iterate.py")]
    cmd += study_args(out, args.rounds, args.train_size, args.test_size, args.n, args.backend)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "VLLM_LOGGING_LEVEL": "WARNING"}
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = {"mb": 0.0}
    by_process: dict[int, dict[str, float]] = {}  # round -> {process: MB} when its metrics appear
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak["mb"] = max(peak["mb"], rss_mb(proc.pid))
            for t in range(args.rounds + 1):
                if t not in by_process and (out / f"round_{t:03d}" / "metrics.json").exists():
                    by_process[t] = {k: round(v, 1) for k, v in rss_by_process(proc.pid).items()}
            time.sleep(1.0)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    tail: list[str] = []
    for line in proc.stdout:
        if line.startswith("round ") or "error" in line.lower():
            print(line.rstrip(), flush=True)
        tail = (tail + [line])[-60:]
    proc.wait()
    stop.set()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"iterate.py failed ({proc.returncode}):\n{''.join(tail)}")

    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    table = []
    for m in history:
        table.append(
            {
                "round": m["round"],
                **{k: m["seconds"].get(k) for k in ("sample", "verify", "distill", "evaluate")},
                "total": round(sum(m["seconds"].values()), 2),
                "swap_seconds": m.get("swap_seconds"),
                "rss_mb": m.get("rss_mb"),
                "gpu_mb": m.get("gpu_mb"),
                "kept": m["train"].get("kept"),
                "sft_tokens_per_second": m["train"].get("sft_tokens_per_second"),
            }
        )
    trained = [r for r in table if r["round"] >= 1]
    rss = [r["rss_mb"] for r in trained]
    swaps = [r["swap_seconds"] for r in trained if r["swap_seconds"] is not None]
    growth = (rss[-1] - rss[0]) / rss[0] if rss else None
    res.add("study wall time (engine start included)", wall, "s", note=f"{args.rounds} rounds + round 0")
    for stage in ("sample", "verify", "distill", "evaluate", "total"):
        vals = sorted(r[stage] for r in trained if r[stage] is not None)
        if vals:
            res.add(
                f"seconds per round: {stage} (median of rounds 1-{args.rounds})", vals[len(vals) // 2], "s"
            )
    if swaps:
        res.add("checkpoint swap into the running engine (median)", sorted(swaps)[len(swaps) // 2], "s")
    res.add("memory after round 1 (RSS, all processes)", rss[0], "MB")
    res.add(f"memory after round {args.rounds}", rss[-1], "MB")
    res.add(
        f"memory growth, round 1 to {args.rounds}",
        growth,
        "fraction",
        target="<= 0.05",
        note=f"fitted slope {slope([r['round'] for r in trained], rss):+.1f} MB/round",
    )
    res.add("peak memory during the study (RSS, all processes)", peak["mb"], "MB")
    gpu = [r["gpu_mb"] for r in trained if r["gpu_mb"] is not None]
    if gpu:
        res.add("GPU memory after round 1 (all processes on the GPU)", gpu[0], "MB")
        res.add(f"GPU memory growth, round 1 to {args.rounds}", (gpu[-1] - gpu[0]) / gpu[0], "fraction")
    res.details = {
        "per_round": table,
        "rss_by_process": {str(t): by_process[t] for t in sorted(by_process)},
        "args": vars(args),
        "gpu": None if gpu else "no GPU on this machine: GPU memory per round not measured",
    }
    if not args.keep:
        import shutil

        shutil.rmtree(out.parent, ignore_errors=True)
    res.write()


if __name__ == "__main__":
    main()
