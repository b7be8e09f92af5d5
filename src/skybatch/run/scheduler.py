"""The scheduler: releases jobs when their inputs exist, retries failures, resumes.

One loop, one process: pending jobs whose dependencies succeeded become ready (their
inputs are staged first), ready jobs are submitted while the engine has room, running
jobs are polled. Every state change goes through :func:`skybatch.engines.base.transition`
and is committed to the state database, so a killed driver resumes where it stopped:
jobs it had submitted are treated as lost and retried; succeeded jobs never run again.
After an out-of-memory failure the job's memory request is multiplied by a factor (up
to a cap) and the escalated value is stored, so it survives retries and restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.models import utcnow
from skybatch.engines.base import TERMINAL, Engine, FailureKind, JobState, JobStatus, transition
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.job.spec import JobReport, JobSpec

from .models import JobAttemptRow, JobRow, QuantumRunRow

__all__ = ["RetryPolicy", "Scheduler", "SchedulerHooks", "blocked_jobs"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    memory_factor: float = 2.0
    memory_cap_mb: int = 16_384


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
    ) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.workflow = workflow
        self.engine = engine
        self.hooks = hooks
        self.policy = policy
        self.poll_s = poll_s
        self.nodes = {job.name: job for job in workflow.jobs}
        self._in_flight: dict[str, _InFlight] = {}

    # -- set-up -------------------------------------------------------------------
    def create_jobs(self) -> int:
        """Insert a row per workflow job that has none yet (idempotent); return new count."""
        with self.sessions.begin() as session:
            existing = set(session.scalars(select(JobRow.name).where(JobRow.run_id == self.run_id)))
            new = [
                JobRow(
                    run_id=self.run_id,
                    name=job.name,
                    label=job.label,
                    state=JobState.PENDING.value,
                    memory_mb=job.resources.memory_mb,
                    cores=job.resources.cores,
                    walltime_s=job.resources.walltime_s,
                    n_quanta=len(job.quanta),
                )
                for job in self.workflow.jobs
                if job.name not in existing
            ]
            session.add_all(new)
        return len(new)

    def recover_orphans(self) -> int:
        """Jobs a previous (killed) driver had submitted are lost: fail them for a retry."""
        with self.sessions.begin() as session:
            rows = session.scalars(
                select(JobRow).where(
                    JobRow.run_id == self.run_id,
                    JobRow.state.in_([JobState.SUBMITTED.value, JobState.RUNNING.value]),
                )
            ).all()
            for row in rows:
                row.state = transition(JobState(row.state), JobState.FAILED, job=row.name)
                row.failure = FailureKind.LOST.value
                row.error = "the driver stopped while the job was running"
        for row in rows:
            self._after_failure(row.id, FailureKind.LOST)
        return len(rows)

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
        capacity = self.engine.capabilities.max_parallel_jobs
        while True:
            changed = self._release_ready()
            changed |= self._submit(capacity - len(self._in_flight))
            changed |= self._poll()
            counts = self._counts()
            done = counts.get(JobState.SUCCEEDED.value, 0)
            self.hooks.progress(done, len(self.nodes))
            if not self._in_flight and not self._can_progress(counts):
                return SchedulerResult(counts)
            if not changed:
                time.sleep(self.poll_s)

    def _counts(self) -> dict[str, int]:
        with self.sessions() as session:
            states = session.scalars(select(JobRow.state).where(JobRow.run_id == self.run_id))
            out: dict[str, int] = {}
            for state in states:
                out[state] = out.get(state, 0) + 1
            return out

    def _can_progress(self, counts: dict[str, int]) -> bool:
        if counts.get(JobState.READY.value) or counts.get(JobState.SUBMITTED.value):
            return True
        return bool(counts.get(JobState.PENDING.value)) and self._any_releasable()

    def _states(self, session: Session) -> dict[str, JobRow]:
        rows = session.scalars(select(JobRow).where(JobRow.run_id == self.run_id))
        return {row.name: row for row in rows}

    def _any_releasable(self) -> bool:
        """Whether some pending job can still run: none of its ancestors is held or
        cancelled (a failure blocks everything downstream of it, not just its children)."""
        with self.sessions() as session:
            states = {name: row.state for name, row in self._states(session).items()}
        blocked = blocked_jobs(self.nodes, states)
        return any(
            state == JobState.PENDING.value and name not in blocked
            for name, state in states.items()
        )

    def _release_ready(self) -> bool:
        with self.sessions() as session:
            rows = self._states(session)
            ready = [
                row.name
                for row in rows.values()
                if row.state == JobState.PENDING.value
                and all(
                    rows[d].state == JobState.SUCCEEDED.value
                    for d in self.nodes[row.name].depends_on
                )
            ]
        if not ready:
            return False
        self.hooks.stage_inputs([self.nodes[name] for name in ready])
        with self.sessions.begin() as session:
            for row in session.scalars(
                select(JobRow).where(JobRow.run_id == self.run_id, JobRow.name.in_(ready))
            ):
                row.state = transition(JobState(row.state), JobState.READY, job=row.name)
        return True

    def _submit(self, room: int) -> bool:
        if room <= 0:
            return False
        with self.sessions() as session:
            rows = session.scalars(
                select(JobRow)
                .where(JobRow.run_id == self.run_id, JobRow.state == JobState.READY.value)
                .order_by(JobRow.id)
                .limit(room)
            ).all()
            for row in rows:
                session.expunge(row)
        if not rows:
            return False
        specs = []
        for row in rows:
            row.attempts += 1
            specs.append(self.hooks.make_spec(self.nodes[row.name], row))
        engine_ids = self.engine.submit(specs)
        with self.sessions.begin() as session:
            for row, spec, engine_id in zip(rows, specs, engine_ids, strict=True):
                live = session.get(JobRow, row.id)
                assert live is not None
                live.state = transition(JobState(live.state), JobState.SUBMITTED, job=live.name)
                live.attempts = row.attempts
                live.engine_id = engine_id
                session.add(
                    JobAttemptRow(
                        job_id=row.id,
                        attempt=row.attempts,
                        engine_id=engine_id,
                        state=JobState.SUBMITTED.value,
                        memory_mb=row.memory_mb,
                        report_path=spec.report_path,
                    )
                )
                self._in_flight[engine_id] = _InFlight(row.id, engine_id, spec)
        return True

    def _poll(self) -> bool:
        if not self._in_flight:
            return False
        ids = list(self._in_flight)
        statuses = self.engine.poll(ids)
        changed = False
        for status in statuses:
            flight = self._in_flight[status.engine_id]
            if status.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                del self._in_flight[status.engine_id]
                self._finish(flight, status)
                changed = True
            elif status.state == JobState.RUNNING:
                changed |= self._mark_running(flight.job_id)
        return changed

    def _mark_running(self, job_id: int) -> bool:
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            if row is None or row.state != JobState.SUBMITTED.value:
                return False
            row.state = transition(JobState(row.state), JobState.RUNNING, job=row.name)
            return True

    def _finish(self, flight: _InFlight, status: JobStatus) -> None:
        report = _read_report(flight.spec.report_path)
        state = status.state
        failure = status.failure
        if state == JobState.SUCCEEDED and report is not None and report.status != "succeeded":
            state, failure = JobState.FAILED, FailureKind.ERROR
        error = (report.error if report else None) or status.message
        exit_code = report.exit_code if report else status.exit_code
        with self.sessions.begin() as session:
            row = session.get(JobRow, flight.job_id)
            assert row is not None
            row.state = transition(JobState(row.state), state, job=row.name)
            row.exit_code = exit_code
            row.failure = failure.value if state == JobState.FAILED else None
            row.error = error if state == JobState.FAILED else None
            attempt = session.scalars(
                select(JobAttemptRow).where(
                    JobAttemptRow.job_id == row.id, JobAttemptRow.attempt == row.attempts
                )
            ).one()
            attempt.state = state.value
            attempt.failure = failure.value
            attempt.exit_code = exit_code
            attempt.error = error
            attempt.finished_at = utcnow()
            attempt.max_rss_mb = (report.stats.max_rss_mb if report else None) or status.max_rss_mb
            attempt.cpu_s = report.stats.cpu_s if report else None
            if report is not None:
                _record_quanta(session, self.run_id, row, report)
        if state == JobState.FAILED:
            self._after_failure(flight.job_id, failure)

    def _after_failure(
        self, job_id: int, failure: FailureKind, *, count_attempt: bool = True
    ) -> None:
        """Retry (with more memory after OOM) or hold for the operator."""
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            if failure == FailureKind.CANCELLED:
                return
            if not count_attempt:
                row.attempts = max(0, row.attempts - 1)
            if row.attempts >= (row.attempt_limit or self.policy.max_attempts):
                row.state = transition(JobState(row.state), JobState.HELD, job=row.name)
                return
            if failure == FailureKind.OUT_OF_MEMORY:
                row.memory_mb = min(
                    self.policy.memory_cap_mb, int(row.memory_mb * self.policy.memory_factor)
                )
            name = row.name
        self.hooks.before_retry(self.nodes[name])
        with self.sessions.begin() as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            row.state = transition(JobState(row.state), JobState.READY, job=row.name)


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


def _read_report(path: str) -> JobReport | None:
    try:
        with open(path) as stream:
            return JobReport.model_validate_json(stream.read())
    except (OSError, ValueError):
        return None


def _record_quanta(session: Session, run_id: int, job: JobRow, report: JobReport) -> None:
    for q in report.quanta:
        session.add(
            QuantumRunRow(
                run_id=run_id,
                job_id=job.id,
                attempt=report.attempt,
                quantum_id=q.quantum_id,
                task_label=q.task_label,
                data_id=q.data_id,
                status=q.status,
                start=q.stats.start if q.stats else None,
                end=q.stats.end if q.stats else None,
                cpu_s=q.stats.cpu_s if q.stats else None,
                max_rss_mb=q.stats.max_rss_mb if q.stats else None,
                error=q.error,
            )
        )


__all__ += ["TERMINAL", "SchedulerResult"]
