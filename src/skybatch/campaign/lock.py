"""One campaign manager per skybatch home: an exclusive lock on ``HOME/manager.lock``.

The lock is the kernel's (``flock``): it is released when the process ends, however
it ends, so a manager killed with SIGKILL never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from skybatch.errors import InputError
from skybatch.settings import Settings

__all__ = ["manager_lock"]


@contextmanager
def manager_lock(settings: Settings) -> Iterator[None]:
    """Hold the skybatch home's manager lock; refuse if another manager holds it."""
    path = settings.home / "manager.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InputError(
                f"another campaign manager is running for {settings.home} (pid {holder})",
                where=str(path),
                hint="let it run the campaigns (`skybatch campaign status ID`), or stop it first",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
