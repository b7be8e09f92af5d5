"""A killed manager's bookkeeping processes end with it.

The execution pool sets runs up and finishes them in spawned bookkeeping processes
(:class:`skybatch.run.pool.DriverBookkeeping`). After a ``kill -9`` of the manager they
used to wait forever on their task queue (each holds both ends of its pipe), with
their memory and open repository files, and could go on finishing a run that the
restarted manager finishes as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

SCRIPT = """
import os, sys, time
from skybatch.run.pool import DriverBookkeeping

if __name__ == "__main__":
    executor = DriverBookkeeping(workers=2).executor()
    pids = {executor.submit(os.getpid).result(timeout=120) for _ in range(8)}
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_bookkeeping_processes_end_within_seconds_of_a_killed_manager() -> None:
    manager = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert manager.stdout is not None
        pids = [int(p) for p in manager.stdout.readline().split()]
        assert pids and all(not _gone(p) for p in pids)
    finally:
        manager.send_signal(signal.SIGKILL)
        manager.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if not _gone(p)]
    for pid in left:  # do not leave them to the next tests
        os.kill(pid, signal.SIGKILL)
    assert not left, f"bookkeeping processes {left} outlived their manager"
