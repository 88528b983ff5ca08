"""Child processes that do not outlive their parent, even when the parent is killed with SIGKILL.

vLLM runs its engine in separate processes (EngineCore, workers) that wait on a socket for requests.
When the study process dies without closing the engine (`kill -9`, the OOM killer, a node losing its
job), they stay alive, each holding the model and its KV cache, until someone kills them by hand; the
resumed study then starts a second engine beside the orphan. A watchdog is a small process of its own
that polls the parent and, once it is gone, terminates the processes it was told to guard:

    dog = guard(new_children)      # right after the engine started
    ...
    dog.stop()                     # when the engine is shut down normally

    python -m trainer.watchdog PARENT_PID PID:START_TIME [PID:START_TIME ...]   (what guard() runs)

Processes are named with their start time, so a pid the system has reused for something else is never
touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

POLL_SECONDS = 0.5
GRACE_SECONDS = 3.0


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def children() -> set[int]:
    """Pids of this process's descendants now."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


class Watchdog:
    """The running watchdog process; `stop()` ends it without touching the guarded processes."""

    def __init__(self, proc: subprocess.Popen, pids: list[int]):
        self.proc = proc
        self.pids = pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def guard(pids: set[int] | list[int]) -> Watchdog | None:
    """Start a watchdog that kills `pids` once this process is gone; None when there is nothing to guard."""
    marks = [f"{pid}:{t!r}" for pid in sorted(pids) if (t := _start_time(pid)) is not None]
    if not marks:
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.watchdog", str(os.getpid()), f"{_start_time(os.getpid())!r}", *marks],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or a group kill aimed at the study must not take it down first
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    return Watchdog(proc, sorted(pids))


def _alive(pid: int, start: float) -> bool:
    """The process that had this pid at `start` still runs (a zombie, dead but not yet reaped, does not)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - start) < 1e-3 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(marks: list[tuple[int, float]], sig: int) -> None:
    for pid, start in marks:
        if _alive(pid, start):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def main(argv: list[str]) -> None:
    parent, parent_start = int(argv[0]), float(argv[1])
    marks = [(int(p), float(t)) for p, t in (m.split(":", 1) for m in argv[2:])]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop(): the parent closed the engine itself
    while _alive(parent, parent_start):
        time.sleep(POLL_SECONDS)
    _signal_all(marks, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline and any(_alive(p, t) for p, t in marks):
        time.sleep(0.1)
    _signal_all(marks, signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
