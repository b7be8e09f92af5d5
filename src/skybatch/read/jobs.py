"""A campaign's jobs across its groups' runs (seed steps 10-11 as operators filter
them): by state, task label, failure kind and step, one page at a time.

Takes a session and returns :class:`~skybatch.read.models.Job` read models, as the
rest of :mod:`skybatch.read`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from skybatch.campaign.actions import get_campaign
from skybatch.campaign.models import CampaignGroupRow, CampaignStepRow
from skybatch.run.models import JobRow, RunRow

from .failures import first_line
from .models import Job

__all__ = ["campaign_jobs"]


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

    Raises:
        NotFoundError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    g = CampaignGroupRow
    query = (
        select(JobRow, RunRow.name)
        .join(RunRow, RunRow.id == JobRow.run_id)
        .join(g, g.run_name == RunRow.name)
        .join(CampaignStepRow, CampaignStepRow.id == g.step_id)
        .where(g.campaign_id == campaign_id)
        .order_by(CampaignStepRow.position, g.position, JobRow.id)
        .offset(offset)
        .limit(limit)
    )
    if states:
        query = query.where(JobRow.state.in_(states))
    if label is not None:
        query = query.where(JobRow.label == label)
    if failure is not None:
        query = query.where(JobRow.failure == failure)
    if step is not None:
        query = query.where(CampaignStepRow.name == step)
    return [
        Job(
            run=run,
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
        for j, run in session.execute(query)
    ]
