"""Counts for the service's ``/metrics`` (seed steps 3 and 10-11 as a monitor scrapes
them): jobs per state, groups per state (running ones are in flight), campaigns per
state. One ``GROUP BY`` query per table, whatever their size."""

from __future__ import annotations

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from skybatch.campaign.models import CampaignGroupRow, CampaignRow
from skybatch.run.models import JobRow

from .models import ReadModel

__all__ = ["StateTotals", "state_totals"]


class StateTotals(ReadModel):
    """Rows per state of the state database's campaigns, groups and jobs."""

    campaigns: dict[str, int] = Field(description="campaigns per state")
    groups: dict[str, int] = Field(description="campaign groups per state")
    jobs: dict[str, int] = Field(description="jobs (of every run) per state")


def state_totals(session: Session) -> StateTotals:
    def counts(column: object) -> dict[str, int]:
        rows = session.execute(select(column, func.count()).group_by(column))  # type: ignore[call-overload]
        return {str(state): int(n) for state, n in rows}

    return StateTotals(
        campaigns=counts(CampaignRow.state),
        groups=counts(CampaignGroupRow.state),
        jobs=counts(JobRow.state),
    )
