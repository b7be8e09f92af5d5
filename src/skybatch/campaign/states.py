"""The campaign state machine: one table of states and transitions, one function to move.

Campaigns, steps and groups share the states below. Every allowed change is a row of
:data:`TRANSITIONS`, made either by the **manager** (the daemon advancing campaigns)
or by an **operator** action (``pause``, ``resume``, ``retry``, ``cancel``); nothing
else may change a state. :func:`change_state` is the only writer: it checks each
change against the table, updates the rows only if they are still in the state the
caller read (another process may have changed them since: that raises
:class:`StateConflict`), and writes one ``campaign_events`` row per change, all in
the caller's transaction.

The table as documentation (``skybatch campaign states`` prints it; a test checks
that this text matches :data:`TRANSITIONS`):

.. code-block:: text

    kind      from       to         by        meaning
    campaign  waiting    running    manager   a manager picked the campaign up
    campaign  running    succeeded  manager   every step succeeded
    campaign  running    failed     manager   a step failed and no other step can go on
    campaign  waiting    paused     pause     no group starts until resume
    campaign  running    paused     pause     no group starts until resume; running ones finish
    campaign  paused     running    resume    the manager goes on
    campaign  failed     running    retry     failed steps and groups run again
    campaign  waiting    cancelled  cancel    nothing more runs
    campaign  running    cancelled  cancel    nothing more runs; a running group is stopped
    campaign  paused     cancelled  cancel    nothing more runs
    campaign  failed     cancelled  cancel    the failure is final; cleanup runs
    step      waiting    ready      manager   the steps it depends on succeeded
    step      ready      running    manager   expanded into groups
    step      ready      succeeded  manager   expanded into no group (nothing selected)
    step      ready      failed     manager   the expansion failed
    step      running    succeeded  manager   every group succeeded
    step      running    failed     manager   a group failed and no group is left to run
    step      failed     ready      retry     expanded again (it failed before having groups)
    step      failed     running    retry     its failed groups run again
    step      waiting    cancelled  cancel    its campaign was cancelled
    step      ready      cancelled  cancel    its campaign was cancelled
    step      running    cancelled  cancel    its campaign was cancelled
    step      failed     cancelled  cancel    its campaign was cancelled
    group     ready      running    manager   its run was started
    group     running    running    manager   a restarted manager resumes its run
    group     running    succeeded  manager   its run succeeded
    group     running    failed     manager   its run failed (held jobs) or could not start
    group     ready      paused     pause     it does not start until resume
    group     paused     ready      resume    it may start again
    group     failed     ready      retry     its run resumes: held jobs get new attempts
    group     ready      cancelled  cancel    it never runs
    group     paused     cancelled  cancel    it never runs
    group     running    cancelled  cancel    its run is stopped at the manager's next check
    group     failed     cancelled  cancel    the failure is final

Steps have no ``paused`` state: pausing a campaign stops the manager from advancing
any of its steps, and its ready groups are paused. Groups are created ``ready`` (no
group waits: a step is expanded only once the steps it depends on succeeded).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from skybatch.db.models import utcnow
from skybatch.errors import InputError

from .models import CampaignEventRow, CampaignGroupRow, CampaignRow, CampaignStepRow

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "TRANSITIONS",
    "Action",
    "Actor",
    "Kind",
    "State",
    "StateConflict",
    "Transition",
    "allowed",
    "change_state",
    "sources",
    "state_table_text",
]


class State(enum.StrEnum):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class Kind(enum.StrEnum):
    CAMPAIGN = "campaign"
    STEP = "step"
    GROUP = "group"


class Actor(enum.StrEnum):
    MANAGER = "manager"
    OPERATOR = "operator"


class Action(enum.StrEnum):
    """Operator actions; each is a set of transitions of the table."""

    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    CANCEL = "cancel"


#: States nothing leaves (a failed campaign, step or group may still be retried).
TERMINAL = frozenset({State.SUCCEEDED, State.CANCELLED})
#: Campaign states the manager advances.
ACTIVE = frozenset({State.WAITING, State.RUNNING})


@dataclass(frozen=True)
class Transition:
    """One allowed change: ``action`` is ``None`` for the manager's own transitions."""

    kind: Kind
    source: State
    target: State
    action: Action | None
    meaning: str

    @property
    def actor(self) -> Actor:
        return Actor.MANAGER if self.action is None else Actor.OPERATOR


