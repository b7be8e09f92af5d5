"""A campaign's jobs across its groups' runs (seed steps 10-11 as operators filter
them): by state, task label, failure kind and step, one page at a time; and one job
with its attempts and the tail of its log.

Takes a session and returns :class:`~skybatch.read.models.Job` read models, as the
rest of :mod:`skybatch.read`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pydantic import Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from skybatch.campaign.actions import get_campaign
from skybatch.campaign.models import CampaignGroupRow, CampaignStepRow
from skybatch.run.models import JobRow, RunRow

from .failures import error_signature, first_line
from .models import Job, ReadModel

__all__ = ["JobAttempt", "JobDetail", "campaign_jobs", "job_detail", "signature_runs"]


def campaign_jobs(
    session: Session,
    campaign_id: int,
    *,
    states: Sequence[str] | None = None,
    label: str | None = None,
    failure: str | None = None,
    step: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[Job]:
    """The jobs of the campaign's groups' runs in step, group and job order.

    A page is found in two steps, so that a deep page costs no more than the first:
    the matching jobs of each run are counted in run order (an index look-up per run,
    no sort of the campaign's jobs), then only the runs the page spans are read.

    Raises:
        NotFoundError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    g = CampaignGroupRow
    matching: list[ColumnElement[bool]] = []
    if states:
        matching.append(JobRow.state.in_(states))
    if label is not None:
        matching.append(JobRow.label == label)
    if failure is not None:
        matching.append(JobRow.failure == failure)
    counted = (
        select(func.count())
        .select_from(JobRow)
        .where(JobRow.run_id == RunRow.id, *matching)
        .correlate(RunRow)
        .scalar_subquery()
    )
    runs = (
        select(RunRow.id, RunRow.name, counted)
        .join(g, g.run_name == RunRow.name)
        .join(CampaignStepRow, CampaignStepRow.id == g.step_id)
        .where(g.campaign_id == campaign_id)
        .order_by(CampaignStepRow.position, g.position)
    )
    if step is not None:
        runs = runs.where(CampaignStepRow.name == step)
    end = None if limit is None else offset + limit
    chosen: dict[int, tuple[int, str]] = {}  # run id -> (its place, its name)
    first = 0  # matching jobs before the first chosen run
    seen = 0
    for run_id, run_name, n in session.execute(runs):
        if n and seen + n > offset and (end is None or seen < end):
            if not chosen:
                first = seen
            chosen[run_id] = (len(chosen), run_name)
        seen += n
    if not chosen:
        return []
    rows = sorted(
        session.scalars(select(JobRow).where(JobRow.run_id.in_(chosen), *matching)),
        key=lambda j: (chosen[j.run_id][0], j.id),
    )
    page = rows[offset - first : None if end is None else end - first]
    return [
        Job(
            run=chosen[j.run_id][1],
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
        for j in page
    ]


class JobAttempt(ReadModel):
    """One attempt of a job: how it ended and what it used."""

    attempt: int
    state: str
    engine_id: str | None
    exit_code: int | None
    failure: str | None
    error: str | None = Field(description="first line of the error")
    memory_mb: int
    max_rss_mb: float | None
    cpu_s: float | None
    submitted: datetime
    finished: datetime | None
    report_path: str | None = Field(description="the attempt's report.json")


class JobDetail(ReadModel):
    """A job with every attempt and the tail of its newest attempt's log."""

    job: Job
    attempts: list[JobAttempt]
    error: str | None = Field(description="the job's whole error text")
    log_path: str | None = Field(description="the newest attempt's job.log")
    log_tail: list[str] = Field(description="its last lines (empty: no log readable here)")


def _tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` (reading at most its last 256 kB)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:] if lines else []


def job_detail(session: Session, run: str, job: str, *, tail_lines: int = 50) -> JobDetail:
    """The job ``job`` of ``run`` with its attempts and its newest log's tail.

    Raises:
        NotFoundError: no such run, or the run has no such job.
    """
    from skybatch.errors import NotFoundError
    from skybatch.run.models import JobAttemptRow

    from .runs import get_run, list_jobs

    row = get_run(session, run)
    job_row = session.scalar(select(JobRow).where(JobRow.run_id == row.id, JobRow.name == job))
    if job_row is None:
        raise NotFoundError(
            f"run {run!r} has no job {job!r}",
            where=job,
            hint=f"its jobs: GET /api/runs/{run}/jobs (or `skybatch report {run}`)",
        )
    attempts = list(
        session.scalars(
            select(JobAttemptRow)
            .where(JobAttemptRow.job_id == job_row.id)
            .order_by(JobAttemptRow.attempt)
        )
    )
    log_path = None
    if attempts and attempts[-1].report_path:
        log_path = str(Path(attempts[-1].report_path).with_name("job.log"))
    summary = next(j for j in list_jobs(session, run) if j.name == job)
    return JobDetail(
        job=summary,
        attempts=[
            JobAttempt(
                attempt=a.attempt,
                state=a.state,
                engine_id=a.engine_id,
                exit_code=a.exit_code,
                failure=a.failure,
                error=first_line(a.error),
                memory_mb=a.memory_mb,
                max_rss_mb=a.max_rss_mb,
                cpu_s=a.cpu_s,
                submitted=a.submitted_at,
                finished=a.finished_at,
                report_path=a.report_path,
            )
            for a in attempts
        ],
        error=job_row.error,
        log_path=log_path,
        log_tail=_tail(Path(log_path), tail_lines) if log_path else [],
    )


def signature_runs(
    session: Session, campaign_id: int, failure: str | None, signature: str
) -> list[str]:
    """The runs of the campaign's groups holding a held or failed job of this failure
    kind and error signature (what a retry of that signature resumes).

    Raises:
        NotFoundError: no campaign has this id.
    """
    from skybatch.engines.base import JobState

    get_campaign(session, campaign_id)
    query = (
        select(RunRow.name, JobRow.failure, JobRow.error)
        .join(JobRow, JobRow.run_id == RunRow.id)
        .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
        .where(
            CampaignGroupRow.campaign_id == campaign_id,
            JobRow.state.in_([JobState.HELD.value, JobState.FAILED.value]),
        )
    )
    if failure is None:
        query = query.where(JobRow.failure.is_(None))
    else:
        query = query.where(JobRow.failure == failure)
    found = {run for run, _, error in session.execute(query) if error_signature(error) == signature}
    return sorted(found)
