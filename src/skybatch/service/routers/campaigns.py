"""``/api/campaigns``: the campaign list, a campaign's status, steps, groups, jobs,
failures by signature and history (viewer), and the operator actions pause, resume,
retry and cancel (operator; seed step 3 as operators steer it)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from skybatch.auth.tokens import actor_of
from skybatch.campaign import actions
from skybatch.campaign.models import CampaignRow
from skybatch.campaign.states import StateConflict
from skybatch.read import campaigns as reads
from skybatch.read.failures import failure_signatures
from skybatch.read.jobs import campaign_jobs
from skybatch.read.models import (
    CampaignEvent,
    CampaignReport,
    CampaignStatus,
    CampaignSummary,
    FailureSignature,
    Group,
    Job,
    StepStatus,
)

from ..deps import Operator, SessionDep, Viewer, sessions_of

__all__ = ["router"]

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])

Offset = Annotated[int, Query(ge=0, description="rows to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
States = Annotated[list[str] | None, Query(alias="state", description="repeat for several")]


@router.get("", response_model=list[CampaignSummary])
def list_campaigns(
    session: SessionDep, _: Viewer, states: States = None, offset: Offset = 0, limit: Limit = 100
) -> list[CampaignSummary]:
    """The campaigns (in the given states), oldest first, with their groups per state."""
    return reads.list_campaigns(session, states=states, offset=offset, limit=limit)


@router.get("/{campaign_id}", response_model=CampaignStatus)
def get_campaign(campaign_id: int, session: SessionDep, _: Viewer) -> CampaignStatus:
    """The campaign and per step its groups and jobs per state (`campaign status`)."""
    return reads.campaign_status(session, campaign_id)


@router.get("/{campaign_id}/report", response_model=CampaignReport)
def get_report(campaign_id: int, session: SessionDep, _: Viewer) -> CampaignReport:
    """Quanta, CPU and memory per step, group and task; failed jobs (`campaign report`)."""
    return reads.campaign_report(session, campaign_id)


@router.get("/{campaign_id}/steps", response_model=list[StepStatus])
def get_steps(campaign_id: int, session: SessionDep, _: Viewer) -> list[StepStatus]:
    """The campaign's steps with their groups and jobs per state."""
    return reads.campaign_status(session, campaign_id).steps


