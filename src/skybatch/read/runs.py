"""Run and job reads (seed steps 9-12): the run list, a run's report, its jobs.

Every function takes a session and returns read models (:mod:`skybatch.read.models`).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from skybatch.engines.base import JobState
from skybatch.errors import NotFoundError
from skybatch.run.models import JobRow, QuantumRunRow, RunRow

from .failures import failed_job, first_line
from .models import Job, RunReport, RunSummary, RunTaskCounts

__all__ = ["get_run", "list_jobs", "list_runs", "run_report"]


def list_runs(session: Session) -> list[RunSummary]:
    """Every run, oldest first."""
    return [
        RunSummary(
            run=r.name,
            state=r.state,
            pipeline=r.pipeline,
            created=r.created_at,
            finished=r.finished_at,
        )
        for r in session.scalars(select(RunRow).order_by(RunRow.id))
    ]


def get_run(session: Session, run: str) -> RunRow:
    """The run named ``run``.

    Raises:
        NotFoundError: no run has this name (the newest run names are the hint).
    """
    row = session.scalar(select(RunRow).where(RunRow.name == run))
    if row is None:
        recent = session.scalars(select(RunRow.name).order_by(RunRow.id.desc()).limit(5)).all()
        raise NotFoundError(
            f"no run named {run!r}",
            where=run,
            hint=f"recent runs: {', '.join(reversed(recent)) or 'none'}",
        )
    return row


def run_report(session: Session, run: str) -> RunReport:
    """Per-task quanta counts (expected, succeeded, failed, running, blocked) and the
    failed jobs with their exit code and first error line. Blocked quanta belong to jobs
    that never ran because a job upstream of them is held (only once the run stopped).

    Raises:
        NotFoundError: no run has this name.
    """
    row = get_run(session, run)
    # The newest attempt of each quantum decides its status.
    latest = (
        select(QuantumRunRow.quantum_id, func.max(QuantumRunRow.attempt).label("attempt"))
        .where(QuantumRunRow.run_id == row.id)
        .group_by(QuantumRunRow.quantum_id)
        .subquery()
    )
    quanta = session.execute(
        select(QuantumRunRow.task_label, QuantumRunRow.status, func.count())
        .join(
            latest,
            (QuantumRunRow.quantum_id == latest.c.quantum_id)
            & (QuantumRunRow.attempt == latest.c.attempt),
        )
        .where(QuantumRunRow.run_id == row.id)
        .group_by(QuantumRunRow.task_label, QuantumRunRow.status)
    ).all()
    jobs = session.scalars(select(JobRow).where(JobRow.run_id == row.id).order_by(JobRow.id)).all()
    stopped = row.state != "running"
    tasks: dict[str, dict[str, int]] = {}

    def task(label: str) -> dict[str, int]:
        return tasks.setdefault(label, dict.fromkeys(RunTaskCounts.model_fields, 0))

    for label, n in dict(row.summary.get("quanta_per_task", {})).items():
        task(label)["expected"] = n
    for label, status, count in quanta:
        if status in ("succeeded", "failed"):
            task(label)[status] += count
    job_states: dict[str, int] = {}
    for job in jobs:
        job_states[job.state] = job_states.get(job.state, 0) + 1
        if job.state in (JobState.SUBMITTED.value, JobState.RUNNING.value):
            task(job.label)["running"] += job.n_quanta
        elif stopped and job.state == JobState.PENDING.value:
            task(job.label)["blocked"] += job.n_quanta
    failed = (JobState.HELD.value, JobState.FAILED.value)
    return RunReport(
        run=row.name,
        state=row.state,
        pipeline=row.pipeline,
        repo=row.repo,
        tasks={label: RunTaskCounts(**counts) for label, counts in tasks.items()},
        jobs=job_states,
        failures=[failed_job(j, row.name) for j in jobs if j.state in failed or j.error],
        summary=row.summary,
        warnings=[str(w) for w in row.summary.get("warnings", [])],
        message=row.message,
    )


def list_jobs(
    session: Session,
    run: str,
    *,
    states: list[str] | None = None,
    label: str | None = None,
    failure: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[Job]:
    """The jobs of ``run`` in job order, filtered by state, task label and failure kind,
    one page (``offset``, ``limit``) at a time.

    Raises:
        NotFoundError: no run has this name.
    """
    row = get_run(session, run)
    query = select(JobRow).where(JobRow.run_id == row.id)
    if states:
        query = query.where(JobRow.state.in_(states))
    if label is not None:
        query = query.where(JobRow.label == label)
    if failure is not None:
        query = query.where(JobRow.failure == failure)
    query = query.order_by(JobRow.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [
        Job(
            run=row.name,
            name=j.name,
            label=j.label,
            state=j.state,
            attempts=j.attempts,
            attempt_limit=j.attempt_limit,
            n_quanta=j.n_quanta,
            memory_mb=j.memory_mb,
            cores=j.cores,
            walltime_s=j.walltime_s,
            engine_id=j.engine_id,
            exit_code=j.exit_code,
            failure=j.failure,
            error=first_line(j.error),
            updated=j.updated_at,
        )
        for j in session.scalars(query)
    ]
