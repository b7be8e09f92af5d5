"""The scheduler: releases jobs when their inputs exist, retries failures, resumes.

One loop, one process: pending jobs whose dependencies succeeded become ready (their
inputs are staged first), ready jobs are submitted while the engine has room, running
jobs are polled. Every state change goes through :func:`skybatch.engines.base.transition`
and is committed to the state database, so a killed driver resumes where it stopped:
jobs it had submitted are treated as lost and retried; succeeded jobs never run again.
After an out-of-memory failure the job's memory request is multiplied by a factor (up
to a cap) and the escalated value is stored, so it survives retries and restarts.
On an engine that can ``reattach`` (Slurm), a restarted driver first asks the engine
about the jobs it had submitted: those the engine still knows are polled again, not
submitted a second time (:meth:`Scheduler.reattach`).

A submission is written ahead: the job's new attempt is committed as ``submitted``
before the engine gets the job, so no job runs that the state database does not know
about. A driver killed at any moment leaves every job it may have started counted (a
restart retries it as a new attempt, never under the number the lost one had), and
the job's stage-out registers its files only while its attempt is the job's current
one (:func:`skybatch.job.stageout.check_current_attempt`): an attempt that outlived
its driver (a warm worker, a Slurm job) cannot overwrite what its retry registered.
A restarted driver also cancels such strays in the engine (:meth:`Engine.strays`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.models import utcnow
from skybatch.engines.base import (
    TERMINAL,
    Engine,
    FailureKind,
    JobState,
    JobStatus,
    engine_capacity,
    transition,
)
from skybatch.faults import kill_point
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.job.causes import EXIT_DISK_FULL, error_line, failure_kind
from skybatch.job.spec import JobReport, JobSpec

from .models import JobAttemptRow, JobRow, QuantumRunRow, RunRow

__all__ = [
    "RetryPolicy",
    "Scheduler",
    "SchedulerHooks",
    "blocked_jobs",
    "create_jobs",
    "flush_all",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    memory_factor: float = 2.0
    memory_cap_mb: int = 16_384
    #: Attempts a job gets on top of ``max_attempts`` after failures that are not its
    #: own (preemption, node failure, a worker killed under it), per job and driver:
    #: such an attempt is retried as it was and does not use up the job's budget,
    #: unless this is spent too.
    infrastructure_retries: int = 3


#: Failures of the batch system, not of the job.
NOT_THE_JOBS_FAULT = frozenset(
    {FailureKind.PREEMPTED, FailureKind.NODE_FAILURE, FailureKind.WORKER_LOST}
)


@dataclass
class SchedulerHooks:
    """What the driver plugs in: spec writing, staging and per-job bookkeeping."""

    make_spec: Callable[[JobNode, JobRow], JobSpec]
    stage_inputs: Callable[[Sequence[JobNode]], None] = lambda jobs: None
    before_retry: Callable[[JobNode], None] = lambda job: None
    progress: Callable[[int, int], None] = lambda done, total: None


@dataclass
class _InFlight:
    job_id: int
    engine_id: str
    spec: JobSpec


@dataclass
class SchedulerResult:
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return set(self.counts) <= {JobState.SUCCEEDED.value}


class Scheduler:
    """Drives one run's jobs to the end on one engine."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: int,
        workflow: Workflow,
        engine: Engine,
        hooks: SchedulerHooks,
        policy: RetryPolicy = RetryPolicy(),
        poll_s: float = 0.02,
        flush_s: float = 0.25,
        max_in_flight: int | None = None,
    ) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.workflow = workflow
        self.engine = engine
        self.hooks = hooks
        self.policy = policy
        self.poll_s = poll_s
        self.flush_s = flush_s
        #: Most jobs handed to the engine at once (a campaign's ``max_running_jobs``),
        #: whatever the engine could take.
        self.max_in_flight = max_in_flight
        self._last_flush = -math.inf
        self.nodes = {job.name: job for job in workflow.jobs}
        self._in_flight: dict[str, _InFlight] = {}
        #: Extra attempts given per job after preemption or node failure.
        self._infrastructure_retries: dict[str, int] = {}

    # -- set-up -------------------------------------------------------------------
    def create_jobs(self) -> int:
        """Insert a row per workflow job that has none yet (idempotent); return new count."""
        return create_jobs(self.sessions, self.run_id, self.workflow)

    def reattach(self) -> list[str]:
        """Adopt the jobs a previous driver had submitted that the engine still knows
        (queued, running or finished): they are polled, not submitted again. Returns
        their names; a no-op on engines without the ``reattach`` capability."""
        if not self.engine.capabilities.reattach:
            return []
        with self.sessions() as session:
            rows = session.scalars(
                select(JobRow).where(
                    JobRow.run_id == self.run_id,
                    JobRow.state.in_([JobState.SUBMITTED.value, JobState.RUNNING.value]),
                    JobRow.engine_id.is_not(None),
                )
            ).all()
            for row in rows:
                session.expunge(row)
        if not rows:
            return []
        statuses = self.engine.poll([row.engine_id for row in rows if row.engine_id])
        adopted = []
        for row, status in zip(rows, statuses, strict=True):
            if status.failure == FailureKind.LOST:
                continue
            spec = self.hooks.make_spec(self.nodes[row.name], row)
            self._in_flight[status.engine_id] = _InFlight(row.id, status.engine_id, spec)
            adopted.append(row.name)
        if adopted:
            _log.info("reattached %d job(s) the engine still runs or ran", len(adopted))
        return adopted

    def recover_orphans(self) -> int:
        """Jobs a previous (killed) driver had submitted are lost: each is retried, or
        held if that was its last attempt. Returns how many there were. Jobs
        :meth:`reattach` adopted are not orphans. Like a lost worker, such an attempt
        is not charged to the job while it has had fewer than ``infrastructure_retries``
        failures that were not its own (counted from its stored attempts, so the bound
        holds across any number of restarts)."""
        retry: list[str] = []
        adopted = {flight.job_id for flight in self._in_flight.values()}
        with self.sessions.begin() as session:
            rows = session.scalars(
                select(JobRow).where(
                    JobRow.run_id == self.run_id,
                    JobRow.state.in_([JobState.SUBMITTED.value, JobState.RUNNING.value]),
                )
            ).all()
            rows = [row for row in rows if row.id not in adopted]
            self._cancel_strays(session, rows)
            for row in rows:
                row.state = transition(JobState(row.state), JobState.FAILED, job=row.name)
                row.failure = FailureKind.LOST.value
                row.error = "the driver stopped while the job was running"
                session.execute(
                    update(JobAttemptRow)
                    .where(JobAttemptRow.job_id == row.id, JobAttemptRow.attempt == row.attempts)
                    .values(
                        state=JobState.FAILED.value,
                        failure=FailureKind.LOST.value,
                        error=row.error,
                        finished_at=utcnow(),
                    )
                )
                if _infrastructure_failures(session, row) < self.policy.infrastructure_retries:
                    # Killed with its driver: not the job's failure (as a lost worker).
                    row.attempt_limit = (row.attempt_limit or self.policy.max_attempts) + 1
                if row.attempts >= (row.attempt_limit or self.policy.max_attempts):
                    row.state = transition(JobState(row.state), JobState.HELD, job=row.name)
                else:
                    row.state = transition(JobState(row.state), JobState.READY, job=row.name)
                    retry.append(row.name)
        for name in retry:
            self.hooks.before_retry(self.nodes[name])
        return len(rows)

    def _cancel_strays(self, session: Session, orphans: Sequence[JobRow]) -> None:
        """Cancel in the engine what a killed driver may have left running there: the
        orphans' jobs, and the run's jobs the engine has whose ids were never written
        (:meth:`Engine.strays`). Their stage-out would be refused anyway (their attempt
        is no longer current), but they hold slots and may still write files."""
        if not self.engine.capabilities.reattach:
            return  # the engine's jobs ended with the driver that started them
        known = set(self._in_flight)
        doomed = [row.engine_id for row in orphans if row.engine_id and row.engine_id not in known]
        run = session.scalar(select(RunRow.name).where(RunRow.id == self.run_id))
        if run is not None:
            doomed += [i for i in self.engine.strays(run, known) if i not in doomed]
        if doomed:
            _log.warning(
                "cancelling %d job(s) a previous driver left in the engine: %s",
                len(doomed),
                ", ".join(doomed[:10]) + (", ..." if len(doomed) > 10 else ""),
            )
            self.engine.cancel(doomed)
            self.engine.forget(doomed)

    def release_held(self) -> list[str]:
        """Give every held job of the run a fresh budget of attempts (an operator's
        resume after fixing the cause); they go back to pending. Returns their names."""
        with self.sessions.begin() as session:
            rows = session.scalars(
                select(JobRow).where(
                    JobRow.run_id == self.run_id, JobRow.state == JobState.HELD.value
                )
            ).all()
            for row in rows:
                row.state = transition(JobState(row.state), JobState.PENDING, job=row.name)
                row.attempt_limit = row.attempts + self.policy.max_attempts
            return [row.name for row in rows]

    # -- the loop -----------------------------------------------------------------
    def run(self) -> SchedulerResult:
        """Run until every job succeeded or nothing more can run; return the counts.

        The run's jobs are loaded once and kept in memory: a pending job waits on a
        counter of unfinished dependencies, so each loop costs what changed, not the
        size of the workflow. The state changes of one loop are written in one
        transaction at most every ``flush_s`` seconds (a killed driver loses at most
        the changes since: resume treats those jobs as lost and runs them again).
        This is the one-run case of the loop an execution pool
        (:mod:`skybatch.run.pool`) runs over many schedulers through :meth:`step`.
        """
        self.start()
        capacity = self.capacity()
        while True:
            changed = self.step(capacity - len(self._in_flight))
            if self.finished:
                self._flush(force=True)
                return self.result()
            if not changed:
                time.sleep(self.poll_s)

    # -- the loop, one step at a time (an execution pool drives many) ------------
    def start(self) -> None:
        """Load the run's jobs; :meth:`step` may be called from now on."""
        self._load()

    def capacity(self) -> int:
        """Most jobs this run hands its engine at once when it has it to itself.

        A few jobs beyond what runs at once wait in the engine's own queue, so a
        worker that finishes starts the next job at once instead of waiting for the
        loop to notice and submit."""
        capacity = engine_capacity(self.engine.capabilities)
        if self.max_in_flight is not None:
            capacity = min(capacity, self.max_in_flight)
        return capacity

    def step(self, room: int, *, flush: bool = True) -> bool:
        """One turn of the loop: release jobs whose dependencies succeeded, submit at
        most ``room`` ready jobs (written ahead, see the module docstring), poll those
        in the engine; ``flush``: write the state changes when due. Returns whether
        anything changed. An execution pool runs the same turn in two halves over all
        its runs, :meth:`plan` then :meth:`launch`, with one transaction between them
        that writes every run's submissions ahead (and each run's other changes)."""
        changed = self.plan(room)
        if self._staged is not None:
            self._flush(force=True)
        changed |= self.launch()
        if flush:
            self._flush()
        return changed

    def plan(self, room: int) -> bool:
        """The first half of :meth:`step`: release ready jobs and stage at most
        ``room`` submissions: their new attempts are recorded as submitted, in memory,
        to be written before :meth:`launch` hands them to the engine."""
        if self.max_in_flight is not None:
            room = min(room, self.max_in_flight - len(self._in_flight))
        changed = self._release_ready()
        changed |= self._stage(room)
        return changed

    def launch(self) -> bool:
        """The second half of :meth:`step`, once the staged submissions are written:
        hand them to the engine, poll the jobs in it."""
        changed = self._submit_staged()
        changed |= self._poll()
        self.hooks.progress(self._n_succeeded, len(self.nodes))
        return changed

    @property
    def finished(self) -> bool:
        """Nothing in the engine, nothing ready, no pending job that can still run."""
        return not self._in_flight and not self._ready and not self._runnable_pending()

    @property
    def staged(self) -> bool:
        """Whether :meth:`plan` staged submissions that :meth:`launch` has not handed
        to the engine yet (they must be written first)."""
        return self._staged is not None

    @property
    def n_in_flight(self) -> int:
        """Jobs handed to the engine and not finished."""
        return len(self._in_flight)

    @property
    def n_ready(self) -> int:
        """Jobs whose inputs are staged, waiting for room in the engine (or to be
        released: pending jobs whose dependencies all succeeded)."""
        return len(self._ready) + len(self._releasable)

    @property
    def n_succeeded(self) -> int:
        return self._n_succeeded

    def result(self) -> SchedulerResult:
        return SchedulerResult(self._counts())

    def cancel(self, reason: str = "cancelled by the operator") -> None:
        """Stop the run: its jobs in the engine are cancelled there and their attempts
        recorded as cancelled, and every job that has not ended is cancelled (held jobs
        too: a cancelled run is over). The changes are written at the next flush."""
        ids = list(self._in_flight)
        if ids:
            self.engine.cancel(ids)
        now = utcnow()
        for engine_id in ids:
            flight = self._in_flight.pop(engine_id)
            row = self._by_id[flight.job_id]
            self._set(row, JobState.CANCELLED)
            row.error = reason
            self._attempt_updates.append(
                {
                    "b_job_id": row.id,
                    "b_attempt": row.attempts,
                    "state": JobState.CANCELLED.value,
                    "failure": FailureKind.NONE.value,
                    "exit_code": None,
                    "error": reason,
                    "finished_at": now,
                    "max_rss_mb": None,
                    "cpu_s": None,
                }
            )
        stoppable = {JobState.PENDING.value, JobState.READY.value, JobState.HELD.value}
        for row in self._jobs.values():
            if row.state in stoppable:
                self._set(row, JobState.CANCELLED)
                row.error = reason
        self._ready.clear()
        self._releasable.clear()
        self._blocked.update(self._jobs)

    def dirty(self) -> bool:
        """Whether state changes wait to be written."""
        return bool(
            self._dirty
            or self._new_attempts
            or self._engine_ids
            or self._attempt_updates
            or self._quanta
        )

    def _load(self) -> None:
        with self.sessions() as session:
            rows = session.scalars(select(JobRow).where(JobRow.run_id == self.run_id)).all()
            for row in rows:
                session.expunge(row)
        self._jobs = {row.name: row for row in rows}
        self._by_id = {row.id: row for row in rows}
        self._children: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for dep in node.depends_on:
                self._children[dep].append(node.name)
        succeeded = JobState.SUCCEEDED.value
        self._waiting = {
            name: sum(self._jobs[d].state != succeeded for d in node.depends_on)
            for name, node in self.nodes.items()
        }
        self._n_succeeded = sum(row.state == succeeded for row in rows)
        self._ready: dict[str, None] = {  # insertion-ordered set
            name: None for name, row in self._jobs.items() if row.state == JobState.READY.value
        }
        self._releasable: dict[str, None] = {
            name: None
            for name, row in self._jobs.items()
            if row.state == JobState.PENDING.value and self._waiting[name] == 0
        }
        self._blocked = blocked_jobs(
            self.nodes, {name: row.state for name, row in self._jobs.items()}
        )
        self._dirty: set[int] = set()
        self._new_attempts: list[dict[str, Any]] = []
        #: Submissions recorded and not yet handed to the engine (:meth:`plan`).
        self._staged: tuple[list[str], list[JobRow], list[JobSpec]] | None = None
        self._engine_ids: list[dict[str, Any]] = []  # of attempts written ahead
        self._attempt_updates: list[dict[str, Any]] = []
        self._quanta: list[dict[str, Any]] = []

    def _set(self, row: JobRow, state: JobState) -> None:
        row.state = transition(JobState(row.state), state, job=row.name).value
        self._dirty.add(row.id)

    def _counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self._jobs.values():
            out[row.state] = out.get(row.state, 0) + 1
        return out

    def _runnable_pending(self) -> bool:
        """Whether a pending job can still run: one is releasable now, or one is
        waiting on a job that is still going (not held/cancelled upstream)."""
        if self._releasable:
            return True
        return any(
            row.state == JobState.PENDING.value and name not in self._blocked
            for name, row in self._jobs.items()
        )

    def _release_ready(self) -> bool:
        if not self._releasable:
            return False
        names = list(self._releasable)
        self._releasable.clear()
        self.hooks.stage_inputs([self.nodes[name] for name in names])
        for name in names:
            self._set(self._jobs[name], JobState.READY)
            self._ready[name] = None
        return True

    def _stage(self, room: int) -> bool:
        if room <= 0 or not self._ready:
            return False
        names = list(self._ready)[:room]
        rows = [self._jobs[name] for name in names]
        refused = [(row, p) for row in rows if (p := self.engine.admission_problem(row))]
        for row, problem in refused:
            self._refuse(row, problem)
        if refused:
            names = [name for name in names if name in self._ready]
            rows = [self._jobs[name] for name in names]
            if not rows:
                return True
        specs = []
        for row in rows:
            row.attempts += 1
        try:
            for row in rows:
                specs.append(self.hooks.make_spec(self.nodes[row.name], row))
        except Exception as exc:
            if failure_kind(exc) is None:
                raise
            self._not_submitted(names, exc)  # a full disk: hold, never crash the run
            return True
        now = utcnow()
        for row, spec in zip(rows, specs, strict=True):
            self._set(row, JobState.SUBMITTED)
            row.engine_id = None
            self._new_attempts.append(
                {
                    "job_id": row.id,
                    "attempt": row.attempts,
                    "engine_id": None,
                    "state": JobState.SUBMITTED.value,
                    "memory_mb": row.memory_mb,
                    "report_path": spec.report_path,
                    "submitted_at": now,
                }
            )
        self._staged = (names, rows, specs)
        return True

    def _submit_staged(self) -> bool:
        """Hand the staged jobs to the engine: their attempts must be written by now."""
        if self._staged is None:
            return False
        names, rows, specs = self._staged
        self._staged = None
        try:
            engine_ids = self.engine.submit(specs)
        except Exception as exc:
            if failure_kind(exc) is None:
                raise
            self._not_submitted(names, exc)  # a full disk: hold, never crash the run
            return True
        kill_point("execute:submitted")  # the engine has the jobs, the database no ids
        for name, row, spec, engine_id in zip(names, rows, specs, engine_ids, strict=True):
            del self._ready[name]
            row.engine_id = engine_id
            self._dirty.add(row.id)
            self._engine_ids.append(
                {"b_job_id": row.id, "b_attempt": row.attempts, "engine_id": engine_id}
            )
            self._in_flight[engine_id] = _InFlight(row.id, engine_id, spec)
        return True

    def _not_submitted(self, names: list[str], exc: Exception) -> None:
        """Jobs whose spec could not be written (a full disk, :mod:`skybatch.job.causes`):
        each attempt is recorded as failed with the cause and the job held, since
        trying again before the operator frees space would fail the same way."""
        kind = failure_kind(exc) or FailureKind.ERROR
        error = f"submit: {error_line(exc)}"
        _log.error("cannot submit %d job(s): %s; held for the operator", len(names), error)
        for name in names:
            self._hold_unsubmitted(self._jobs[name], kind, error)

    def _refuse(self, row: JobRow, problem: str) -> None:
        """A job no allocation of the engine can take fails now, as an attempt that
        names why (both numbers), and is held: waiting would be forever, and a retry
        would ask for the same (``skybatch run --resume`` with new engine settings)."""
        row.attempts += 1
        message = f"job {row.name} cannot be scheduled: {problem}"
        _log.error("%s", message)
        self._hold_unsubmitted(row, FailureKind.UNSCHEDULABLE, message)

    def _hold_unsubmitted(self, row: JobRow, kind: FailureKind, error: str) -> None:
        """Record the attempt ``row.attempts`` as failed before it reached the engine,
        with ``kind`` and ``error``, and hold the job (its children are blocked)."""
        now = utcnow()
        del self._ready[row.name]
        if row.state != JobState.SUBMITTED.value:  # else staged and written ahead
            self._set(row, JobState.SUBMITTED)
            self._new_attempts.append(
                {
                    "job_id": row.id,
                    "attempt": row.attempts,
                    "engine_id": None,
                    "state": JobState.SUBMITTED.value,
                    "memory_mb": row.memory_mb,
                    "report_path": None,
                    "submitted_at": now,
                }
            )
        self._set(row, JobState.FAILED)
        self._set(row, JobState.HELD)
        row.engine_id, row.exit_code, row.failure, row.error = None, None, kind.value, error
        self._attempt_updates.append(
            {
                "b_job_id": row.id,
                "b_attempt": row.attempts,
                "state": JobState.FAILED.value,
                "failure": kind.value,
                "exit_code": None,
                "error": error,
                "finished_at": now,
                "max_rss_mb": None,
                "cpu_s": None,
            }
        )
        self._block_downstream(row.name)

    def _poll(self) -> bool:
        if not self._in_flight:
            return False
        statuses = self.engine.poll(list(self._in_flight))
        changed = False
        ended: list[str] = []
        for status in statuses:
            flight = self._in_flight[status.engine_id]
            if status.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                del self._in_flight[status.engine_id]
                self._finish(flight, status)
                ended.append(status.engine_id)
                changed = True
            elif status.state == JobState.RUNNING:
                row = self._by_id[flight.job_id]
                if row.state == JobState.SUBMITTED.value:
                    self._set(row, JobState.RUNNING)
                    changed = True
        if ended:
            self.engine.forget(ended)  # read: the engine need not keep them
        return changed

    def _finish(self, flight: _InFlight, status: JobStatus) -> None:
        report = read_report(flight.spec.report_path)
        state = status.state
        failure = status.failure
        if state == JobState.SUCCEEDED and report is not None and report.status != "succeeded":
            state, failure = JobState.FAILED, FailureKind.ERROR
        if state == JobState.FAILED and failure == FailureKind.ERROR and report is not None:
            failure = _proved(report.failure, failure)  # what the job proved (disk full)
        elif report is None and failure == FailureKind.ERROR and status.exit_code == EXIT_DISK_FULL:
            failure = FailureKind.DISK_FULL  # no room even for its report
        if (
            failure == FailureKind.LOST
            and report is not None
            and report.status == "succeeded"
            and report.attempt == flight.spec.attempt
        ):  # the engine forgot the job (e.g. after a restart), but it finished well
            state, failure = JobState.SUCCEEDED, FailureKind.NONE
        error = (report.error if report else None) or status.message
        exit_code = report.exit_code if report else status.exit_code
        row = self._by_id[flight.job_id]
        self._set(row, state)
        row.exit_code = exit_code
        row.failure = failure.value if state != JobState.SUCCEEDED else None
        row.error = error if state != JobState.SUCCEEDED else None
        self._attempt_updates.append(
            {
                "b_job_id": row.id,
                "b_attempt": row.attempts,
                "state": state.value,
                "failure": failure.value,
                "exit_code": exit_code,
                "error": error,
                "finished_at": utcnow(),
                "max_rss_mb": (report.stats.max_rss_mb if report else None) or status.max_rss_mb,
                "cpu_s": report.stats.cpu_s if report else None,
            }
        )
        if report is not None:
            self._quanta.extend(_quantum_rows(self.run_id, row, report))
        if state == JobState.SUCCEEDED:
            self._n_succeeded += 1
            for child in self._children[row.name]:
                self._waiting[child] -= 1
                if self._waiting[child] == 0 and self._jobs[child].state == JobState.PENDING.value:
                    self._releasable[child] = None
        elif state == JobState.FAILED:
            self._retry_or_hold(row, failure)
        else:
            self._block_downstream(row.name)

    def _retry_or_hold(self, row: JobRow, failure: FailureKind) -> None:
        """Retry (with more memory after OOM) or hold for the operator."""
        if failure in NOT_THE_JOBS_FAULT:
            given = self._infrastructure_retries.get(row.name, 0)
            if given < self.policy.infrastructure_retries:
                self._infrastructure_retries[row.name] = given + 1
                row.attempt_limit = (row.attempt_limit or self.policy.max_attempts) + 1
        if row.attempts >= (row.attempt_limit or self.policy.max_attempts):
            self._set(row, JobState.HELD)
            self._block_downstream(row.name)
            return
        if failure == FailureKind.OUT_OF_MEMORY:
            row.memory_mb = min(
                self.policy.memory_cap_mb, int(row.memory_mb * self.policy.memory_factor)
            )
        self.hooks.before_retry(self.nodes[row.name])
        self._set(row, JobState.READY)
        self._ready[row.name] = None

    def _block_downstream(self, name: str) -> None:
        stack = [name]
        while stack:
            current = stack.pop()
            if current in self._blocked:
                continue
            self._blocked.add(current)
            stack.extend(self._children[current])

    def _flush(self, *, force: bool = False) -> None:
        """Write the changes of the last loops in one transaction, at most every
        ``flush_s`` seconds (or at once when ``force``): a commit per loop would make
        the database, not the jobs, set the pace."""
        if not self.dirty():
            return
        if not force and time.monotonic() - self._last_flush < self.flush_s:
            return
        self._last_flush = time.monotonic()
        with self.sessions.begin() as session:
            self.flush_into(session)
        self.flushed()

    def flush_into(self, session: Session) -> None:
        """Write the pending state changes in the caller's transaction; call
        :meth:`flushed` once it committed (an execution pool writes the changes of
        all its runs at once: :func:`flush_all`)."""
        flush_all(session, [self])

    def flushed(self) -> None:
        """The changes :meth:`flush_into` wrote were committed: forget them."""
        self._dirty.clear()
        self._new_attempts = []
        self._engine_ids = []
        self._attempt_updates = []
        self._quanta = []