@router.get("/{campaign_id}/groups", response_model=list[Group])
def get_groups(
    campaign_id: int,
    session: SessionDep,
    _: Viewer,
    step: str | None = None,
    states: States = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> list[Group]:
    """The campaign's groups in step and group order, filtered by step and state."""
    return reads.list_groups(
        session, campaign_id, step=step, states=states, offset=offset, limit=limit
    )


@router.get("/{campaign_id}/jobs", response_model=list[Job])
def get_jobs(
    campaign_id: int,
    session: SessionDep,
    _: Viewer,
    states: States = None,
    task: str | None = Query(None, description="task label"),
    failure: str | None = Query(None, description="failure kind (oom, timeout, ...)"),
    step: str | None = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> list[Job]:
    """The jobs of the campaign's groups, filtered by state, task, failure kind, step."""
    return campaign_jobs(
        session,
        campaign_id,
        states=states,
        label=task,
        failure=failure,
        step=step,
        offset=offset,
        limit=limit,
    )


@router.get("/{campaign_id}/failures", response_model=list[FailureSignature])
def get_failures(
    campaign_id: int, session: SessionDep, _: Viewer, step: str | None = None
) -> list[FailureSignature]:
    """Held and failed jobs grouped by failure kind and normalised first error line."""
    return failure_signatures(session, campaign_id, step=step)


@router.get("/{campaign_id}/history", response_model=list[CampaignEvent])
def get_history(
    campaign_id: int, session: SessionDep, _: Viewer, limit: int | None = Query(None, ge=1)
) -> list[CampaignEvent]:
    """Every state change of the campaign, its steps and groups: when, who, why."""
    return reads.campaign_history(session, campaign_id, limit)


class ActionBody(BaseModel):
    reason: str | None = Field(None, description="why (kept in the campaign's history)")


class RetryBody(ActionBody):
    step: str | None = Field(None, description="only this step's failed work")
    memory_mb: int | None = Field(None, gt=0, description="raise failed jobs' memory to this")
    retries: int | None = Field(None, gt=0, description="attempts each failed job gets now")


class ActionOutcome(BaseModel):
    """What an action changed."""

    campaign_id: int
    name: str
    state: str
    steps: list[str]
    groups: int
    jobs_raised: int
    actor: str
    message: str


def _outcome(result: actions.ActionResult, verb: str, actor: str) -> ActionOutcome:
    return ActionOutcome(
        campaign_id=result.campaign_id,
        name=result.name,
        state=result.state,
        steps=result.steps,
        groups=result.groups,
        jobs_raised=result.jobs_raised,
        actor=actor,
        message=result.describe(verb),
    )


def _recorded(
    request: Request, action: str, campaign_id: int, actor: str, **arguments: Any
) -> AbstractContextManager[Any]:
    """The action in the operations log, as the CLI's ``campaign ACTION`` records it,
    with the token's actor among its arguments."""
    from skybatch.db.operations import record_operation

    return record_operation(
        sessions_of(request),
        f"campaign {action}",
        {"id": campaign_id, "actor": actor, "via": "api", **arguments},
    )


def _conflict(request: Request, campaign_id: int, exc: StateConflict) -> HTTPException:
    """409 with the campaign's state as it is now (after the other action)."""
    with sessions_of(request)() as session:
        row = session.get(CampaignRow, campaign_id)
        state = None if row is None else row.state
    return HTTPException(
        status.HTTP_409_CONFLICT,
        {"message": exc.message, "hint": exc.hint, "campaign_id": campaign_id, "state": state},
    )


_RESPONSES: dict[int | str, dict[str, str]] = {
    409: {"description": "the campaign's state does not allow it (the current state given)"},
    404: {"description": "no campaign has this id"},
}


def _simple(action: str, verb: str) -> None:
    function = {
        "pause": actions.pause_campaign,
        "resume": actions.resume_campaign,
        "cancel": actions.cancel_campaign,
    }[action]

    @router.post(
        f"/{{campaign_id}}/{action}",
        response_model=ActionOutcome,
        responses=_RESPONSES,
        name=f"{action}_campaign",
        summary=f"{action.capitalize()} the campaign",
    )
    def act(
        campaign_id: int, request: Request, token: Operator, body: ActionBody | None = None
    ) -> ActionOutcome:
        actor = actor_of(token.name)
        reason = body.reason if body else None
        try:
            with _recorded(request, action, campaign_id, actor, reason=reason) as op:
                result = function(sessions_of(request), campaign_id, reason, actor=actor)
                op.message = result.describe(verb)
        except StateConflict as exc:
            raise _conflict(request, campaign_id, exc) from None
        return _outcome(result, verb, actor)


_simple("pause", "paused")
_simple("resume", "resumed")
_simple("cancel", "cancelled")


class SignatureRetryBody(BaseModel):
    failure: str | None = Field(description="the signature's failure kind, as listed")
    signature: str = Field(description="the signature, as GET .../failures lists it")
    memory_mb: int | None = Field(None, gt=0, description="raise failed jobs' memory to this")
    retries: int | None = Field(None, gt=0, description="attempts each failed job gets now")
    reason: str | None = None


@router.post("/{campaign_id}/failures/retry", response_model=ActionOutcome, responses=_RESPONSES)
def retry_signature(
    campaign_id: int, body: SignatureRetryBody, request: Request, token: Operator
) -> ActionOutcome:
    """Retry only the failed groups holding jobs of one failure signature (their held
    jobs get new attempts, with more memory if asked); the other failures stay."""
    from skybatch.read.jobs import signature_runs

    actor = actor_of(token.name)
    with sessions_of(request)() as session:
        runs = signature_runs(session, campaign_id, body.failure, body.signature)
    if not runs:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            {
                "message": f"campaign {campaign_id} has no held or failed job of "
                f"{body.failure or 'failed'}: {body.signature!r}",
                "hint": f"GET /api/campaigns/{campaign_id}/failures lists the signatures",
            },
        )
    try:
        with _recorded(request, "retry", campaign_id, actor, **body.model_dump()) as op:
            result = actions.retry_campaign(
                sessions_of(request),
                campaign_id,
                memory_mb=body.memory_mb,
                retries=body.retries,
                reason=body.reason or f"retry of {body.failure or 'failed'}: {body.signature}",
                actor=actor,
                runs=runs,
            )
            op.message = result.describe("retried")
    except StateConflict as exc:
        raise _conflict(request, campaign_id, exc) from None
    return _outcome(result, "retried", actor)


@router.post("/{campaign_id}/retry", response_model=ActionOutcome, responses=_RESPONSES)
def retry_campaign(
    campaign_id: int, request: Request, token: Operator, body: RetryBody | None = None
) -> ActionOutcome:
    """Run the failed work again (failed groups resume; memory and attempts may be raised)."""
    actor = actor_of(token.name)
    body = body or RetryBody()
    try:
        with _recorded(request, "retry", campaign_id, actor, **body.model_dump()) as op:
            result = actions.retry_campaign(
                sessions_of(request),
                campaign_id,
                step=body.step,
                memory_mb=body.memory_mb,
                retries=body.retries,
                reason=body.reason,
                actor=actor,
            )
            op.message = result.describe("retried")
    except StateConflict as exc:
        raise _conflict(request, campaign_id, exc) from None
    return _outcome(result, "retried", actor)
