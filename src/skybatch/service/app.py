"""The service's app factory (seed step 2; issue 14, item 2): :func:`create_app`
builds a FastAPI app over the state database of ``settings``, with its routers and
the one mapping of skybatch errors to HTTP codes (not found 404, state conflict 409,
bad input or configuration 400, database 503). OpenAPI at ``/openapi.json``,
documented at ``/docs``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from skybatch import __version__
from skybatch.campaign.states import StateConflict
from skybatch.db.state import open_state_db
from skybatch.errors import (
    ConfigError,
    DatabaseError,
    InputError,
    NotFoundError,
    SkybatchError,
)
from skybatch.settings import Settings

if TYPE_CHECKING:
    from .manager import ManagerThread

from .routers import (
    backbone,
    campaigns,
    events,
    maintenance,
    ops,
    overview,
    runs,
    submissions,
    tokens,
    ui,
)

__all__ = ["create_app", "http_status_for"]


def http_status_for(exc: SkybatchError) -> int:
    """The HTTP status of a skybatch error (the service's one mapping)."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, StateConflict):
        return 409
    if isinstance(exc, InputError | ConfigError):
        return 400
    if isinstance(exc, DatabaseError):
        return 503
    return 500


async def _skybatch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SkybatchError)
    body = {"message": exc.message, "where": exc.where, "hint": exc.hint}
    return JSONResponse({"detail": body}, status_code=http_status_for(exc))


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session] | None = None,
    *,
    manager: ManagerThread | None = None,
) -> FastAPI:
    """The service over the state database of ``settings`` (created and migrated on
    first use, as every command does), or over ``sessions`` if given. With ``manager``
    the campaign manager runs in this process while the app is served
    (``--with-manager``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manager is not None:
            manager.start()
        try:
            yield
        finally:
            if manager is not None:
                manager.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="skybatch",
        version=__version__,
        description="Campaigns, steps, groups, runs and jobs of a skybatch state database; "
        "operator actions. Every /api and /metrics request needs a bearer token "
        "(`skybatch token create`): viewer reads, operator also acts, admin also manages "
        "tokens.",
    )
    app.state.settings = settings
    app.state.sessions = sessions if sessions is not None else open_state_db(settings)
    app.add_exception_handler(SkybatchError, _skybatch_error)
    for module in (
        ops,
        submissions,
        campaigns,
        overview,
        runs,
        backbone,
        maintenance,
        events,
        tokens,
        ui,
    ):
        app.include_router(module.router)
    return app
