"""``/api/events``: a server-sent-events stream of campaign, step and group state
changes (viewer; seed step 3 as a dashboard follows it).

Each event is ``id: N``, ``event: state``, ``data: {StateChange JSON}``. A client
resumes with the ``Last-Event-ID`` header (browsers send it on reconnect) or
``?after=N``; without either it gets only changes from now on. The state database is
polled every ``poll_s`` seconds; ``wait_s`` ends the stream after that long (clients
reconnect), and a comment line every 15 s keeps proxies from closing it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from skybatch.read.events import StateChange, events_after, last_event_id

from ..deps import Viewer, sessions_of

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["events"])

_KEEPALIVE_S = 15.0


def _changes(
    sessions: sessionmaker[Session], after: int, campaign_id: int | None
) -> list[StateChange]:
    with sessions() as session:
        return events_after(session, after, campaign_id=campaign_id)


async def _stream(
    sessions: sessionmaker[Session],
    after: int,
    campaign_id: int | None,
    poll_s: float,
    wait_s: float | None,
) -> AsyncIterator[str]:
    """The stream's lines. Asynchronous so that a client's leaving cancels it at once
    (in its sleep), instead of holding a worker thread until its next line."""
    start = last_beat = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        changes = await anyio.to_thread.run_sync(_changes, sessions, after, campaign_id)
        for change in changes:
            after = change.id
            yield f"id: {change.id}\nevent: state\ndata: {change.model_dump_json()}\n\n"
        now = time.monotonic()
        if wait_s is not None and now - start >= wait_s:
            return
        if now - last_beat >= _KEEPALIVE_S:
            last_beat = now
            yield ": keep-alive\n\n"
        if len(changes) < 500:
            await anyio.sleep(poll_s)


@router.get("/events", response_class=StreamingResponse)
def events(
    request: Request,
    _: Viewer,
    campaign: Annotated[int | None, Query(description="only this campaign's changes")] = None,
    after: Annotated[int | None, Query(ge=0, description="changes after this event id")] = None,
    poll_s: Annotated[float, Query(gt=0, le=60)] = 1.0,
    wait_s: Annotated[float | None, Query(gt=0, description="end the stream after")] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """State changes as server-sent events (``text/event-stream``)."""
    sessions = sessions_of(request)
    if after is None and last_event_id_header and last_event_id_header.isdigit():
        after = int(last_event_id_header)
    if after is None:
        with sessions() as session:
            after = last_event_id(session)
    return StreamingResponse(
        _stream(sessions, after, campaign, poll_s, wait_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
