"""Per-process caches of the job wrapper, for processes that run many jobs (warm workers).

A warm worker of the local engine runs job after job in one process; what does not
change between jobs (the opened quantum graph with its imported and configured tasks,
the central repository's parsed datastore configuration, the metadata extractors, the
installed package versions, the catalog's endpoint ids) is then worth keeping. The
worker turns the caches on once with :func:`enable_process_cache` (the local engine's
worker loop calls it when the runner's module defines it); everything else, e.g.
``python -m skybatch.job`` and the local engine's process isolation mode, runs every
job from scratch exactly as before.

Cached files are keyed by :func:`file_key` (resolved path, inode, size and mtime), so a
graph or config rewritten in place is read again. Each cache holds a bounded number of
entries: a worker may be recycled on memory growth, never because a cache grows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "FileKey",
    "clear_process_cache",
    "enable_process_cache",
    "file_key",
    "on_clear",
    "process_cache_enabled",
]

FileKey = tuple[str, int, int, int]

_enabled = False
_clearers: list[Callable[[], None]] = []


def enable_process_cache(enabled: bool = True) -> None:
    """Let the job wrapper keep per-process caches (call once in a warm worker).

    Turning the caches off also drops what they hold.
    """
    global _enabled
    _enabled = enabled
    if not enabled:
        clear_process_cache()


def process_cache_enabled() -> bool:
    """Whether this process runs several jobs and the caches may be used."""
    return _enabled


def on_clear(clearer: Callable[[], None]) -> None:
    """Register a function that empties one cache (called by :func:`clear_process_cache`)."""
    _clearers.append(clearer)


def clear_process_cache() -> None:
    """Drop everything the caches hold (open graph files are closed)."""
    for clearer in _clearers:
        clearer()


def file_key(path: Path) -> FileKey:
    """What identifies the current content of the file at ``path`` (OSError if absent)."""
    resolved = path.resolve()
    stat = os.stat(resolved)
    return (str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns)
