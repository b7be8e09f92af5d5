"""``/api/overview``: the campaigns as the dashboard's overview shows them, with their
quanta done, failures, rate and ETA (viewer; issue 14's campaign cards)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from skybatch.read.dashboard import CampaignCard, campaign_cards

from ..deps import SessionDep, Viewer

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["campaigns"])


@router.get("/overview", response_model=list[CampaignCard])
def overview(
    session: SessionDep,
    _: Viewer,
    states: Annotated[list[str] | None, Query(alias="state")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CampaignCard]:
    """The campaigns (as GET /api/campaigns lists them) with the quanta of their jobs
    done of those known so far, held and failed jobs, quanta per second over the last
    10 minutes and, while running, when the known quanta would be done at that rate."""
    return campaign_cards(session, states=states, offset=offset, limit=limit)
