"""``/api/backbone/endpoints/{name}/...``: backbone maintenance over HTTP (admin).

The CLI's ``skybatch backbone verify``, ``evict`` and ``recover`` for an operator of the
service: re-checksum an endpoint's replicas (and repair bad ones), drop replicas from a
site cache, settle what a crashed transfer left. They change what is stored, hence the
admin role. Each call runs to its end before it answers (select a run to bound a
verify or an eviction) and is recorded in the catalog as a ``maintenance`` activity
naming the token, so ``backbone provenance`` and the catalog say who did what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from skybatch.errors import InputError, NotFoundError
from skybatch.settings import Settings

from ..deps import Admin

__all__ = ["router"]

router = APIRouter(prefix="/api/backbone/endpoints", tags=["backbone maintenance"])


class VerifyRequest(BaseModel):
    run: str | None = Field(default=None, description="only this run's files (default: all)")
    repair: bool = Field(default=True, description="rewrite bad replicas from a good copy")


class EvictRequest(BaseModel):
    run: str | None = Field(default=None, description="this run's replicas")
    all: bool = Field(default=False, description="every online replica on the endpoint")
    force: bool = Field(default=False, description="pinned replicas too")


class VerifyResult(BaseModel):
    endpoint: str
    checked: int
    bytes: int
    corrupt: list[str]
    missing: list[str]
    repaired: list[str]
    unrepaired: dict[str, str]


class EvictResult(BaseModel):
    endpoint: str
    evicted: int
    bytes: int
    skipped_pinned: int
    skipped_last_copy: int


class RecoverResult(BaseModel):
    endpoint: str
    completed: int
    rolled_back: int
    temp_files_removed: int


def _run_files(backbone: Any, run: str) -> Any:
    """The catalog files of ``run``; 404 when it has none (a misspelt run must not
    verify or evict nothing and answer as if all were well, as the CLI refuses it)."""
    files = backbone.catalog.files(run=run)
    if not files:
        raise NotFoundError(
            f"no catalog files of run {run!r}",
            where="run",
            hint="GET /api/backbone/usage?by=run lists the runs with files",
        )
    return files


def _maintain(
    request: Request, name: str, token: Any, action: str, work: Callable[[Any], Any]
) -> Any:
    """Run ``work(backbone)`` on endpoint ``name`` (404 if there is none) and record it
    as a ``maintenance`` activity: who did what to which endpoint, with its outcome."""
    from skybatch.backbone.service import Backbone

    settings: Settings = request.app.state.settings
    backbone = Backbone.from_settings(settings)
    try:
        if name not in {row.name for row in backbone.catalog.endpoints()}:
            raise NotFoundError(
                f"no backbone endpoint named {name!r}",
                where="endpoint",
                hint="GET /api/backbone/endpoints lists them",
            )
        report = work(backbone)
        info = {"token": token.name, "endpoint": name, "result": asdict(report)}
        backbone.catalog.add_activity("maintenance", f"{action} {name}", info, finished=True)
        return asdict(report)
    finally:
        backbone.close()


@router.post("/{name}/verify", response_model=VerifyResult)
def verify(name: str, body: VerifyRequest, request: Request, token: Admin) -> VerifyResult:
    """Re-checksum the online replicas on the endpoint (a run's, or all); mark corrupt
    and missing ones and, with ``repair``, rewrite them from another good copy."""
    from skybatch.backbone.maintenance import verify as verify_replicas

    def work(backbone: Any) -> Any:
        files = None if body.run is None else _run_files(backbone, body.run)
        return verify_replicas(backbone, name, files, repair=body.repair)

    return VerifyResult(**_maintain(request, name, token, "verify", work))


@router.post("/{name}/evict", response_model=EvictResult)
def evict(name: str, body: EvictRequest, request: Request, token: Admin) -> EvictResult:
    """Drop replicas from a site cache (the last online copy of a file never; pinned
    ones only with ``force``)."""
    from skybatch.backbone.maintenance import evict as evict_replicas
    from skybatch.backbone.models import ReplicaState

    if body.all == (body.run is not None):
        raise InputError(
            "give either run or all",
            where="run" if body.all else "all",
            hint='{"run": "RUN"} evicts a run\'s replicas, {"all": true} every one',
        )

    def work(backbone: Any) -> Any:
        if body.run is not None:
            files = _run_files(backbone, body.run)
        else:  # all (checked above: exactly one of the two)
            files = [p.file for p in backbone.catalog.replicas_on(name, [ReplicaState.ONLINE])]
        return evict_replicas(backbone, name, files, force=body.force)

    return EvictResult(**_maintain(request, name, token, "evict", work))


@router.post("/{name}/recover", response_model=RecoverResult)
def recover(name: str, request: Request, token: Admin) -> RecoverResult:
    """Settle what a crashed transfer left on the endpoint: staging replicas whose file
    verifies become online, the others are rolled back, partial copies removed."""
    from skybatch.backbone.maintenance import recover as recover_endpoint

    def work(backbone: Any) -> Any:
        return recover_endpoint(backbone, name)

    return RecoverResult(**_maintain(request, name, token, "recover", work))
