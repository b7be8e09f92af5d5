"""The run state machine: one table of transitions, one function that changes a run's state.

A run (one row of ``runs``) is created ``pending`` (:data:`INITIAL`) and changes state
only through :func:`change_run_state`, which checks the change against
:data:`TRANSITIONS` and raises :class:`RunStateError` for any other. The table, as
the driver, the campaign's group execution and a campaign's cleanup change runs
(a test checks that this text matches :data:`TRANSITIONS`):

.. code-block:: text

    from       to         meaning
    pending    running    set-up archived its provenance: the run is under way
    pending    failed     its set-up failed before its first job: what it wrote is removed
    running    running    resumed after its driver was killed
    failed     running    resumed: its held jobs get new attempts
    succeeded  running    resumed once more: nothing runs again, its finish is redone
    cancelled  running    resumed after it was stopped
    running    succeeded  every job succeeded and the run was finished
    running    failed     it stopped with held jobs (their outputs so far ingested)
    running    cancelled  stopped: its campaign group was cancelled, or its campaign ended
    cancelled  succeeded  its driver ended it after it was marked cancelled
    cancelled  failed     its driver ended it after it was marked cancelled

A run's message and summary are not states: their owners write them. Campaigns,
steps and groups have their own table (:mod:`skybatch.campaign.states`).
"""

from __future__ import annotations

from dataclasses import dataclass

from skybatch.db.models import utcnow
from skybatch.errors import InputError

from .models import RunRow, RunState

__all__ = [
    "INITIAL",
    "TERMINAL",
    "TRANSITIONS",
    "RunStateError",
    "RunTransition",
    "allowed",
    "change_run_state",
    "state_table_text",
]

#: The state a run is created in.
INITIAL = RunState.PENDING
#: States in which the run's driver has ended it (it may still be resumed).
TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


@dataclass(frozen=True)
class RunTransition:
    source: RunState
    target: RunState
    meaning: str


def _t(source: str, target: str, meaning: str) -> RunTransition:
    return RunTransition(RunState(source), RunState(target), meaning)


TRANSITIONS: tuple[RunTransition, ...] = (
    _t("pending", "running", "set-up archived its provenance: the run is under way"),
    _t("pending", "failed", "its set-up failed before its first job: what it wrote is removed"),
    _t("running", "running", "resumed after its driver was killed"),
    _t("failed", "running", "resumed: its held jobs get new attempts"),
    _t("succeeded", "running", "resumed once more: nothing runs again, its finish is redone"),
    _t("cancelled", "running", "resumed after it was stopped"),
    _t("running", "succeeded", "every job succeeded and the run was finished"),
    _t("running", "failed", "it stopped with held jobs (their outputs so far ingested)"),
    _t("running", "cancelled", "stopped: its campaign group was cancelled, or its campaign ended"),
    _t("cancelled", "succeeded", "its driver ended it after it was marked cancelled"),
    _t("cancelled", "failed", "its driver ended it after it was marked cancelled"),
)

_ALLOWED = frozenset((t.source, t.target) for t in TRANSITIONS)


def allowed(source: RunState | str, target: RunState | str) -> bool:
    """Whether the table lets a run go from ``source`` to ``target``."""
    return (RunState(source), RunState(target)) in _ALLOWED


def state_table_text() -> str:
    """The transition table as aligned text (the module docstring holds the same)."""
    lines = [f"{'from':<10} {'to':<10} meaning"]
    lines += [f"{t.source:<10} {t.target:<10} {t.meaning}" for t in TRANSITIONS]
    return "\n".join(lines)


class RunStateError(InputError):
    """A change of a run's state that the table does not allow."""


def change_run_state(row: RunRow, target: RunState) -> None:
    """Move the run ``row`` (in the caller's session and transaction) to ``target``.

    A run leaving ``pending`` gets its start time; a run ending
    (``succeeded``, ``failed``, ``cancelled``) its finish time; a run going on again
    (resumed, retried) loses its finish time until it ends again.

    Raises:
        RunStateError: the table has no change from the run's state to ``target``.
    """
    source = RunState(row.state)
    if not allowed(source, target):
        raise RunStateError(
            f"run {row.name!r} is {source}: it cannot become {target}",
            where=f"run {row.name}",
            hint="`skybatch report RUN` shows the run's state; see skybatch.run.states "
            "for the allowed changes",
        )
    row.state = target.value
    if source is RunState.PENDING:  # running, or failed during its set-up
        row.started_at = utcnow()
    if target in TERMINAL:
        row.finished_at = utcnow()
    elif source in TERMINAL:
        row.finished_at = None  # going on again: not finished (the overview's rate)
