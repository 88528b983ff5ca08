"""mindgap's rewards in a plain TRL GRPOTrainer script (the README's example, run by tests/test_grpo.py).

    python tests/scripts/grpo_plain_trl.py MODEL_DIR OUT_DIR [REWARD]

REWARD: majority (default), oracle, or a verifier (mc, cot_binary, ...) that MODEL_DIR itself judges
with (transformers backend). Writes OUT_DIR/result.json: TRL's log history and the reward's records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from eval.tasks import TaskConfig, build_task
from trainer.rewards import open_judge, verifier_reward
from trainer.samplers.base import EngineConfig


def main(model: str, out: str, reward_name: str = "majority") -> None:
    task = build_task(TaskConfig(name="basic_arithmetic", train_size=4, test_size=1), seed=0)
    problems = task.problems("train")
    tok = AutoTokenizer.from_pretrained(model)
    data = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": p.question}] for p in problems],
            "prompt_id": [str(p.id) for p in problems],  # the reward finds each prompt's problem by it
        }
    )
    judge = (
        None if reward_name in ("majority", "oracle") else open_judge(model, EngineConfig(backend="hf"), task)
    )
    reward = verifier_reward(reward_name, task, problems, judge, eos_ids={tok.eos_token_id})
    args = GRPOConfig(
        output_dir=out,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=args, train_dataset=data, processing_class=tok
    )
    trainer.train()
    Path(out, "result.json").write_text(
        json.dumps({"log_history": trainer.state.log_history, "records": reward.records}, default=str)
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