def _t(kind: Kind, source: str, target: str, action: Action | None, meaning: str) -> Transition:
    return Transition(kind, State(source), State(target), action, meaning)


_C, _S, _G = Kind.CAMPAIGN, Kind.STEP, Kind.GROUP
_P, _R, _T, _X = Action.PAUSE, Action.RESUME, Action.RETRY, Action.CANCEL

TRANSITIONS: tuple[Transition, ...] = (
    _t(_C, "waiting", "running", None, "a manager picked the campaign up"),
    _t(_C, "running", "succeeded", None, "every step succeeded"),
    _t(_C, "running", "failed", None, "a step failed and no other step can go on"),
    _t(_C, "waiting", "paused", _P, "no group starts until resume"),
    _t(_C, "running", "paused", _P, "no group starts until resume; running ones finish"),
    _t(_C, "paused", "running", _R, "the manager goes on"),
    _t(_C, "failed", "running", _T, "failed steps and groups run again"),
    _t(_C, "waiting", "cancelled", _X, "nothing more runs"),
    _t(_C, "running", "cancelled", _X, "nothing more runs; a running group is stopped"),
    _t(_C, "paused", "cancelled", _X, "nothing more runs"),
    _t(_C, "failed", "cancelled", _X, "the failure is final; cleanup runs"),
    _t(_S, "waiting", "ready", None, "the steps it depends on succeeded"),
    _t(_S, "ready", "running", None, "expanded into groups"),
    _t(_S, "ready", "succeeded", None, "expanded into no group (nothing selected)"),
    _t(_S, "ready", "failed", None, "the expansion failed"),
    _t(_S, "running", "succeeded", None, "every group succeeded"),
    _t(_S, "running", "failed", None, "a group failed and no group is left to run"),
    _t(_S, "failed", "ready", _T, "expanded again (it failed before having groups)"),
    _t(_S, "failed", "running", _T, "its failed groups run again"),
    _t(_S, "waiting", "cancelled", _X, "its campaign was cancelled"),
    _t(_S, "ready", "cancelled", _X, "its campaign was cancelled"),
    _t(_S, "running", "cancelled", _X, "its campaign was cancelled"),
    _t(_S, "failed", "cancelled", _X, "its campaign was cancelled"),
    _t(_G, "ready", "running", None, "its run was started"),
    _t(_G, "running", "running", None, "a restarted manager resumes its run"),
    _t(_G, "running", "succeeded", None, "its run succeeded"),
    _t(_G, "running", "failed", None, "its run failed (held jobs) or could not start"),
    _t(_G, "ready", "paused", _P, "it does not start until resume"),
    _t(_G, "paused", "ready", _R, "it may start again"),
    _t(_G, "failed", "ready", _T, "its run resumes: held jobs get new attempts"),
    _t(_G, "ready", "cancelled", _X, "it never runs"),
    _t(_G, "paused", "cancelled", _X, "it never runs"),
    _t(_G, "running", "cancelled", _X, "its run is stopped at the manager's next check"),
    _t(_G, "failed", "cancelled", _X, "the failure is final"),
)

_ALLOWED = {(t.kind, t.source, t.target, t.action) for t in TRANSITIONS}


def allowed(kind: Kind, source: State, target: State, action: Action | None = None) -> bool:
    """Whether the table has this change (for the manager when ``action`` is None)."""
    return (kind, State(source), State(target), action) in _ALLOWED


def sources(kind: Kind, target: State, action: Action | None) -> frozenset[State]:
    """The states from which ``action`` (or the manager) moves a ``kind`` to ``target``."""
    return frozenset(
        t.source
        for t in TRANSITIONS
        if t.kind is kind and t.target is target and t.action is action
    )


def state_table_text() -> str:
    """The transition table as aligned text (the module docstring holds the same)."""
    lines = [f"{'kind':<9} {'from':<10} {'to':<10} {'by':<9} meaning"]
    for t in TRANSITIONS:
        by = t.action.value if t.action else "manager"
        lines.append(f"{t.kind:<9} {t.source:<10} {t.target:<10} {by:<9} {t.meaning}")
    return "\n".join(lines)


class StateConflict(InputError):
    """A change that the table does not allow, or rows changed by someone else meanwhile."""


