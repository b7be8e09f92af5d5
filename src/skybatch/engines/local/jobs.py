"""The local engine's record of one job, and the files it keeps beside the job's report.

For a job whose ``report_path`` is ``<dir>/report.json`` the engine writes
``<dir>/spec-<attempt>.json`` (the spec with ``engine_job_id`` filled in; the runner
is called with this path) and sends the job's standard output and error to
``<dir>/engine-<attempt>.log``. The caller does not have to write the spec itself.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from skybatch.engines.base import FailureKind, JobState, JobStatus, transition

if TYPE_CHECKING:
    from skybatch.job.spec import JobSpec

__all__ = [
    "LOST_SIGNALS",
    "LocalJob",
    "Slot",
    "describe_exit",
    "job_files",
    "killed_from_outside",
    "log_tail",
    "write_spec",
]

ACTIVE = frozenset({JobState.SUBMITTED, JobState.RUNNING})


class Slot(Protocol):
    """What runs a job (a warm worker or a child process), as the engine sees it."""

    @property
    def ps(self) -> psutil.Process | None:
        """The process whose tree is measured and killed."""

    def kill(self) -> None:
        """Kill the process tree now (a warm worker is then replaced)."""


@dataclass(eq=False)
class LocalJob:
    """Mutable state of one submitted job; guarded by the engine's lock."""

    engine_id: str
    spec: JobSpec
    spec_path: Path
    log_path: Path
    state: JobState = JobState.SUBMITTED
    exit_code: int | None = None
    failure: FailureKind = FailureKind.NONE
    message: str | None = None
    max_rss_mb: float | None = None
    started: float | None = None  # time.monotonic() when it began running
    slot: Slot | None = field(default=None, repr=False)  # what runs it, while it runs

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def start(self, slot: Slot, now: float) -> None:
        self.state = transition(self.state, JobState.RUNNING, job=self.engine_id)
        self.slot, self.started = slot, now

    def finish(
        self,
        state: JobState,
        *,
        failure: FailureKind = FailureKind.NONE,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Move to a final state through the one state machine; detach from the slot."""
        self.state = transition(self.state, state, job=self.engine_id)
        self.failure, self.exit_code, self.message = failure, exit_code, message
        self.slot = None

    def finish_exited(self, exit_code: int, error: str | None = None) -> None:
        """Finish from the runner's exit code (0: success), quoting the log on failure;
        a process killed from outside (SIGKILL, SIGTERM: not by this engine, which ends
        a job before it kills it) is a lost worker, not the job's failure."""
        if exit_code == 0:
            self.finish(JobState.SUCCEEDED, exit_code=0)
            return
        if killed_from_outside(exit_code):
            self.finish(
                JobState.FAILED,
                failure=FailureKind.WORKER_LOST,
                exit_code=exit_code,
                message=f"the process running job {self.spec.job} {describe_exit(exit_code)} "
                "from outside (a lost worker, not the job's failure)",
            )
            return
        detail = error or log_tail(self.log_path)
        message = f"job {self.spec.job} {describe_exit(exit_code)}"
        if detail:
            message += f": {detail}"
        self.finish(
            JobState.FAILED, failure=FailureKind.ERROR, exit_code=exit_code, message=message
        )

    def status(self) -> JobStatus:
        return JobStatus(
            engine_id=self.engine_id,
            state=self.state,
            exit_code=self.exit_code,
            failure=self.failure,
            message=self.message,
            max_rss_mb=None if self.max_rss_mb is None else round(self.max_rss_mb, 1),
        )


def job_files(spec: JobSpec) -> tuple[Path, Path]:
    """``(spec path, log path)`` of a job: beside its report, one pair per attempt."""
    directory = Path(spec.report_path).absolute().parent
    return directory / f"spec-{spec.attempt}.json", directory / f"engine-{spec.attempt}.log"


def write_spec(spec: JobSpec, engine_id: str, path: Path) -> None:
    """Write the spec (with ``engine_job_id``) atomically, unless an identical file exists."""
    text = spec.model_copy(update={"engine_job_id": engine_id}).model_dump_json(indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


#: Signals that end a process from outside (an operator, the kernel, a supervisor):
#: the job did not crash, what ran it was taken away.
LOST_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM})


def killed_from_outside(code: int | None) -> bool:
    """An exit code (negative: a signal) saying the process was killed from outside."""
    return code is not None and code < 0 and -code in LOST_SIGNALS


def describe_exit(code: int) -> str:
    """``"exited with code 3"`` or ``"was killed by SIGSEGV"`` (negative: a signal)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}"


def log_tail(path: Path, limit: int = 300) -> str:
    """Last non-empty line of a job log (usually the error), or "" if there is none."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip():
            return line.strip()[:limit]
    return ""
