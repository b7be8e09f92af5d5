"""``/api/runs``: the run list, a run's report and its jobs filtered by state, task
and failure kind, paged (viewer; seed steps 9-12). Run names hold slashes
(``CAMPAIGN/ID-UUID/STEP/GROUP``), so the name is the rest of the path."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from skybatch.read import runs as reads
from skybatch.read.jobs import JobDetail, job_detail
from skybatch.read.models import Job, RunReport, RunSummary

from ..deps import SessionDep, Viewer

__all__ = ["router"]

router = APIRouter(prefix="/api/runs", tags=["runs"])


@router.get("", response_model=list[RunSummary])
def list_runs(session: SessionDep, _: Viewer) -> list[RunSummary]:
    """Every run, oldest first."""
    return reads.list_runs(session)


@router.get("/{run:path}/jobs", response_model=list[Job])
def get_jobs(
    run: str,
    session: SessionDep,
    _: Viewer,
    states: Annotated[list[str] | None, Query(alias="state")] = None,
    task: str | None = Query(None, description="task label"),
    failure: str | None = Query(None, description="failure kind (oom, timeout, ...)"),
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Job]:
    """The run's jobs in job order, filtered by state, task label and failure kind."""
    return reads.list_jobs(
        session, run, states=states, label=task, failure=failure, offset=offset, limit=limit
    )


@router.get("/{run:path}/jobs/{job}", response_model=JobDetail)
def get_job(
    run: str,
    job: str,
    session: SessionDep,
    _: Viewer,
    tail: Annotated[int, Query(ge=0, le=5000, description="log lines")] = 50,
) -> JobDetail:
    """A job with every attempt (state, exit code, failure, memory, CPU) and the last
    lines of its newest attempt's log (when the log is readable from the service)."""
    return job_detail(session, run, job, tail_lines=tail)


@router.get("/{run:path}", response_model=RunReport)
def get_run(run: str, session: SessionDep, _: Viewer) -> RunReport:
    """Per task quanta, jobs per state, the failed jobs (`skybatch report RUN`)."""
    return reads.run_report(session, run)