def flush_all(session: Session, schedulers: Sequence[Scheduler]) -> None:
    """Write the pending state changes of ``schedulers`` in the caller's transaction,
    one executemany per kind of change for all of them (Core statements: no ORM
    identity map to keep in step, no ORM bulk layer); call each one's
    :meth:`Scheduler.flushed` once it committed."""
    now = utcnow()
    jobs: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    engine_ids: list[dict[str, Any]] = []
    ended: list[dict[str, Any]] = []
    quanta: list[dict[str, Any]] = []
    for scheduler in schedulers:
        jobs.extend(
            {
                "b_id": row.id,
                "state": row.state,
                "attempts": row.attempts,
                "attempt_limit": row.attempt_limit,
                "memory_mb": row.memory_mb,
                "engine_id": row.engine_id,
                "exit_code": row.exit_code,
                "failure": row.failure,
                "error": row.error,
                "updated_at": now,
            }
            for row in (scheduler._by_id[i] for i in scheduler._dirty)
        )
        new.extend(scheduler._new_attempts)
        engine_ids.extend(scheduler._engine_ids)
        ended.extend(scheduler._attempt_updates)
        quanta.extend(scheduler._quanta)
    connection = session.connection()
    if jobs:
        connection.execute(_UPDATE_JOB, jobs)
    if new:  # before their engine ids and ends: the same flush may carry all three
        connection.execute(insert(_attempts), new)
    if engine_ids:
        connection.execute(_ATTEMPT_ENGINE_ID, engine_ids)
    if ended:
        connection.execute(_FINISH_ATTEMPT, ended)
    if quanta:
        connection.execute(insert(_quantum_runs), quanta)


