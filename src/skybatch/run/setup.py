"""A run's set-up (seed steps 4-9, before execution) and what a kill during it leaves.

Set-up goes through these phases, in order (:data:`SETUP_PHASES`):

``record``
    the run's row is written (state ``pending``): its name is taken;
``expand``
    the pipeline is expanded into the quantum graph (``WORKDIR/graph.qg``);
``workflow``
    the workflow of jobs is saved (``WORKDIR/workflow.json``);
``provenance``
    the submission provenance is archived and registered; the run is ``running``;
``init_outputs``
    configs, packages and init-outputs are written, ingested and registered;
``inputs``
    the run's input files are registered in the backbone catalog;
``jobs``
    the run's jobs are created, in one transaction: **set-up is finished**;
``replicate``
    the first jobs' inputs are staged to the site (then execution goes on).

A run whose set-up did not finish (no jobs) holds nothing anyone can use. A set-up
that *raised* (a missing input file, a bad template, an unreachable registry) removes
what it wrote at once (:func:`abandon`: its Butler RUN collection, its catalog files,
its work directory) and leaves the run ``failed`` with the cause in its message. The
same ``skybatch run`` command, ``skybatch run --resume`` and the campaign manager all
discard what a failed or killed set-up left (:func:`discard`: also its row) and set
it up again under the same name. From ``jobs`` on, ``--resume``
continues the run. A lock file in the run's work directory (:func:`claim`) keeps a
second process from discarding a set-up that is still going on; the kernel releases
it when its process dies, even by ``kill -9``.

Each boundary is a fault-injection point ``setup:PHASE`` (:mod:`skybatch.faults`):
``SKYBATCH_FAULT_KILL_AT=setup:inputs`` (fault trials and tests only) makes the
process ``SIGKILL`` itself and its workers right after that phase.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from skybatch.errors import InputError
from skybatch.faults import ENV, kill_point

__all__ = [
    "FAULT_ENV",
    "SETUP_PHASES",
    "abandon",
    "boundary",
    "claim",
    "discard",
    "setup_finished",
]

_log = logging.getLogger(__name__)

SETUP_PHASES = (
    "record",
    "expand",
    "workflow",
    "provenance",
    "init_outputs",
    "inputs",
    "jobs",
    "replicate",
)

#: Environment variable naming the point (``setup:PHASE``) where the process dies.
FAULT_ENV = ENV

LOCK_NAME = "run.lock"


def boundary(phase: str) -> None:
    """The end of set-up phase ``phase``: where a fault trial may kill the process
    (fault-injection point ``setup:PHASE``)."""
    assert phase in SETUP_PHASES, phase
    kill_point(f"setup:{phase}")


def setup_finished(session: Session, run_id: int) -> bool:
    """Whether the run's set-up finished: its jobs exist (all or none are created)."""
    from .models import JobRow

    count = session.scalar(select(func.count()).select_from(JobRow).where(JobRow.run_id == run_id))
    return bool(count)


@contextlib.contextmanager
def claim(workdir: Path, run: str) -> Iterator[None]:
    """Hold the run's lock while this process sets it up or executes it.

    Raises:
        InputError: another living process holds it (the run is being set up or run).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"run {run!r} is being set up or run by another process",
                where=run,
                hint="wait for that process to end (`skybatch report --list` shows the "
                "run's state), or stop it, then `skybatch run --resume` the run",
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def abandon(backbone: Any, repo: Path, run: str) -> None:
    """A set-up that raised (bad input found by the expansion, a missing input file, a
    full disk, an unreachable registry), called while its exception is handled: if the
    run's jobs do not exist yet, remove what it wrote (its Butler RUN collection, its
    catalog files, its work directory) and leave it ``failed``, its message saying why
    (and what could not be removed), so the same command can be given again once the
    cause is fixed. Each part is tried on its own. Never raises: the set-up's own error
    is what matters."""
    from .models import RunRow

    error = sys.exc_info()[1]
    why = f"its set-up failed: {_first_line(error)}" if error else "its set-up failed"
    try:
        with backbone.catalog.sessions() as session:
            row = session.scalar(select(RunRow).where(RunRow.name == run))
            if row is None or setup_finished(session, row.id):
                return
            workdir = Path(row.workdir)
        _log.warning("run %s: %s; removing what it left", run, why)
        left = _remove_outputs(backbone, repo, run)
        try:
            shutil.rmtree(workdir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append(f"its work directory {workdir}: {_first_line(exc)}")
        _mark_failed(backbone, run, why, left)
    except Exception:
        _log.exception("run %s: what its failed set-up left could not be removed", run)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _remove_outputs(backbone: Any, repo: Path, run: str) -> list[str]:
    """Remove the run's Butler RUN collection and its catalog files; what could not be
    removed, as phrases for the run's message."""
    from lsst.daf.butler import MissingCollectionError

    from skybatch.backbone.maintenance import delete as delete_files

    from .caches import repository_butler

    left: list[str] = []
    try:
        with (
            repository_butler(repo, writeable=True) as butler,
            contextlib.suppress(MissingCollectionError),
        ):
            butler.removeRuns([run])
    except Exception as exc:
        left.append(f"its Butler RUN collection {run}: {_first_line(exc)}")
    try:
        files = backbone.catalog.files(run=run)
        if files:
            delete_files(backbone, files)
    except Exception as exc:
        left.append(f"its catalog files: {_first_line(exc)}")
    return left


def _mark_failed(backbone: Any, run: str, why: str, left: list[str]) -> None:
    from .models import RunRow, RunState
    from .states import change_run_state

    message = why
    if left:
        message += "; not removed (the same command removes them): " + "; ".join(left)
    with backbone.catalog.sessions.begin() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        if row is None or setup_finished(session, row.id):
            return
        if row.state != RunState.FAILED.value:
            change_run_state(row, RunState.FAILED)
        row.message = message


def discard(
    backbone: Any, repo: Path, run: str, why: str = "it was interrupted while being set up"
) -> None:
    """Remove what a run killed during its set-up left: its Butler RUN collection (init
    outputs), its catalog files (provenance, init outputs) and its row, if it has no
    jobs. Each part is idempotent, so a kill in here is repaired by the next try."""
    from lsst.daf.butler import MissingCollectionError

    from skybatch.backbone.maintenance import delete as delete_files

    from .caches import repository_butler
    from .models import RunRow

    _log.warning("run %s: %s; discarding what it left", run, why)
    with (
        repository_butler(repo, writeable=True) as butler,
        contextlib.suppress(MissingCollectionError),
    ):
        butler.removeRuns([run])
    files = backbone.catalog.files(run=run)
    if files:
        delete_files(backbone, files)
    with backbone.catalog.sessions.begin() as session:  # a failed set-up's row too
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        if row is not None and not setup_finished(session, row.id):
            session.execute(delete(RunRow).where(RunRow.id == row.id))
