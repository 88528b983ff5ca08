"""Server weight swap: how each round's checkpoint reaches a vLLM server, reloaded in place against a
server restarted on it (the two `engine.server_swap` choices of the vllm_server backend).

One server (started by mindgap, as a study starts it) holds SmolLM2-135M-Instruct; a second checkpoint
of the same architecture (layer 0's MLP output doubled) is swapped in and out `--reloads` times in
place (`POST /collective_rpc reload_weights` + `/reset_prefix_cache`), then `--restarts` times by
stopping the server and starting a new one on it. After every swap the MC scores of a few prompts are
read, and must equal those of the other way of swapping to the same weights: both serve the same
model, one costs a second or so, the other a server start.

    .venv/bin/python bench/bench_server_swap.py [--reloads 5] [--restarts 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from common import Result, command_line, vllm_quiet

QUESTIONS = ["What is 12 + 30?", "What is 7 + 5?", "Name a primary color."]
VERDICTS = [["Correct", "Incorrect"]] * len(QUESTIONS)


def other_checkpoint(model_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(2.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--restarts", type=int, default=2)
    args = ap.parse_args()
    vllm_quiet()
    from transformers import AutoTokenizer

    from trainer.models import resolve_model
    from trainer.samplers.base import EngineConfig
    from trainer.samplers.vllm_server import VLLMServerSampler

    result = Result(
        "server_swap",
        "vLLM server: a checkpoint swapped in place against a server restarted on it",
        command_line(),
    )
    base = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(base)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    try:
        other = other_checkpoint(base, work / "other")
        targets = [other, base]
        engine = EngineConfig(backend="vllm_server", max_model_len=1024)
        sampler = VLLMServerSampler(base, engine, seed=0, log_dir=work / "logs")
        dtype = sampler.server.dtype
        print(f"server started in {sampler.start_seconds:.1f} s ({dtype})", flush=True)
        scores: dict[str, dict[str, list]] = {"reload": {}, "restart": {}}
        reload_s = []
        try:
            for i in range(args.reloads):
                target = targets[i % 2]
                sampler.load_weights(target)
                reload_s.append(sampler.swap_seconds)
                scores["reload"][target.name] = sampler.score(prompts, VERDICTS)
                print(f"  reload {i + 1}/{args.reloads}: {sampler.swap_seconds:.2f} s", flush=True)
            sampler.engine = replace(engine, server_swap="restart")
            restart_s = []
            for i in range(args.restarts):
                target = targets[i % 2]
                sampler.load_weights(target)
                restart_s.append(sampler.swap_seconds)
                scores["restart"][target.name] = sampler.score(prompts, VERDICTS)
                print(f"  restart {i + 1}/{args.restarts}: {sampler.swap_seconds:.1f} s", flush=True)
        finally:
            sampler.close()
        diff = max(
            abs(a - b)
            for name in scores["restart"]
            for ra, rb in zip(scores["reload"][name], scores["restart"][name])
            for a, b in zip(ra, rb)
        )
        moved = max(
            abs(a - b)
            for ra, rb in zip(scores["reload"][other.name], scores["reload"][base.name])
            for a, b in zip(ra, rb)
        )
        reload_med, restart_med = statistics.median(reload_s), statistics.median(restart_s)
        result.add("swap in place (reload_weights + reset_prefix_cache), median", reload_med, "s")
        result.add("restart the server on the checkpoint, median", restart_med, "s")
        result.add("restart / reload", restart_med / reload_med, "x")
        result.add("MC log-prob, reloaded vs restarted on the same weights: max |diff|", diff)
        result.add("MC log-prob moved by the swap (the other weights are visible): max |diff|", moved)
        result.details = {"reload_seconds": reload_s, "restart_seconds": restart_s, "dtype": dtype}
        result.notes.append(
            "engine.server_swap defaults to reload: the same weights served, at a fraction of a restart"
        )
        result.write()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
