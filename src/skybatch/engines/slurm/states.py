"""Slurm job states translated to skybatch's :class:`JobState`: the one table.

``squeue`` (``%T``) and ``sacct`` (``State``) name job states the same way; ``sacct``
adds the canceller (``CANCELLED by 0``). Every state Slurm 22.05 documents is listed,
so an unknown one is a surprise worth a clear error rather than a guess.
"""

from __future__ import annotations

from skybatch.engines.base import FailureKind, JobState

__all__ = ["SLURM_STATES", "UnknownSlurmState", "translate"]

_RUN = (JobState.RUNNING, FailureKind.NONE)
_WAIT = (JobState.SUBMITTED, FailureKind.NONE)

#: Slurm state -> (JobState, FailureKind). Terminal failures carry the kind the
#: retry policy acts on: memory escalation after OUT_OF_MEMORY, a plain retry after
#: NODE_FAIL, BOOT_FAIL or PREEMPTED.
SLURM_STATES: dict[str, tuple[JobState, FailureKind]] = {
    "PENDING": _WAIT,
    "REQUEUED": _WAIT,
    "REQUEUE_HOLD": _WAIT,
    "REQUEUE_FED": _WAIT,
    "RESV_DEL_HOLD": _WAIT,
    "SPECIAL_EXIT": _WAIT,  # held by Slurm after a special exit code; an operator releases it
    "CONFIGURING": _RUN,
    "RUNNING": _RUN,
    "COMPLETING": _RUN,  # the job's processes end; the epilog runs
    "RESIZING": _RUN,
    "SIGNALING": _RUN,
    "STAGE_OUT": _RUN,
    "STOPPED": _RUN,
    "SUSPENDED": _RUN,
    "COMPLETED": (JobState.SUCCEEDED, FailureKind.NONE),
    "FAILED": (JobState.FAILED, FailureKind.ERROR),
    "OUT_OF_MEMORY": (JobState.FAILED, FailureKind.OUT_OF_MEMORY),
    "TIMEOUT": (JobState.FAILED, FailureKind.TIMEOUT),
    "DEADLINE": (JobState.FAILED, FailureKind.TIMEOUT),
    "NODE_FAIL": (JobState.FAILED, FailureKind.NODE_FAILURE),
    "BOOT_FAIL": (JobState.FAILED, FailureKind.NODE_FAILURE),
    "PREEMPTED": (JobState.FAILED, FailureKind.PREEMPTED),
    "REVOKED": (JobState.FAILED, FailureKind.LOST),  # federation: runs on another cluster
    "CANCELLED": (JobState.CANCELLED, FailureKind.CANCELLED),
}

#: States after which Slurm does nothing more with the job.
FINISHED = frozenset(
    name
    for name, (state, _) in SLURM_STATES.items()
    if state not in (JobState.SUBMITTED, JobState.RUNNING)
)


class UnknownSlurmState(ValueError):
    """Slurm reported a state this table does not know."""


def translate(slurm_state: str) -> tuple[JobState, FailureKind]:
    """``"CANCELLED by 0"`` -> ``(CANCELLED, CANCELLED)``; raises UnknownSlurmState."""
    word = slurm_state.split(" ", 1)[0].rstrip("+").upper()
    try:
        return SLURM_STATES[word]
    except KeyError:
        raise UnknownSlurmState(f"unknown Slurm job state {slurm_state!r}") from None
