"""A vLLM (V1 model runner) logits processor that makes a request decode a given token sequence.

`VLLMSampler.score` uses it where vLLM cannot read arbitrary token ids at prompt positions (that
needs the V2 model runner, which needs Triton: not on CPU). A scoring request then carries only the
prompt; its first decode steps are forced through the continuation's tokens
(`SamplingParams.extra_args["mindgap_force"]`), and `logprob_token_ids` returns the raw log-probs
(computed before any logits processor) of the wanted ids at every step: one prefill of the prompt plus
one decode step per further continuation token, no log-probs over the whole prompt, and the prefix
cache stays on. Requests without the key are left alone.

Loaded inside vLLM's worker by its qualified name (`FORCE_PROCESSOR`); imports vLLM.
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from trainer.samplers.base import FORCE_KEY, FORCE_PROCESSOR

__all__ = ["FORCE_KEY", "FORCE_PROCESSOR", "ForcedTokensLogitsProcessor"]


class ForcedTokensLogitsProcessor(LogitsProcessor):
    """Step k of a request with `extra_args["mindgap_force"] = [t0, t1, ...]` can only produce t_k."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        # batch index -> (forced tokens, the request's live list of output token ids)
        self.forced: dict[int, tuple[list[int], list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it decides what greedy decoding picks

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        for index in batch_update.removed:
            self.forced.pop(index, None)
        for index, params, _, output_ids in batch_update.added:
            force = (params.extra_args or {}).get(FORCE_KEY) if params is not None else None
            if force:
                self.forced[index] = (list(force), output_ids)
            else:
                self.forced.pop(index, None)
        for a, b, direction in batch_update.moved:
            entry_a, entry_b = self.forced.pop(a, None), self.forced.pop(b, None)
            if entry_a is not None:
                self.forced[b] = entry_a
            if entry_b is not None and direction == MoveDirectionality.SWAP:
                self.forced[a] = entry_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.forced:
            return logits
        rows, tokens = [], []
        for index, (force, output_ids) in self.forced.items():
            step = len(output_ids)
            if step < len(force) and index < logits.shape[0]:
                rows.append(index)
                tokens.append(force[step])
        if rows:
            r = torch.tensor(rows, device=logits.device)
            t = torch.tensor(tokens, device=logits.device)
            logits[r] = float("-inf")
            logits[r, t] = 0.0
        return logits
