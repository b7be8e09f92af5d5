"""The run's log file, ``WORKDIR/run.log``: every INFO record of the run's set-up,
execution and finish (skybatch's and the LSST middleware's: pipe_base's graph building,
daf_butler's ingest), with timestamps and logger names.

The terminal shows the middleware's INFO records only when a level is asked for
(``skybatch --log-level INFO``, see :func:`skybatch.logging_setup.configure_logging`);
the file always has them. Each job keeps its own log (``job.log``) in its workdir.

**Which records are a run's.** A run's handler sits on the root logger, so with several
runs in one process (a manager running many groups in threads) it sees every run's
records. It keeps only its own, by this rule:

- a record belongs to the run whose :func:`run_log` block is current in the context
  (:mod:`contextvars`) that logs it; an inner :func:`run_log` block takes over from an
  outer one until it ends;
- asyncio tasks inherit the context, so a task created inside the block is the run's;
- a thread is the run's when its target was wrapped by :func:`in_this_run` inside the
  block (``Thread(target=in_this_run(fn))``, ``pool.submit(in_this_run(fn), ...)``),
  and so are the threads it starts the same way. Python 3.11 starts every other
  thread in an empty context: its records belong to **no run**;
- records of no run (a manager's own loop, an engine or pool shared by all runs, a
  thread not started for a run) go to no run's log: to the terminal only, at its level.

So one run's log never holds another run's records, whichever thread each runs in.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import ParamSpec, TypeVar

from skybatch.job.joblog import LOG_FORMAT

__all__ = ["RUN_LOG_NAME", "RunLogFile", "current_run_log", "in_this_run", "run_log"]

RUN_LOG_NAME = "run.log"

#: The log file of the run whose :func:`run_log` block is current (``None``: no run).
_CURRENT: ContextVar[Path | None] = ContextVar("skybatch_run_log", default=None)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def current_run_log() -> Path | None:
    """The log file that records logged here go to, ``None`` outside every run."""
    return _CURRENT.get()


def in_this_run(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn`` made part of the current run wherever it is called (another thread, a
    thread pool): its records go to this run's log. Outside every run, ``fn`` itself."""
    path = _CURRENT.get()
    if path is None:
        return fn

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        token = _CURRENT.set(path)
        try:
            return fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)

    return call


class _OwnRecords(logging.Filter):
    """Pass only the records logged while ``path``'s run is current (see the module)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        return _CURRENT.get() == self.path


class _RootLevel:
    """The root logger's level, lowered to INFO while any run log is open.

    Each run log used to save the level on entry and restore it on exit; with
    overlapping runs the first to end would restore the level under the others and
    their files would lose the INFO records. The level is saved by the first run log
    to open and restored by the last to close.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._saved = logging.NOTSET

    def lower(self, level: int) -> None:
        root = logging.getLogger()
        with self._lock:
            if self._open == 0:
                self._saved = root.level
            self._open += 1
            if root.level > level:
                root.setLevel(level)

    def restore(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                logging.getLogger().setLevel(self._saved)


_ROOT_LEVEL = _RootLevel()


class RunLogFile:
    """A run's log file held open across calls (an execution pool executes many runs in
    one thread, a step of each at a time): records logged inside :meth:`current` are
    the run's. :func:`run_log` is the block form."""

    def __init__(self, workdir: Path, level: int = logging.INFO) -> None:
        self.path = (workdir / RUN_LOG_NAME).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self._handler.setLevel(level)
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._handler.addFilter(_OwnRecords(self.path))
        logging.getLogger().addHandler(self._handler)
        _ROOT_LEVEL.lower(level)
        self._closed = False

    @contextmanager
    def current(self) -> Iterator[Path]:
        """The run is current inside the block (its records go to its file)."""
        token = _CURRENT.set(self.path)
        try:
            yield self.path
        finally:
            _CURRENT.reset(token)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        logging.getLogger().removeHandler(self._handler)
        _ROOT_LEVEL.restore()
        self._handler.close()


@contextmanager
def run_log(workdir: Path, level: int = logging.INFO) -> Iterator[Path]:
    """Append this run's records of ``level`` and above to ``workdir/run.log`` inside
    the block; the run is current in the block (see the module for which records are
    the run's)."""
    log = RunLogFile(workdir, level)
    try:
        with log.current() as path:
            yield path
    finally:
        log.close()
