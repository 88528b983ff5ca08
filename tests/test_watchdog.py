"""Engine processes do not outlive a study killed with SIGKILL (trainer.watchdog)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.conftest import ROOT, needs_vllm

PARENT = textwrap.dedent(
    """
    import json, subprocess, sys, time
    from trainer import watchdog
    child = subprocess.Popen(["sleep", "300"])
    dog = watchdog.guard({child.pid})
    if sys.argv[1] == "stop":
        dog.stop()
    print("PIDS", json.dumps({"guarded": [child.pid], "dog": dog.proc.pid}), flush=True)
    time.sleep(300)
    """
)

VLLM_PARENT = textwrap.dedent(
    """
    import json, sys, time
    import psutil
    from trainer.samplers.vllm import VLLMSampler
    sampler = VLLMSampler(sys.argv[1])
    kids = [p.pid for p in psutil.Process().children(recursive=True) if p.pid != sampler._watchdog.proc.pid]
    print("PIDS", json.dumps({"guarded": kids, "dog": sampler._watchdog.proc.pid}), flush=True)
    time.sleep(600)
    """
)


def start(script: str, *args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    for line in proc.stdout:  # vLLM writes its own lines to stdout too
        if line.startswith("PIDS "):
            return proc, json.loads(line[5:])
    raise AssertionError(f"the parent script exited with {proc.wait()} before naming its processes")


def gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_guarded_child_dies_with_its_parent():
    proc, info = start(PARENT, "keep")
    assert psutil.pid_exists(info["guarded"][0])
    os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as the OOM killer or `kill -9 PID` does
    proc.wait()
    assert gone(info["guarded"], timeout=10), "the guarded child outlived its killed parent"
    assert gone([info["dog"]], timeout=5), "the watchdog did not exit after its work"


def test_stopped_watchdog_leaves_the_child_alone():
    proc, info = start(PARENT, "stop")
    try:
        assert gone([info["dog"]], timeout=5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.5)
        assert psutil.pid_exists(info["guarded"][0]), "a stopped watchdog still killed the child"
    finally:
        os.kill(info["guarded"][0], signal.SIGKILL)


@pytest.mark.slow
@needs_vllm
def test_vllm_engine_dies_with_a_killed_study(smollm2_dir):
    proc, info = start(VLLM_PARENT, str(smollm2_dir))
    assert info["guarded"], "vLLM started no engine process on this machine"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert gone(info["guarded"], timeout=20), "vLLM's engine processes outlived the killed study"
