"""``skybatch report``: what a run did, per task, with the first error of each failure."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.engines.base import JobState
from skybatch.errors import InputError
from skybatch.job.causes import advice_for

from .models import JobRow, QuantumRunRow, RunRow

__all__ = ["list_runs", "run_report"]


def list_runs(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as session:
        rows = session.scalars(select(RunRow).order_by(RunRow.id)).all()
        return [
            {
                "run": r.name,
                "state": r.state,
                "pipeline": r.pipeline,
                "created": r.created_at.isoformat(),
                "finished": r.finished_at.isoformat() if r.finished_at else None,
            }
            for r in rows
        ]


def run_report(sessions: sessionmaker[Session], run: str) -> dict[str, Any]:
    """Per-task quanta counts (expected, succeeded, failed, running, blocked) and the
    failed jobs with their exit code and first error line. Blocked quanta belong to jobs
    that never ran because a job upstream of them is held (only once the run stopped)."""
    with sessions() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        if row is None:
            known = [r["run"] for r in list_runs(sessions)][-5:]
            raise InputError(
                f"no run named {run!r}",
                where=run,
                hint=f"recent runs: {', '.join(known) or 'none'}",
            )
        expected: dict[str, int] = dict(row.summary.get("quanta_per_task", {}))
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
        jobs = session.scalars(select(JobRow).where(JobRow.run_id == row.id)).all()
        stopped = row.state != "running"

        def zero() -> dict[str, int]:
            return {"expected": 0, "succeeded": 0, "failed": 0, "running": 0, "blocked": 0}

        tasks: dict[str, dict[str, int]] = {}
        for label, n in expected.items():
            tasks[label] = zero()
            tasks[label]["expected"] = n
        for label, status, count in quanta:
            if status in ("succeeded", "failed"):
                tasks.setdefault(label, zero())[status] += count
        for job in jobs:
            if job.state in (JobState.SUBMITTED.value, JobState.RUNNING.value):
                tasks.setdefault(job.label, zero())["running"] += job.n_quanta
            elif stopped and job.state == JobState.PENDING.value:
                tasks.setdefault(job.label, zero())["blocked"] += job.n_quanta
        job_states: dict[str, int] = {}
        for job in jobs:
            job_states[job.state] = job_states.get(job.state, 0) + 1
        failures = [
            {
                "job": job.name,
                "state": job.state,
                "attempts": job.attempts,
                "exit_code": job.exit_code,
                "failure": job.failure,
                "error": (job.error or "").splitlines()[0] if job.error else None,
                "advice": advice_for(job.failure),
                "memory_mb": job.memory_mb,
            }
            for job in jobs
            if job.state in (JobState.HELD.value, JobState.FAILED.value) or job.error
        ]
        return {
            "run": row.name,
            "state": row.state,
            "pipeline": row.pipeline,
            "repo": row.repo,
            "tasks": tasks,
            "jobs": job_states,
            "failures": failures,
            "summary": row.summary,
            "message": row.message,
        }