def create_jobs(sessions: sessionmaker[Session], run_id: int, workflow: Workflow) -> int:
    """Insert a row per workflow job of run ``run_id`` that has none yet, in one
    transaction (idempotent: all or none are new); return how many were new."""
    with sessions.begin() as session:
        existing = set(session.scalars(select(JobRow.name).where(JobRow.run_id == run_id)))
        new = [
            {
                "run_id": run_id,
                "name": job.name,
                "label": job.label,
                "state": JobState.PENDING.value,
                "memory_mb": job.resources.memory_mb,
                "cores": job.resources.cores,
                "walltime_s": job.resources.walltime_s,
                "n_quanta": len(job.quanta),
            }
            for job in workflow.jobs
            if job.name not in existing
        ]
        if new:  # a Core executemany: no ORM object per job (a tenth of the time)
            session.execute(insert(JobRow), new)
    return len(new)


#: Stored failure kinds of attempts that were not the job's fault (the killed driver's
#: lost jobs included).
_INFRASTRUCTURE_FAILURES = [k.value for k in NOT_THE_JOBS_FAULT] + [FailureKind.LOST.value]


def _infrastructure_failures(session: Session, row: JobRow) -> int:
    """Earlier attempts of ``row`` that failed through no fault of the job."""
    return int(
        session.scalar(
            select(func.count()).where(
                JobAttemptRow.job_id == row.id,
                JobAttemptRow.attempt < row.attempts,
                JobAttemptRow.failure.in_(_INFRASTRUCTURE_FAILURES),
            )
        )
        or 0
    )


