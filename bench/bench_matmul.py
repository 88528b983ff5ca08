"""This machine's matmul peak: GFLOP/s of torch matmuls in float32 and bfloat16, the yardstick of
every MFU figure (bench/bench_distill.py divides the SFT stage's FLOPs per second by it).

Shapes are the ones SFT of SmolLM2-135M multiplies (a batch of ~900 tokens through its 576-wide
layers and 1536-wide MLP, and through the 49k-token LM head), plus a square one; each is timed for
`--seconds`, alternating dtypes, and the peak is the best shape of a dtype. On a CPU without
AVX512-BF16 or AMX bf16 is emulated, so its peak is far below fp32's; with them it is the fast path.

    .venv/bin/python bench/bench_matmul.py [--seconds 2] [--threads 0 (= all cores)]
"""

from __future__ import annotations

import argparse
import time

from common import Result, command_line

SHAPES = {  # (m, k, n): an (m, k) @ (k, n) product, 2·m·k·n FLOPs
    "attention projection 900x576x576": (900, 576, 576),
    "MLP up 900x576x1536": (900, 576, 1536),
    "MLP down 900x1536x576": (900, 1536, 576),
    "LM head 900x576x49152": (900, 576, 49152),
    "square 1024": (1024, 1024, 1024),
}


def gflops(m: int, k: int, n: int, dtype, seconds: float) -> float:
    import torch

    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, caches
        a @ b
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9


def peak(seconds: float = 2.0) -> dict[str, dict[str, float]]:
    """GFLOP/s per shape and dtype, the dtypes alternating shape by shape."""
    import torch

    out: dict[str, dict[str, float]] = {"float32": {}, "bfloat16": {}}
    for name, shape in SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            out[str(dtype).split(".")[1]][name] = gflops(*shape, dtype, seconds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    res = Result("matmul", "This machine's matmul peak (the MFU yardstick)", command_line())
    table = peak(args.seconds)
    for dtype, shapes in table.items():
        for name, value in shapes.items():
            res.add(f"{dtype}: {name}", value, "GFLOP/s")
    for dtype, shapes in table.items():
        res.add(f"peak, {dtype}", max(shapes.values()), "GFLOP/s", note=f"{torch.get_num_threads()} threads")
    res.add("bf16 / fp32 peak", max(table["bfloat16"].values()) / max(table["float32"].values()), "x")
    res.details = {"gflops": table, "threads": torch.get_num_threads()}
    res.write()


if __name__ == "__main__":
    main()
