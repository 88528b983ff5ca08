"""trainer.memory: freed heap memory goes back to the OS."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_return_freed_heap_gives_freed_memory_back():
    # In a fresh process: ~400 MB freed below the top of the heap stays resident until trimmed.
    script = textwrap.dedent(
        """
        import psutil
        from trainer.memory import return_freed_heap

        def rss():
            return psutil.Process().memory_info().rss / 2**20

        base = rss()
        blocks = [bytearray(4096) for _ in range(100_000)]  # malloc'd chunks, below mmap's threshold
        pin = bytearray(4096)  # allocated last: holds the heap's top, so free() alone cannot shrink it
        del blocks
        kept = rss()
        return_freed_heap()
        print(base, kept, rss())
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    base, kept, trimmed = map(float, r.stdout.split())
    assert kept - base > 300, "glibc gave the freed memory back by itself: nothing left to test"
    assert trimmed - base < 100


def test_rss_counts_the_descendants_of_a_process():
    # A child holding ~200 MB: counted in its parent's total and listed by name and pid.
    from trainer.memory import rss_by_process, rss_mb

    hold = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # its memory is touched, so resident
        by_process = rss_by_process()
        assert any(key.endswith(f":{child.pid}") and mb > 190 for key, mb in by_process.items())
        assert rss_mb(child.pid) > 190
        assert rss_mb() > rss_mb(child.pid) + 20  # this process's own memory on top of the child's
    finally:
        child.kill()
        child.wait()
    assert rss_by_process(child.pid) == {}
