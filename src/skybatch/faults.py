"""Fault-injection points: where the fault trials kill a process on purpose.

``SKYBATCH_FAULT_KILL_AT=<point>`` makes the process that reaches ``kill_point(point)``
SIGKILL itself and every process it started (a node crash at exactly that moment).
Unset (always, outside the trials and tests), a kill point costs one dictionary
lookup. Points are named ``<phase>:<step>``, e.g. ``finish:ingest``.

A process that hands work to helper processes (the campaign manager's execution pool
sets runs up and finishes them in a bookkeeping process) names itself the **root** in
``SKYBATCH_FAULT_ROOT_PID``: a kill point reached in a helper then kills the root and
its whole tree, as a crash of the node would, not the helper alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

__all__ = ["ENV", "ROOT_ENV", "arm_before", "kill_point"]

ENV = "SKYBATCH_FAULT_KILL_AT"
#: Pid of the process whose whole tree a kill point kills (default: the caller's).
ROOT_ENV = "SKYBATCH_FAULT_ROOT_PID"


def kill_point(name: str) -> None:
    """SIGKILL this process and its descendants if the environment aims at ``name``."""
    if os.environ.get(ENV) != name:
        return
    import psutil

    me = os.getpid()
    root = int(os.environ.get(ROOT_ENV) or me)
    if root != me:
        with contextlib.suppress(OSError):
            os.kill(root, signal.SIGSTOP)  # it starts nothing new while its tree dies
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(root).children(recursive=True):
            if child.pid != me:
                with contextlib.suppress(psutil.Error):
                    child.kill()
    if root != me:
        with contextlib.suppress(OSError):
            os.kill(root, signal.SIGKILL)
    os.kill(me, signal.SIGKILL)


def arm_before(obj: Any, method: str, name: str) -> None:
    """Make ``obj.method`` reach ``kill_point(name)`` first (a point inside a library
    call, e.g. between the Butler's registry commit and its datastore clean-up)."""
    if os.environ.get(ENV) != name:
        return
    original = getattr(obj, method)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kill_point(name)
        return original(*args, **kwargs)

    setattr(obj, method, wrapped)
