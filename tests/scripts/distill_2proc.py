"""Train under `accelerate launch`, round after round like the loop (tests/test_distill.py,
tests/test_update.py and tests/test_grpo.py run it): SFT with `trainer.distill.distill`, DPO with
`trainer.update.dpo.preference_train` on pairs of a right and a wrong answer, or GRPO with
`trainer.update.grpo.grpo_train` on two arithmetic prompts under the random reward at rate 0.5 (drawn
over the whole gathered batch), a step's one group of 4 rollouts split 2 and 2 over the ranks.

    accelerate launch --config_file launch/cpu_2proc.yaml tests/scripts/distill_2proc.py \
        MODEL_DIR OUT_DIR [METHOD [ROUNDS [RULE]]]       # RULE: sft (default) | dpo | grpo

Round r trains on the checkpoint of round r-1 and writes OUT_DIR/round_<r>/checkpoint. After each
round every rank prints one line `RESULT {json}` with the round, its rank, the checksum of its trained
weights, how many times it wrote a checkpoint in that round, whether the trained model was freed once
distill returned (no DeepSpeed engine or optimizer left holding it), and the stats distill returned
(for GRPO, whose stats are the main process's, `own_checksums`: the rank's own as training begins and ends).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def rows(tokenizer, n: int = 16) -> pd.DataFrame:
    out = []
    for i in range(n):
        a, b = i % 7 + 2, i % 5 + 3
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"What is {a} + {b}?"}], tokenize=False, add_generation_prompt=True
        )
        out.append(
            {
                "prompt": prompt,
                "completion": f"{a} + {b} = {a + b}." + tokenizer.eos_token,
                "chosen": f"{a} + {b} = {a + b}.",
                "rejected": f"{a} + {b} = {a + b + 1}.",
            }
        )
    return pd.DataFrame(out)


def main() -> None:
    import gc
    import weakref

    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer, TrainerCallback

    import core.io
    from trainer.distill import SFTOptions, distill
    from trainer.update.dpo import DPOOptions, preference_train

    model_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    method = sys.argv[3] if len(sys.argv) > 3 else "lora"
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    rule = sys.argv[5] if len(sys.argv) > 5 else "sft"
    state = PartialState(cpu=not torch.cuda.is_available())  # as the loop does before any stage

    saves = []
    atomic_dir = core.io.atomic_dir

    def counting_atomic_dir(path, build):
        saves.append(str(path))
        return atomic_dir(path, build)

    core.io.atomic_dir = counting_atomic_dir  # distill looks it up when it saves
    trained = []

    own = []

    class Watch(TrainerCallback):  # a weak reference to the model the trainer trains
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            trained.append(weakref.ref(model))
            own.append(checksum(model))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            own.append(checksum(model))

    def checksum(model) -> float:
        with torch.no_grad():
            return sum(float(p.double().sum()) for p in model.parameters() if p.requires_grad)

    tok = AutoTokenizer.from_pretrained(model_dir)
    # fp32 in every CPU regime: the test compares ranks and launchers to 1e-4
    kw = dict(
        method=method, learning_rate=1e-3, batch_size=4, grad_accum=1, epochs=1, max_length=128, bf16=False
    )
    if rule == "grpo":
        train = grpo(kw, out_dir)
    else:
        opts = SFTOptions(**kw) if rule == "sft" else DPOOptions(**kw)
        train = lambda prev, ckpt, seed, callbacks: (distill if rule == "sft" else preference_train)(  # noqa: E731
            rows(tok), prev, ckpt, opts, seed=seed, callbacks=callbacks
        )
    prev = model_dir
    for r in range(rounds):
        saves.clear()
        ckpt = out_dir / f"round_{r}" / "checkpoint"
        trained.clear()
        own.clear()
        stats = train(prev, ckpt, r, [Watch()])
        gc.collect()
        result = {
            "round": r,
            "rank": state.process_index,
            "world_size": state.num_processes,
            "saves": len(saves),
            "checksum": stats["weights_checksum"],
            "model_freed": bool(trained) and trained[0]() is None,
            "stats": stats,
            "own_checksums": own[:],  # the rank's trainable weights as training began and ended
        }
        print("RESULT " + json.dumps(result), flush=True)
        prev = ckpt


def grpo(kw: dict, out_dir: Path):
    """A train(prev, ckpt, seed, callbacks) running 2 GRPO steps of one group of 4 rollouts of 8 tokens."""
    from accelerate import PartialState

    from eval.tasks import TaskConfig, build_task
    from trainer.rewards import verifier_reward
    from trainer.update.grpo import GRPOOptions, Rollouts, grpo_train

    task = build_task(TaskConfig(name="basic_arithmetic", train_size=2, test_size=1), seed=0)
    problems = task.problems("train")
    prompts = pd.DataFrame(
        {"prompt_id": [str(p.id) for p in problems], "prompt": [p.question for p in problems]}
    )
    opts = GRPOOptions(
        method=kw["method"],
        learning_rate=kw["learning_rate"],
        batch_size=4 // PartialState().num_processes,
        steps=2,
        save_steps=0,
        bf16=False,
    )
    rollouts = Rollouts(num_generations=4, max_completion_length=8, temperature=1.0, top_p=1.0)

    def train(prev, ckpt, seed, callbacks):
        reward = verifier_reward("random", task, problems, rate=0.5, seed=seed)
        steps_dir = out_dir / f"steps_{seed}"
        return grpo_train(prompts, prev, ckpt, opts, rollouts, reward, seed, steps_dir, callbacks=callbacks)

    return train


if __name__ == "__main__":
    main()