def _proved(kind: str | None, default: FailureKind) -> FailureKind:
    """The failure kind a job report names, if this skybatch knows it."""
    try:
        return FailureKind(kind) if kind else default
    except ValueError:
        return default


def blocked_jobs(nodes: dict[str, JobNode], states: dict[str, str]) -> set[str]:
    """Names of the jobs that cannot run because they, or a job upstream of them, are
    held or cancelled (iterative, so graph depth is not bounded by the recursion limit)."""
    stop = {JobState.HELD.value, JobState.CANCELLED.value}
    memo: dict[str, bool] = {}
    for root in nodes:
        stack = [root]
        while stack:
            name = stack[-1]
            if name in memo:
                stack.pop()
                continue
            deps = nodes[name].depends_on
            todo = [d for d in deps if d not in memo]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            memo[name] = states.get(name) in stop or any(memo[d] for d in deps)
    return {name for name, is_blocked in memo.items() if is_blocked}


_attempts: Table = JobAttemptRow.__table__  # type: ignore[assignment]
#: Finish one attempt (executemany over the attempts of a flush).
_jobs: Table = JobRow.__table__  # type: ignore[assignment]
_quantum_runs: Table = QuantumRunRow.__table__  # type: ignore[assignment]

_UPDATE_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        attempts=bindparam("attempts"),
        attempt_limit=bindparam("attempt_limit"),
        memory_mb=bindparam("memory_mb"),
        engine_id=bindparam("engine_id"),
        exit_code=bindparam("exit_code"),
        failure=bindparam("failure"),
        error=bindparam("error"),
        updated_at=bindparam("updated_at"),
    )
)

