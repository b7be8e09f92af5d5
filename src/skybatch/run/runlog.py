"""The run's log file, ``WORKDIR/run.log``: every INFO record of the process that
sets up, executes and finishes the run (skybatch's and the LSST middleware's: pipe_base's
graph building, daf_butler's ingest), with timestamps and logger names.

The terminal shows the middleware's INFO records only when a level is asked for
(``skybatch --log-level INFO``, see :func:`skybatch.logging_setup.configure_logging`);
the file always has them. Each job keeps its own log (``job.log``) in its workdir.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skybatch.job.joblog import capture_job_log

__all__ = ["RUN_LOG_NAME", "run_log"]

RUN_LOG_NAME = "run.log"


@contextmanager
def run_log(workdir: Path) -> Iterator[Path]:
    """Append this process's INFO records to ``workdir/run.log`` inside the block."""
    with capture_job_log(workdir / RUN_LOG_NAME) as path:
        yield path
