"""Settings of the local engine (seed step 10 on one machine).

A plain pydantic model (not a settings source): the settings tree or the plugin
registry builds it and passes it to :class:`~skybatch.engines.local.LocalEngine`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_PRELOAD", "LocalSettings"]

#: What a warm worker imports once at start: the LSST middleware costs ~1.5 s to
#: import, which is the point of keeping workers warm.
DEFAULT_PRELOAD: tuple[str, ...] = ("lsst.daf.butler", "lsst.pipe.base", "skybatch.job.main")


def _default_workers() -> int:
    return os.cpu_count() or 1


class LocalSettings(BaseModel):
    """How the local engine runs jobs on this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_workers: int = Field(
        default_factory=_default_workers,
        ge=1,
        description="jobs running at once (warm workers or child processes); default: CPUs",
    )
    isolation: Literal["warm", "process"] = Field(
        default="warm",
        description=(
            "warm: reuse long-lived worker processes that imported the middleware once; "
            "process: a fresh interpreter per job (full isolation, pays the start-up)"
        ),
    )
    runner: str = Field(
        default="skybatch.job.main:run_job_file",
        pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$",
        description="'module:function' called with a spec path, returning the exit code",
    )
    preload: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PRELOAD),
        description=(
            "modules each warm worker imports once at start; one that fails to import "
            "is logged as a warning and skipped"
        ),
    )
    worker_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU niceness added to warm workers (0: none): the driver, which feeds "
        "them, keeps priority, and workers warming up use idle cores only",
    )
    memory_poll_s: float = Field(
        default=0.1,
        gt=0,
        description="seconds between RSS samples of running jobs (memory and walltime checks)",
    )
    enforce_memory: bool = Field(
        default=True,
        description="kill a job whose RSS (with its children) exceeds its memory_mb",
    )
    start_method: Literal["spawn", "forkserver"] = Field(
        default="spawn",
        description="multiprocessing start method of warm workers (never fork: threads)",
    )
    recycle_rss_growth_mb: float | None = Field(
        default=512.0,
        gt=0,
        description=(
            "replace a warm worker whose idle RSS grew this much over its post-start "
            "baseline, so heap kept from earlier jobs is not charged to the next job's "
            "memory limit; unset: never"
        ),
    )