Row = CampaignRow | CampaignStepRow | CampaignGroupRow

_KIND: dict[type[Any], Kind] = {
    CampaignRow: Kind.CAMPAIGN,
    CampaignStepRow: Kind.STEP,
    CampaignGroupRow: Kind.GROUP,
}


def change_state(
    session: Session,
    rows: Row | Sequence[Row],
    target: State,
    *,
    action: Action | None = None,
    reason: str | None = None,
    actor: str | None = None,
) -> None:
    """Move ``rows`` (all of one kind) to ``target`` and record one event per row.

    ``actor`` names who acted in the history (the service's ``token:NAME``); by
    default ``manager`` for the manager's transitions, ``operator`` for actions.

    Runs in the caller's transaction. The rows are updated only where they still are
    in the state they were read in; if another process changed one meanwhile, nothing
    is written and :class:`StateConflict` is raised (the caller's transaction should
    be rolled back and the work read again).

    Raises:
        StateConflict: the table has no such transition, or the rows changed.
    """
    items: list[Row] = [rows] if isinstance(rows, Row) else list(rows)
    if not items:
        return
    kinds = {_KIND[type(row)] for row in items}
    if len(kinds) != 1:
        raise ValueError("change_state takes rows of one kind")
    kind = kinds.pop()
    for row in items:
        if not allowed(kind, State(row.state), target, action):
            by = f"`{action}`" if action else "the manager"
            raise StateConflict(
                f"{kind} {_label(row)} is {row.state}: {by} cannot make it {target}",
                where=f"{kind} {_label(row)}",
                hint="`skybatch campaign states` lists the allowed changes",
            )
    now = utcnow()
    table = type(items[0])
    values: dict[str, Any] = {"state": target.value}
    if target is State.RUNNING and kind is Kind.GROUP:
        values["started_at"] = now  # of the latest run of the group
    first = all(isinstance(r, CampaignRow) and r.started_at is None for r in items)
    if target is State.RUNNING and kind is Kind.CAMPAIGN and first:
        values["started_at"] = now  # the first start only
    if target in (State.SUCCEEDED, State.FAILED, State.CANCELLED):
        values["finished_at"] = now
    elif target in (State.READY, State.RUNNING) and kind is not Kind.CAMPAIGN:
        values["finished_at"] = None
    if kind is Kind.CAMPAIGN and target is State.RUNNING:
        values["finished_at"] = None
    by_source: dict[str, list[int]] = {}
    for row in items:
        by_source.setdefault(row.state, []).append(row.id)
    for source, ids in by_source.items():
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            done = session.execute(
                update(table)
                .where(table.id.in_(chunk), table.state == source)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != len(chunk):  # type: ignore[attr-defined]
                raise StateConflict(
                    f"{len(chunk) - done.rowcount} {kind}(s) changed state "  # type: ignore[attr-defined]
                    "while this change was being made",
                    where=f"{kind} {_label(items[0])}",
                    hint="read the state again (`skybatch campaign status ID`) and retry",
                )
    names = _names(session, kind, items)
    who = actor or (Actor.MANAGER if action is None else Actor.OPERATOR).value
    session.execute(
        insert(CampaignEventRow),
        [
            {
                "campaign_id": row.id if isinstance(row, CampaignRow) else row.campaign_id,
                "kind": kind.value,
                "what": names[row.id],
                "from_state": row.state,
                "to_state": target.value,
                "action": action.value if action else None,
                "actor": who,
                "reason": reason,
                "created_at": now,
            }
            for row in items
        ],
    )
    for row in items:
        for key, value in values.items():
            set_committed_value(row, key, value)


def _label(row: Row) -> str:
    return f"{row.name!r} (id {row.id})"


def _names(session: Session, kind: Kind, rows: Sequence[Row]) -> dict[int, str]:
    if kind is not Kind.GROUP:
        return {row.id: row.name for row in rows}
    step_ids = {row.step_id for row in rows if isinstance(row, CampaignGroupRow)}
    query = select(CampaignStepRow.id, CampaignStepRow.name).where(CampaignStepRow.id.in_(step_ids))
    steps: dict[int, str] = {step_id: name for step_id, name in session.execute(query)}
    return {
        row.id: f"{steps.get(row.step_id, '?')}/{row.name}"
        for row in rows
        if isinstance(row, CampaignGroupRow)
    }
