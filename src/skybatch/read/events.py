"""State changes as a feed (seed step 3 as a dashboard follows it): the campaign
events after a given event id, of every campaign or of one, oldest first. The
service's server-sent-events stream reads it; a client resumes after the last id it
saw."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from skybatch.campaign.models import CampaignEventRow

from .models import ReadModel

__all__ = ["StateChange", "events_after", "last_event_id"]


class StateChange(ReadModel):
    """One state change of a campaign, step or group, with its place in the feed."""

    id: int = Field(description="the event's id: resume after it")
    campaign_id: int
    time: datetime
    kind: str = Field(description="campaign, step or group")
    what: str = Field(description="the campaign's name, STEP or STEP/GROUP")
    from_state: str | None
    to_state: str
    actor: str
    action: str | None
    reason: str | None


def events_after(
    session: Session, after: int = 0, *, campaign_id: int | None = None, limit: int = 500
) -> list[StateChange]:
    """Up to ``limit`` events with an id above ``after`` (of ``campaign_id``), oldest first."""
    e = CampaignEventRow
    query = select(e).where(e.id > after).order_by(e.id).limit(limit)
    if campaign_id is not None:
        query = query.where(e.campaign_id == campaign_id)
    return [
        StateChange(
            id=row.id,
            campaign_id=row.campaign_id,
            time=row.created_at,
            kind=row.kind,
            what=row.what,
            from_state=row.from_state or None,
            to_state=row.to_state,
            actor=row.actor,
            action=row.action,
            reason=row.reason,
        )
        for row in session.scalars(query)
    ]


def last_event_id(session: Session) -> int:
    """The newest event's id (0 when there is none): where a new follower starts."""
    from sqlalchemy import func

    return int(session.scalar(select(func.max(CampaignEventRow.id))) or 0)