_ATTEMPT_ENGINE_ID = (
    update(_attempts)
    .where(
        _attempts.c.job_id == bindparam("b_job_id"),
        _attempts.c.attempt == bindparam("b_attempt"),
    )
    .values(engine_id=bindparam("engine_id"))
)

_FINISH_ATTEMPT = (
    update(_attempts)
    .where(
        _attempts.c.job_id == bindparam("b_job_id"),
        _attempts.c.attempt == bindparam("b_attempt"),
    )
    .values(
        state=bindparam("state"),
        failure=bindparam("failure"),
        exit_code=bindparam("exit_code"),
        error=bindparam("error"),
        finished_at=bindparam("finished_at"),
        max_rss_mb=bindparam("max_rss_mb"),
        cpu_s=bindparam("cpu_s"),
    )
)


def read_report(path: str) -> JobReport | None:
    """The job report at ``path``; None if it is missing or unreadable (a job that died
    before writing it)."""
    try:
        with open(path, "rb") as stream:
            return JobReport.model_validate_json(stream.read())
    except (OSError, ValueError):
        return None


def _quantum_rows(run_id: int, job: JobRow, report: JobReport) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "job_id": job.id,
            "attempt": report.attempt,
            "quantum_id": q.quantum_id,
            "task_label": q.task_label,
            "data_id": q.data_id,
            "status": q.status,
            "start": q.stats.start if q.stats else None,
            "end": q.stats.end if q.stats else None,
            "cpu_s": q.stats.cpu_s if q.stats else None,
            "max_rss_mb": q.stats.max_rss_mb if q.stats else None,
            "error": q.error,
        }
        for q in report.quanta
    ]


__all__ += ["TERMINAL", "SchedulerResult", "read_report"]
