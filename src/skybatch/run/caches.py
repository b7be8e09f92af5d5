"""Per-process caches of a run's set-up and finish, for processes that set up and finish
many runs (the campaign manager: one run per group, thousands of groups).

A run opens its repository's Butler about six times (expansion, init-outputs, ingest at
set-up and at the finish, catalogs, clean-up) and reads the repository's configuration
for two quantum-backed butlers. Each ``Butler.from_config`` parses the repository's
configuration with all the daf_butler defaults it includes, registers its storage
classes and builds the registry's managers: about 50 ms of CPU each in a warm process,
a third of a second per run. None of that changes from one run to the next.

So this process keeps, per repository, one Butler made the ordinary way
(:func:`repository_butler`) and hands out a clone of it for each use: a clone shares
the configuration, the dimension universe and the database connection pool, has its
own registry session and datastore object, and costs under a millisecond. Each clone
is refreshed from the database first (collections, dataset types, cached dimension
records), so it sees what other processes wrote since (another run's ingest, a new
instrument), as a new Butler would. The cached Butler is made again when the
repository's ``butler.yaml`` or its SQLite registry file is another file than it was
(rewritten, or the repository removed and made again at the same path). A forked
child process starts without the parent's Butlers (their connections stay the parent's).

Parsed Butler configurations (:func:`butler_config`) are kept the same way, keyed by
the file's path, inode, size and modification time, for the quantum-backed butlers of
init-outputs and ingest, and for the datastore's file-naming (:mod:`skybatch.graph.expand`).

:func:`clear` drops everything (tests, and a process that wants its connections back).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lsst.daf.butler import Butler

__all__ = ["butler_config", "clear", "config_key", "repository_butler"]

#: What identifies a file's current content: resolved path, inode, size, mtime.
FileKey = tuple[str, int, int, int]

_lock = threading.Lock()

#: Most Butlers kept (repositories x writeable); the least recently used goes first.
MAX_BUTLERS = 8
#: Most configurations kept (a run with file templates has a butler.yaml of its own).
MAX_CONFIGS = 64

#: (resolved butler.yaml, writeable) -> (what the Butler was made from, the Butler).
_BUTLERS: OrderedDict[tuple[str, bool], tuple[tuple[FileKey, tuple[str, int, int] | None], Any]]
_BUTLERS = OrderedDict()

#: Parsed repository configurations (ButlerConfig) by file key, their storage classes
#: registered: reading one takes tens of milliseconds.
CONFIGS: OrderedDict[FileKey, Any] = OrderedDict()


def _file_key(path: Path) -> FileKey | None:
    try:
        resolved = path.resolve()
        stat = os.stat(resolved)
    except OSError:
        return None
    return (str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns)


def config_key(path: str | Path) -> FileKey | None:
    """The key of a repository's configuration file (``path`` is the file or the
    repository directory holding ``butler.yaml``); None if there is no such file."""
    file = Path(path)
    if file.is_dir():
        file = file / "butler.yaml"
    return _file_key(file)


def butler_config(path: str | Path) -> Any:
    """The ButlerConfig of ``path`` (a repository or a ``butler.yaml``), its storage
    classes registered (as a Butler registers them); read once per process while the
    file is unchanged. Callers must not change it (daf_butler copies a ButlerConfig it
    is given)."""
    from lsst.daf.butler import ButlerConfig, StorageClassFactory

    key = config_key(path)
    if key is not None:
        with _lock:
            cached = CONFIGS.get(key)
            if cached is not None:
                CONFIGS.move_to_end(key)
                return cached
    config = ButlerConfig(str(path))
    # Storage classes defined by the repository (as a Butler would register them).
    StorageClassFactory().addFromConfig(config)
    if key is not None:
        with _lock:
            CONFIGS[key] = config
            while len(CONFIGS) > MAX_CONFIGS:
                CONFIGS.popitem(last=False)
    return config


def _registry_key(butler: Any) -> tuple[str, int, int] | None:
    """Which file the SQLite registry of the Butler is (path, device, inode; its size
    and time change with every write); None for another database."""
    try:
        url = butler._registry._db._engine.url
    except AttributeError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    try:
        path = Path(url.database).resolve()
        stat = os.stat(path)
    except OSError:
        return None
    return (str(path), stat.st_dev, stat.st_ino)


@contextlib.contextmanager
def repository_butler(repo: str | Path, *, writeable: bool = False) -> Iterator[Butler]:
    """A Butler of ``repo`` (a repository directory or its ``butler.yaml``) for one use:
    a refreshed clone of this process's Butler of the repository, closed afterwards.

    Raises what ``Butler.from_config`` raises for a repository it cannot open.
    """
    from lsst.daf.butler import Butler

    key = config_key(repo)
    if key is None:  # not a local repository (or none): as before, a Butler per use
        with Butler.from_config(str(repo), writeable=writeable) as butler:
            yield butler
        return
    clone = _root_butler(repo, key, writeable).clone()
    try:
        clone._registry.refresh()  # what other processes wrote since
        yield clone
    finally:
        clone.close()  # a clone leaves the shared connection pool open


def _root_butler(repo: str | Path, key: FileKey, writeable: bool) -> Any:
    """This process's Butler of the repository whose butler.yaml has ``key``."""
    from lsst.daf.butler import Butler

    slot = (key[0], writeable)
    with _lock:
        cached = _BUTLERS.get(slot)
        if cached is not None:
            _BUTLERS.move_to_end(slot)
    if cached is not None:
        (config_at, registry_at), butler = cached
        if config_at == key and registry_at == _registry_key(butler):
            return butler
        _drop(slot)
    config = butler_config(repo)
    butler = Butler.from_config(config, writeable=writeable)
    with _lock:
        if slot in _BUTLERS:  # another thread made one meanwhile: use that
            butler.close()
            return _BUTLERS[slot][1]
        _BUTLERS[slot] = ((key, _registry_key(butler)), butler)
        evicted = [_BUTLERS.popitem(last=False)[1][1] for _ in range(len(_BUTLERS) - MAX_BUTLERS)]
    for old in evicted:
        old.close()  # clones still in use reopen connections as they need them
    return butler


def _drop(slot: tuple[str, bool]) -> None:
    with _lock:
        entry = _BUTLERS.pop(slot, None)
    if entry is not None:
        entry[1].close()


def _forget_after_fork() -> None:
    """In a forked child: the parent's Butlers hold its database connections, which
    two processes must not share; the child makes its own (the parent's are left to
    the parent, not closed). A fresh lock: another thread may have held it at the fork."""
    global _lock, _BUTLERS
    _lock = threading.Lock()
    _BUTLERS = OrderedDict()


os.register_at_fork(after_in_child=_forget_after_fork)


def clear() -> None:
    """Drop every cached Butler (closing its connections) and configuration."""
    with _lock:
        slots = list(_BUTLERS)
    for slot in slots:
        _drop(slot)
    with _lock:
        CONFIGS.clear()
