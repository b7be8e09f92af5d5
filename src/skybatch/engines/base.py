"""The batch interface every engine implements, and the one job state machine.

skybatch owns the graph: its scheduler decides which jobs are ready, retries failed
ones (with more memory after an out-of-memory failure) and restarts runs. Engines
only submit, poll and cancel; they report what happened in engine terms translated
to :class:`JobStatus`, and :func:`transition` is the only place a job's state changes.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from skybatch.errors import SkybatchError

if TYPE_CHECKING:
    from skybatch.job.spec import JobSpec

__all__ = [
    "TRANSITIONS",
    "Engine",
    "EngineCapabilities",
    "FailureKind",
    "InvalidTransitionError",
    "JobState",
    "JobStatus",
    "Resources",
    "engine_capacity",
    "transition",
]


class JobState(enum.StrEnum):
    PENDING = "pending"  # waiting for the jobs it depends on
    READY = "ready"  # inputs exist; may be submitted
    SUBMITTED = "submitted"  # handed to the engine
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # this attempt failed; retried (-> ready) or held
    HELD = "held"  # out of retries: waits for the operator
    CANCELLED = "cancelled"


#: Allowed transitions: the whole state machine in one table.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.READY, JobState.CANCELLED}),
    JobState.READY: frozenset({JobState.SUBMITTED, JobState.PENDING, JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.FAILED: frozenset({JobState.READY, JobState.HELD}),
    JobState.HELD: frozenset({JobState.READY, JobState.PENDING, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

TERMINAL = frozenset({JobState.SUCCEEDED, JobState.HELD, JobState.CANCELLED})


class InvalidTransitionError(SkybatchError):
    """A job was asked to move between states the state machine does not connect."""


def transition(current: JobState, new: JobState, *, job: str = "") -> JobState:
    """Return ``new`` if ``current -> new`` is allowed; raise InvalidTransitionError."""
    if new == current:
        return new
    if new not in TRANSITIONS[current]:
        raise InvalidTransitionError(
            f"job {job or '?'} cannot go from {current} to {new}",
            where=job or None,
            hint=f"allowed from {current}: {', '.join(sorted(TRANSITIONS[current])) or 'none'}",
        )
    return new


class FailureKind(enum.StrEnum):
    """Why an attempt failed; drives the retry policy."""

    NONE = "none"
    ERROR = "error"  # the job itself failed (task exception, bad exit code)
    OUT_OF_MEMORY = "out_of_memory"  # retry with memory x factor (capped)
    TIMEOUT = "timeout"  # walltime exceeded
    NODE_FAILURE = "node_failure"  # plain retry
    PREEMPTED = "preempted"  # plain retry
    CANCELLED = "cancelled"
    LOST = "lost"  # the engine no longer knows the job
    WORKER_LOST = "worker_lost"  # what ran the job was killed from outside: plain retry
    DISK_FULL = "disk_full"  # ENOSPC/EDQUOT in the job's error chain (skybatch.job.causes)
    UNSCHEDULABLE = "unschedulable"  # no allocation of the engine could ever take it


class JobStatus(BaseModel):
    """What an engine reports about one submitted job."""

    model_config = ConfigDict(frozen=True)

    engine_id: str
    state: JobState  # SUBMITTED, RUNNING, SUCCEEDED, FAILED or CANCELLED
    exit_code: int | None = None
    failure: FailureKind = FailureKind.NONE
    message: str | None = None
    max_rss_mb: float | None = None


class Resources(Protocol):
    """What a job asks for (a ResourceRequest, a JobSpec, a job row)."""

    @property
    def memory_mb(self) -> int: ...
    @property
    def cores(self) -> int: ...
    @property
    def walltime_s(self) -> int: ...


class EngineCapabilities(BaseModel):
    """What an engine can do; callers check these, never probe for NotImplementedError."""

    model_config = ConfigDict(frozen=True)

    max_parallel_jobs: int
    enforces_memory: bool = False
    warm_workers: bool = False
    isolation_modes: tuple[str, ...] = ("process",)
    reattach: bool = False  # a restarted manager can poll jobs submitted before
    #: Jobs a scheduler may hand over beyond ``max_parallel_jobs``, to wait in the
    #: engine's own queue, so a worker that ends a job starts the next at once (None:
    #: as many again, at least 2). 0 where ``max_parallel_jobs`` is itself the most
    #: jobs the engine may hold (a batch system's queue depth).
    queue_ahead: int | None = None
    shared_filesystem: bool = True


def engine_capacity(capabilities: EngineCapabilities) -> int:
    """The most jobs to hand an engine at once: its parallel jobs and its queue ahead."""
    parallel = capabilities.max_parallel_jobs
    ahead = capabilities.queue_ahead
    return parallel + (max(2, parallel) if ahead is None else ahead)


class Engine(ABC):
    """Submits job specs and reports their states; nothing else.

    An engine plugin (entry-point group ``skybatch.engines``, see
    :class:`skybatch.engines.registry.EngineRegistry`) declares its ``name`` and its
    ``settings_model``, and its constructor takes an instance of that model as its
    first argument: the registry validates the settings a campaign file or the command
    line gives and builds the engine with them.
    """

    name: ClassVar[str]
    #: The pydantic model of this engine's settings (``extra="forbid"`` recommended,
    #: so a misspelt setting is an error, not a silent default).
    settings_model: ClassVar[type[BaseModel]]

    @property
    @abstractmethod
    def capabilities(self) -> EngineCapabilities:
        """This instance's capabilities (may depend on its settings)."""

    @abstractmethod
    def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        """Start the jobs; return one engine id per spec, in order. The directory of a
        spec's ``report_path`` may not exist yet: an engine that writes the job's files
        there (its spec, its log) creates it."""

    @abstractmethod
    def poll(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        """Current status of each job, in order (unknown ids: FAILED with failure LOST)."""

    @abstractmethod
    def cancel(self, engine_ids: Sequence[str]) -> None:
        """Stop the jobs (idempotent)."""

    @abstractmethod
    def close(self) -> None:
        """Release workers and resources; running jobs are cancelled."""

    @classmethod
    def admission_problem_for(cls, settings: BaseModel, job: Resources) -> str | None:
        """Why no allocation an engine with ``settings`` can make would ever take
        ``job`` (naming the job's number and the limit's), or None if one can. Known
        from the settings alone, so runs and campaigns are refused before anything is
        built or written. Default: every job fits."""
        return None

    def admission_problem(self, job: Resources) -> str | None:
        """:meth:`admission_problem_for` this engine's settings; an engine may also ask
        its batch system (a Slurm partition's time limit). The scheduler fails a job
        with a problem (``FailureKind.UNSCHEDULABLE``) instead of leaving it waiting."""
        settings = getattr(self, "settings", None)
        if not isinstance(settings, BaseModel):
            return None
        return type(self).admission_problem_for(settings, job)

    def forget(self, engine_ids: Sequence[str]) -> None:  # noqa: B027 (optional hook)
        """The caller has read these jobs' final states and will not ask about them
        again: the engine may drop what it keeps of them (a polled job it forgot is
        unknown, ``LOST``). An execution pool's engine lives as long as its manager and
        would otherwise grow with every job it ever ran. Optional: a no-op by default."""

    def strays(self, run: str, known: Collection[str]) -> list[str]:
        """Engine ids of run ``run``'s jobs that the engine still queues or runs and
        that are not in ``known``: jobs a killed driver handed over without its state
        database learning their ids. A restarted driver cancels them before it retries
        their jobs. Only engines whose jobs outlive their driver (``reattach``) have
        any; the default is none."""
        return []

    def warm_up(self) -> None:  # noqa: B027 (optional hook, a no-op by default)
        """Get ready for jobs before the first submit (e.g. start worker processes
        while the caller still builds the workflow). Optional: a no-op by default."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
