"""Fault-injection points: where the fault trials kill a process on purpose.

``SKYBATCH_FAULT_KILL_AT=<point>`` makes the process that reaches ``kill_point(point)``
SIGKILL itself and every process it started (a node crash at exactly that moment).
Unset (always, outside the trials and tests), a kill point costs one dictionary
lookup. Points are named ``<phase>:<step>``, e.g. ``finish:ingest``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

__all__ = ["ENV", "arm_before", "kill_point"]

ENV = "SKYBATCH_FAULT_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process and its descendants if the environment aims at ``name``."""
    if os.environ.get(ENV) != name:
        return
    import psutil

    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    os.kill(os.getpid(), signal.SIGKILL)


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
