"""Capture a job's log records into ``workdir/job.log``.

The engine already sends the process's stdout/stderr to its own per-job file, but
that holds only what reaches a console handler at the configured level. The job log
holds every INFO record of the job (staging, each quantum's task log, stage-out) with
timestamps and logger names, and it travels with the job's workdir and report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOG_FORMAT", "capture_job_log"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def capture_job_log(path: Path, level: int = logging.INFO) -> Iterator[Path]:
    """Send records of ``level`` and above from every logger to ``path`` inside the block.

    The root logger's level is lowered to ``level`` for the block if needed and
    restored afterwards, as is its handler list: warm workers run many jobs in one
    process and one job's settings must not leak into the next.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    if root.level > level:
        root.setLevel(level)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()
