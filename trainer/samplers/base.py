"""The Sampler interface: generate completions and score continuations, on any backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class Completion:
    text: str
    n_tokens: int  # generated tokens (what verification cost is counted in)
    finish_reason: str = "stop"  # stop | length


class Sampler(Protocol):
    """A loaded model that samples completions and scores continuations.

    Prompts are fully rendered strings (chat template already applied); the sampler tokenizes them
    without adding special tokens.
    """

    model_dir: Path

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, seed: int
    ) -> list[list[Completion]]:
        """`n` completions for each prompt, in prompt order."""
        ...

    def score(self, prompts: list[str], continuations: list[list[str]]) -> list[list[float]]:
        """Summed log-probability of each continuation given its prompt: out[i][j] = log p(c_ij | p_i)."""
        ...

    def load_weights(self, model_dir: Path) -> None:
        """Swap the weights of a checkpoint of the same architecture into the loaded model."""
        ...

    def sleep(self) -> None:
        """Free accelerator memory while another stage (SFT) needs it; a no-op where nothing is held."""
        ...

    def wake_up(self) -> None:
        """Undo `sleep`."""
        ...

    def close(self) -> None:
        """Free the model and any engine processes."""
        ...
