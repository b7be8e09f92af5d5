"""Start a command in its own process group and SIGKILL the whole group at a moment
(the manager or driver and every worker it started: what a node crash does)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Finished", "kill_group", "run_until"]


@dataclass(frozen=True)
class Finished:
    """How a command ended: its exit code (negative: the signal), whether the trial
    killed it, and after how many seconds."""

    returncode: int
    killed: bool
    seconds: float


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and every process of its group, then reap ``proc``.

    Workers that left the group (a new session of their own) are found through the
    process tree and killed too.
    """
    import psutil

    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()
    proc.wait()
    psutil.wait_procs(tree, timeout=30)


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _kill_all(procs: list[Any]) -> None:
    import psutil

    alive = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running():  # psutil checks the pid was not reused
                p.kill()
                alive.append(p)
    psutil.wait_procs(alive, timeout=30)


def run_until(
    command: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    kill_when: Callable[[float], bool] | None = None,
    timeout_s: float = 900.0,
    poll_s: float = 0.05,
) -> Finished:
    """Run ``command`` in a new process group, appending its output to ``log``.

    ``kill_when(elapsed_s)`` is asked every ``poll_s``; when it returns True the whole
    group is SIGKILLed. A command still running after ``timeout_s`` is killed too
    (``killed`` is then False and the return code the signal's).
    """
    start = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        killed = False
        seen: dict[int, Any] = {}  # descendants, also those that left the group
        last_look = 0.0
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            if elapsed - last_look > 0.5:
                last_look = elapsed
                seen.update({c.pid: c for c in _descendants(proc.pid)})
            if kill_when is not None and kill_when(elapsed):
                kill_group(proc)
                killed = True
                break
            if elapsed > timeout_s:
                kill_group(proc)
                break
            time.sleep(poll_s)
        # Workers of a command that ended (or killed itself) must not outlive it.
        if not killed:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _kill_all(list(seen.values()))
    return Finished(proc.returncode, killed, time.monotonic() - start)
