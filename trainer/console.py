"""One live display per run; every library's own output goes to a log file in the run folder.

    with StudyConsole(out, title="smollm2 on basic_arithmetic", rounds=3) as console:
        with console.stage("round 1 · sample"):
            ...
        console.round_line("round 1: accuracy 0.41 [...]")

While a study runs, the terminal shows what the study is doing (the round, the stage, its progress
and elapsed time, SFT's last loss) and a line per finished round; vLLM's, TRL's, transformers',
datasets' and DeepSpeed's output (their own processes' included) is written to
`<out>/logs/study.log` (`rank<k>.log` for the other ranks of a multi-process launch). The measurement
recipes (trainer/measure.py) show the same display without rounds, their log `<out>/logs/run.log`.
This works at
the level of file descriptors: the process's stdout and stderr are pointed at the log file, and the
display writes to the terminal they pointed at before, so nothing a library or an engine process
prints reaches the terminal, and nothing is lost. `--verbose` on the recipe's command line (or
MINDGAP_VERBOSE=1) leaves the terminal as it is: everything printed where it was printed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

VERBOSE_ENV = "MINDGAP_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


class StudyConsole:
    """The study's terminal: a live status line and round lines; library output to logs/."""

    def __init__(self, out: Path, title: str, rounds: int | None = None, log_name: str = "study.log"):
        self.out = Path(out)
        self.title = title
        self.rounds = rounds  # None: a measurement, no rounds
        self.rank = int(os.environ.get("RANK", "0"))
        self.log_path = self.out / "logs" / (log_name if self.rank == 0 else f"rank{self.rank}.log")
        self.redirect = not verbose()
        self.live = None
        self.console = None
        self.status = None  # the current stage's description
        self._saved: tuple[int, int] | None = None
        self._log = None
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ set up and tear down

    def __enter__(self) -> StudyConsole:
        from rich.console import Console

        terminal = sys.stderr
        if self.redirect:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            sys.stdout.flush()
            sys.stderr.flush()
            self._saved = (os.dup(1), os.dup(2))
            self._log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 (closed in __exit__)
            os.dup2(self._log.fileno(), 1)
            os.dup2(self._log.fileno(), 2)
            terminal = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
            _quiet_libraries()
        self.console = Console(file=terminal, highlight=False)
        if self.rank == 0 and self.console.is_terminal:
            from rich.live import Live

            # Not rich's redirection of sys.stdout/stderr onto the display: library prints go to the log
            self.live = Live(
                get_renderable=self._render,  # drawn afresh 4 times a second: the clock runs
                console=self.console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
        if self.rank == 0:
            where = f"; library output: {self.log_path}" if self.redirect else ""
            rounds = (
                f", {self.rounds} round{'' if self.rounds == 1 else 's'}" if self.rounds is not None else ""
            )
            self.console.print(f"[bold]mindgap[/]: {self.title}{rounds}{where}")
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self._saved is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = None
            if self.console is not None:
                self.console.file.close()
            if self._log is not None:
                self._log.close()

    # ------------------------------------------------------------------ what the study shows

    @contextlib.contextmanager
    def stage(self, name: str, record: tuple[dict, str] | None = None):
        """Show `name` as the current stage while the block runs; `record` = (seconds, key) times it."""
        previous, start = self.status, time.perf_counter()
        self.status = {"name": name, "start": start, "done": None, "total": None, "detail": ""}
        self._refresh()
        try:
            yield self
        finally:
            if record is not None:
                seconds, key = record
                seconds[key] = time.perf_counter() - start
            self.status = previous
            self._refresh()

    def progress(self, done: int, total: int | None = None, detail: str = "") -> None:
        """The current stage's progress (items done of total) and a detail such as the last loss."""
        if self.status is not None:
            self.status.update(done=done, total=total if total is not None else self.status["total"])
            if detail:
                self.status["detail"] = detail
            self._refresh()

    def round_line(self, text: str) -> None:
        """A line that stays: a finished round, the stop reason, where the report is."""
        if self.rank != 0 or self.console is None:
            return
        self.console.print(text)
        if self._log is not None:
            print(text, file=self._log, flush=True)

    def train_callback(self):
        """A transformers TrainerCallback that shows training's step and last loss as the stage's progress."""
        from transformers import TrainerCallback

        console = self

        class Progress(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
                console.progress(
                    state.global_step, state.max_steps, f"loss {loss:.3f}" if loss is not None else ""
                )

        return Progress()

    # ------------------------------------------------------------------ drawing

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def _render(self):
        from rich.text import Text

        s = self.status
        if s is None:
            return Text(f"{self.title} · {_elapsed(time.perf_counter() - self._started)}", style="dim")
        line = Text()
        line.append(s["name"], style="bold cyan")
        if s["total"]:
            done, total = s["done"] or 0, s["total"]
            width = 24
            filled = int(width * done / total) if total else 0
            line.append(f"  [{'█' * filled}{'·' * (width - filled)}] {done}/{total}")
            elapsed = time.perf_counter() - s["start"]
            if done:
                line.append(f"  ETA {_elapsed(elapsed / done * (total - done))}")
        line.append(f"  {_elapsed(time.perf_counter() - s['start'])}", style="dim")
        if s["detail"]:
            line.append(f"  {s['detail']}")
        return line


def _elapsed(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}:{sec:02d}"


def _quiet_libraries() -> None:
    """Progress bars and INFO lines of the libraries off (they would go to the log anyway)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    with contextlib.suppress(Exception):
        import datasets

        datasets.disable_progress_bars()
    with contextlib.suppress(Exception):
        import transformers

        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.disable_progress_bar()
