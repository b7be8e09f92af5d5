"""Operator actions on a campaign: pause, resume, retry, cancel.

Each action is a set of transitions of the state table
(:mod:`skybatch.campaign.states`), made in one transaction through
:func:`~skybatch.campaign.states.change_state`, so each is recorded in the campaign's
history with the operator as actor. The manager sees the new states at its next
check (between groups; a cancelled running group is stopped at its run's next
progress check).

- **pause**: the campaign stops starting groups; its ready groups are paused. Groups
  already running finish.
- **resume**: the campaign goes on; its paused groups are ready again.
- **retry** [``--step S``]: failed groups become ready, so the manager resumes their
  runs (held jobs get new attempts; succeeded jobs never run again; the memory a job
  escalated to is kept, and ``memory_mb`` raises it further); failed steps run again
  (a step that failed before it had groups is expanded again); a failed campaign
  runs again. ``memory_mb`` and ``retries`` also apply to groups of those steps that
  start later.
- **cancel**: the campaign, its unfinished steps and groups are cancelled; nothing
  more runs, a running group's run is stopped, and the campaign-end cleanup runs.

``actor`` names who acted in the history (the service passes ``token:NAME``). Two
operators acting at once: the second's transaction sees the first's state and raises
:class:`~skybatch.campaign.states.StateConflict`; nothing of it is written.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from skybatch.errors import InputError, NotFoundError

from .models import CampaignGroupRow, CampaignRow, CampaignStepRow
from .states import Action, Kind, State, StateConflict, change_state, sources

__all__ = [
    "ActionResult",
    "cancel_campaign",
    "get_campaign",
    "pause_campaign",
    "resume_campaign",
    "retry_campaign",
]


@dataclass
class ActionResult:
    """What an action changed."""

    campaign_id: int
    name: str
    state: str
    steps: list[str] = field(default_factory=list)
    groups: int = 0
    jobs_raised: int = 0

    def describe(self, verb: str) -> str:
        text = f"campaign {self.campaign_id} ({self.name}) {verb}: now {self.state}"
        if self.steps:
            text += f"; steps {', '.join(self.steps)}"
        if self.groups:
            text += f"; {self.groups} group(s)"
        if self.jobs_raised:
            text += f"; memory raised for {self.jobs_raised} job(s)"
        return text


def get_campaign(session: Session, campaign_id: int) -> CampaignRow:
    """The campaign ``campaign_id`` or an InputError naming the recent ones."""
    row = session.get(CampaignRow, campaign_id)
    if row is None:
        recent = session.scalars(select(CampaignRow.id).order_by(CampaignRow.id.desc()).limit(5))
        known = ", ".join(str(i) for i in recent) or "none"
        raise NotFoundError(
            f"no campaign with id {campaign_id}",
            where=str(campaign_id),
            hint=f"recent campaigns: {known}; list them with `skybatch campaign list`",
        )
    return row


def _groups(session: Session, campaign_id: int, states: set[State]) -> list[CampaignGroupRow]:
    return list(
        session.scalars(
            select(CampaignGroupRow).where(
                CampaignGroupRow.campaign_id == campaign_id,
                CampaignGroupRow.state.in_([s.value for s in states]),
            )
        )
    )


def _steps(session: Session, campaign_id: int) -> list[CampaignStepRow]:
    return list(
        session.scalars(
            select(CampaignStepRow)
            .where(CampaignStepRow.campaign_id == campaign_id)
            .order_by(CampaignStepRow.position)
        )
    )


def pause_campaign(
    sessions: sessionmaker[Session],
    campaign_id: int,
    reason: str | None = None,
    *,
    actor: str | None = None,
) -> ActionResult:
    with sessions.begin() as session:
        row = get_campaign(session, campaign_id)
        change_state(session, row, State.PAUSED, action=Action.PAUSE, reason=reason, actor=actor)
        groups = _groups(session, campaign_id, {State.READY})
        change_state(session, groups, State.PAUSED, action=Action.PAUSE, reason=reason, actor=actor)
        return ActionResult(row.id, row.name, row.state, groups=len(groups))


def resume_campaign(
    sessions: sessionmaker[Session],
    campaign_id: int,
    reason: str | None = None,
    *,
    actor: str | None = None,
) -> ActionResult:
    with sessions.begin() as session:
        row = get_campaign(session, campaign_id)
        change_state(session, row, State.RUNNING, action=Action.RESUME, reason=reason, actor=actor)
        groups = _groups(session, campaign_id, {State.PAUSED})
        change_state(session, groups, State.READY, action=Action.RESUME, reason=reason, actor=actor)
        return ActionResult(row.id, row.name, row.state, groups=len(groups))


def cancel_campaign(
    sessions: sessionmaker[Session],
    campaign_id: int,
    reason: str | None = None,
    *,
    actor: str | None = None,
) -> ActionResult:
    with sessions.begin() as session:
        row = get_campaign(session, campaign_id)
        change_state(
            session, row, State.CANCELLED, action=Action.CANCEL, reason=reason, actor=actor
        )
        cancellable = sources(Kind.STEP, State.CANCELLED, Action.CANCEL)
        steps = [s for s in _steps(session, campaign_id) if s.state in cancellable]
        change_state(
            session, steps, State.CANCELLED, action=Action.CANCEL, reason=reason, actor=actor
        )
        open_groups = set(sources(Kind.GROUP, State.CANCELLED, Action.CANCEL))
        groups = _groups(session, campaign_id, open_groups)
        change_state(
            session, groups, State.CANCELLED, action=Action.CANCEL, reason=reason, actor=actor
        )
        return ActionResult(row.id, row.name, row.state, [s.name for s in steps], len(groups))


def retry_campaign(
    sessions: sessionmaker[Session],
    campaign_id: int,
    *,
    step: str | None = None,
    memory_mb: int | None = None,
    retries: int | None = None,
    reason: str | None = None,
    actor: str | None = None,
    runs: Collection[str] | None = None,
) -> ActionResult:
    """Retry the failed work of a campaign (of one step with ``step``; of the failed
    groups whose run is in ``runs`` only, e.g. those of one failure signature, and
    their steps); see the module."""
    if memory_mb is not None and memory_mb <= 0:
        raise InputError(f"--memory-mb must be positive, got {memory_mb}", where="--memory-mb")
    if retries is not None and retries <= 0:
        raise InputError(f"--retries must be positive, got {retries}", where="--retries")
    with sessions.begin() as session:
        row = get_campaign(session, campaign_id)
        steps = _steps(session, campaign_id)
        if step is not None and step not in {s.name for s in steps}:
            raise InputError(
                f"campaign {campaign_id} has no step {step!r}",
                where="--step",
                hint="its steps: " + ", ".join(s.name for s in steps),
            )
        chosen = {s.id: s for s in steps if step is None or s.name == step}
        groups = [g for g in _groups(session, campaign_id, {State.FAILED}) if g.step_id in chosen]
        failed_steps = [s for s in chosen.values() if s.state == State.FAILED]
        if runs is not None:
            groups = [g for g in groups if g.run_name in runs]
            failed_steps = [s for s in failed_steps if s.id in {g.step_id for g in groups}]
        if not groups and not failed_steps:
            where = f"step {step}" if step else f"campaign {campaign_id}"
            raise StateConflict(  # an InputError: the CLI's exit code is unchanged
                f"nothing to retry: {where} has no failed step or group (campaign is {row.state})",
                where=where,
                hint="`skybatch campaign status ID` shows the states",
            )
        touched = {g.step_id for g in groups} | {s.id for s in failed_steps}
        for step_id in touched:
            _override(chosen[step_id], memory_mb, retries)
        raised = _adjust_runs(session, [g.run_name for g in groups], memory_mb, retries)
        text = reason or _retry_reason(memory_mb, retries)
        if row.state == State.FAILED:
            change_state(session, row, State.RUNNING, action=Action.RETRY, reason=text, actor=actor)
        with_groups = {g.step_id for g in groups}
        expanded = set(
            session.scalars(
                select(CampaignGroupRow.step_id).where(
                    CampaignGroupRow.step_id.in_([s.id for s in failed_steps])
                )
            )
        )
        again = [s for s in failed_steps if s.id in expanded or s.id in with_groups]
        fresh = [s for s in failed_steps if s not in again]
        change_state(session, again, State.RUNNING, action=Action.RETRY, reason=text, actor=actor)
        change_state(session, fresh, State.READY, action=Action.RETRY, reason=text, actor=actor)
        change_state(session, groups, State.READY, action=Action.RETRY, reason=text, actor=actor)
        names = sorted({chosen[i].name for i in touched})
        return ActionResult(row.id, row.name, row.state, names, len(groups), raised)


def _retry_reason(memory_mb: int | None, retries: int | None) -> str:
    parts = []
    if memory_mb is not None:
        parts.append(f"memory raised to {memory_mb} MB")
    if retries is not None:
        parts.append(f"{retries} attempt(s) per job")
    return "retry" + (f" with {', '.join(parts)}" if parts else "")


def _override(step: CampaignStepRow, memory_mb: int | None, retries: int | None) -> None:
    overrides = dict(step.overrides or {})
    if memory_mb is not None:
        overrides["memory_mb"] = max(int(overrides.get("memory_mb") or 0), memory_mb)
    if retries is not None:
        overrides["max_attempts"] = retries
    step.overrides = overrides


def _adjust_runs(
    session: Session, runs: list[str], memory_mb: int | None, retries: int | None
) -> int:
    """Raise the memory of the runs' failed jobs and store the new retry settings in the
    runs' options, which a resumed run reads. Returns how many jobs got more memory."""
    from skybatch.engines.base import JobState
    from skybatch.run.models import JobRow, RunRow

    if not runs or (memory_mb is None and retries is None):
        return 0
    rows = list(session.scalars(select(RunRow).where(RunRow.name.in_(runs))))
    for run in rows:
        options: dict[str, Any] = dict(run.options)
        if memory_mb is not None:
            options["memory_cap_mb"] = max(int(options.get("memory_cap_mb", 0)), memory_mb)
        if retries is not None:
            options["max_attempts"] = retries
        run.options = options
    if memory_mb is None or not rows:
        return 0
    result = session.execute(
        update(JobRow)
        .where(
            JobRow.run_id.in_([r.id for r in rows]),
            JobRow.state.in_([JobState.HELD.value, JobState.FAILED.value]),
            JobRow.memory_mb < memory_mb,
        )
        .values(memory_mb=memory_mb)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
