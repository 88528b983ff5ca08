"""The transformers backend: batched `generate` with left padding, and one forward pass per score batch.

Slower than vLLM (see STACK-NOTES: ~6x on CPU) but runs wherever transformers does, needs no engine
processes, and is the reference that the vLLM backend is checked against.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Sequence
from pathlib import Path

from core.errors import UserError
from trainer.samplers.base import (
    Carrier,
    Completion,
    EngineConfig,
    auto_dtype,
    encode_for_scoring,
    plan_carriers,
    progress_bar,
)

DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def _torch_dtype(name: str):
    import torch

    if name == "auto":  # bf16 matmuls on CPUs without native bf16 run several times slower than fp32
        return getattr(torch, auto_dtype(torch.cuda.is_available()))

    if name not in DTYPES:
        raise UserError(f"engine.dtype: unknown value '{name}'; choose one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def load_tokenizer(model_dir: Path):
    """The model dir's tokenizer, or a UserError naming the dir."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception as e:
        raise UserError(
            f"model: cannot load a tokenizer from {model_dir}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None


def load_causal_lm(model_dir: Path, dtype: str, device: str = "cpu"):
    """An eval-mode causal LM from `model_dir`, or a UserError naming the dir."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_torch_dtype(dtype))
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"model: cannot load {model_dir} as a causal LM: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return model.to(device).eval()


def _stop_at(text: str, stop: Sequence[str]) -> int | None:
    """Where the first of the `stop` strings starts in `text`; None where none occurs."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


class HFSampler:
    """A transformers model that samples and scores. See `trainer.samplers.base.Sampler`."""

    backend = "hf"

    def __init__(self, model_dir: Path, engine: EngineConfig | None = None, seed: int = 0):
        import torch

        self.engine = engine or EngineConfig()
        self.seed = seed
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").exists():
            raise UserError(f"model: {self.model_dir} is not a Hugging Face model dir (no config.json)")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = load_causal_lm(self.model_dir, self.engine.dtype, self.device)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos_ids = self._eos_ids()
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.last_score_tokens = 0  # tokens the last `score` call fed through the model
        self._stops: dict = {}  # stop strings -> their stopping criteria (`_stop_criteria`)
        self.progress = None  # (done, total) of each long call, for a study's display

    # ------------------------------------------------------------------ helpers

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
        ):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(i) for i in source)
        if not ids:
            raise UserError(f"model: {self.model_dir} defines no eos token (tokenizer or generation_config)")
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens added (prompts carry their own)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _stop_criteria(self, stop: tuple[str, ...]):
        """transformers' stop-string criterion, built once per set of strings: building it walks the
        whole vocabulary (3.5 s for Gemma's 262k tokens), and it keeps no state between calls."""
        if stop not in self._stops:
            from transformers import StoppingCriteriaList
            from transformers.generation.stopping_criteria import StopStringCriteria

            self._stops[stop] = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(stop))])
        return self._stops[stop]

    def _left_pad(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ Sampler

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
        stop: Sequence[str] = (),
    ) -> list[list[Completion]]:
        import torch

        if not prompts:
            return []
        if n < 1 or max_tokens < 1:
            raise ValueError(f"generate: n and max_tokens must be >= 1, got n={n}, max_tokens={max_tokens}")
        greedy = temperature == 0
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise UserError(f"generate: prompt {i} is empty")
        bs = self.engine.batch_size
        out: list[list[Completion]] = []
        torch.manual_seed(seed)
        if self.device == "cuda":
            torch.cuda.manual_seed_all(seed)
        batches = range(0, len(encoded), bs)
        bar = progress_bar(self.progress)
        for start in bar(
            batches, desc="hf generate", unit="batch", disable=len(batches) < 2 and not self.progress
        ):
            chunk = encoded[start : start + bs]
            ids, mask = self._left_pad(chunk)
            per_prompt = 1 if greedy else n  # greedy is deterministic: decode once, repeat
            kwargs = dict(
                max_new_tokens=max_tokens,
                do_sample=not greedy,
                num_return_sequences=per_prompt,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.pad_id,
                repetition_penalty=1.0,
            )
            if stop:
                kwargs["stopping_criteria"] = self._stop_criteria(tuple(stop))
            if not greedy:  # top_k=0: no top-k cut (transformers' default is 50; vLLM's is none)
                kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
            with torch.inference_mode():
                seqs = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            new = seqs[:, ids.shape[1] :].tolist()
            for i in range(len(chunk)):
                rows = new[i * per_prompt : (i + 1) * per_prompt]
                comps = [self._completion(r, max_tokens, stop) for r in rows]
                out.append(
                    comps
                    if not greedy
                    else [Completion(c.text, c.n_tokens, c.finish_reason) for c in comps * n]
                )
        return out

    def _completion(self, row: list[int], max_tokens: int, stop: Sequence[str] = ()) -> Completion:
        end = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
        if end is None:
            toks, reason = row[:max_tokens], "length"
        else:
            toks, reason = row[: end + 1], "stop"  # the eos counts as a generated token (as in vLLM)
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        text = decode(toks)
        if _stop_at(text, stop) is not None:
            # As vLLM: the tokens up to the one that completed the stop string, the text before it.
            # A stop string once decoded stays in every longer prefix: bisect for the shortest.
            lo, hi = 1, len(toks)
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if _stop_at(decode(toks[:mid]), stop) is not None else (mid + 1, hi)
            toks, reason, text = toks[:lo], "stop", text[: _stop_at(text, stop)]
        return Completion(text=text, n_tokens=len(toks), finish_reason=reason)

    def score(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """One forward pass per prompt and group of continuations (see `plan_carriers`): a verdict pair
        like "Correct" / "Incorrect" costs one prefill, not one per word."""
        import torch

        work: list[tuple[list[int], Carrier]] = []  # (prompt ids, carrier)
        for i, (p_ids, conts_ids) in enumerate(encode_for_scoring(self.encode, prompts, continuations)):
            work += [(p_ids, c) for c in plan_carriers(i, conts_ids)]
        out = [[0.0] * len(c) for c in continuations]
        self.last_score_tokens = sum(len(p) + len(c.tokens) - 1 for p, c in work)  # fed, padding aside
        # Similar lengths together: less padding per forward pass.
        work.sort(key=lambda w: len(w[0]) + len(w[1].tokens))
        bs = self.engine.batch_size
        for start in range(0, len(work), bs):
            chunk = work[start : start + bs]
            # The carrier's last token is only predicted, never fed: row r is the distribution after
            # prompt + tokens[:r], and left padding puts the rows of every sequence at the right edge.
            seqs = [p + c.tokens[:-1] for p, c in chunk]
            ids, mask = self._left_pad(seqs)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(c.tokens) for _, c in chunk)
            kwargs = {"logits_to_keep": keep} if self._keeps_logits else {}
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **kwargs
                ).logits[:, -keep:]
                for row, (_, carrier) in enumerate(chunk):
                    lp = logits[row, keep - len(carrier.tokens) :].float().log_softmax(-1).cpu()
                    for j, value in carrier.read(lambda r, tok, lp=lp: lp[r, tok].item()).items():
                        out[carrier.prompt][j] = value
        return out

    def load_weights(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        new = load_causal_lm(model_dir, self.engine.dtype, "cpu")
        try:
            self.model.load_state_dict(new.state_dict(), strict=True)
        except RuntimeError as e:
            raise UserError(
                f"model: the weights in {model_dir} do not fit the loaded model "
                f"{self.model_dir}: {str(e).splitlines()[0]}"
            ) from None
        finally:
            del new
            gc.collect()
        self.model.eval()
        self.model_dir = model_dir

    def sleep(self, level: int = 1) -> None:
        """Nothing to free: the hf backend holds no engine (kept for symmetry with vLLM)."""

    def wake_up(self) -> None:
        """See `sleep`."""

    def close(self) -> None:
        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
