"""Counts for the service's ``/metrics`` (seed steps 3 and 10-11 as a monitor scrapes
them): jobs per state, groups per state (running ones are in flight), campaigns per
state, job attempts and state changes ever made (counters), and the job transitions
of the last minute. One aggregate query each, whatever the tables' size."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from skybatch.campaign.models import CampaignEventRow, CampaignGroupRow, CampaignRow
from skybatch.db.models import utcnow
from skybatch.run.models import JobAttemptRow, JobRow

from .models import ReadModel

__all__ = ["StateTotals", "state_totals"]


class StateTotals(ReadModel):
    """Rows per state of the state database's campaigns, groups and jobs."""

    campaigns: dict[str, int] = Field(description="campaigns per state")
    groups: dict[str, int] = Field(description="campaign groups per state")
    jobs: dict[str, int] = Field(description="jobs (of every run) per state")
    attempts: dict[str, int] = Field(description="job attempts ever made, per end state")
    events: int = Field(description="campaign, step and group state changes ever recorded")
    recent_transitions: int = Field(
        description="job attempts submitted or ended in the last `window_s` seconds"
    )
    window_s: float


def state_totals(session: Session, window_s: float = 60.0) -> StateTotals:
    """The counts now; ``recent_transitions`` over the last ``window_s`` seconds."""
    since = utcnow() - timedelta(seconds=window_s)
    a = JobAttemptRow

    def counts(column: object) -> dict[str, int]:
        rows = session.execute(select(column, func.count()).group_by(column))  # type: ignore[call-overload]
        return {str(state): int(n) for state, n in rows}

    return StateTotals(
        campaigns=counts(CampaignRow.state),
        groups=counts(CampaignGroupRow.state),
        jobs=counts(JobRow.state),
        attempts=counts(a.state),
        events=int(session.scalar(select(func.count()).select_from(CampaignEventRow)) or 0),
        recent_transitions=int(
            (session.scalar(select(func.count()).where(a.submitted_at >= since)) or 0)
            + (session.scalar(select(func.count()).where(a.finished_at >= since)) or 0)
        ),
        window_s=window_s,
    )
