"""Record operator commands in the ``operations`` audit log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.models import Operation, OperationStatus, utcnow

__all__ = ["RecordedOperation", "record_operation"]

_log = logging.getLogger(__name__)


@dataclass
class RecordedOperation:
    """Handle of a running operation; set ``message`` to store a summary on success."""

    id: int
    command: str
    message: str | None = None


@contextmanager
def record_operation(
    session_factory: sessionmaker[Session], command: str, arguments: Mapping[str, Any]
) -> Iterator[RecordedOperation]:
    """Log ``command`` as running, then as succeeded or failed when the block exits.

    Each state is committed in its own transaction, so the row survives a failure of
    the work inside the block. Exceptions are recorded and re-raised unchanged.

    Args:
        session_factory: Factory of sessions on the state database.
        command: The command, e.g. ``"campaign submit"``.
        arguments: Its arguments; values that are not JSON (paths, ...) are stored as
            strings.
    """
    stored_arguments = json.loads(json.dumps(dict(arguments), default=str))
    with session_factory.begin() as session:
        row = Operation(
            command=command,
            arguments=stored_arguments,
            status=OperationStatus.RUNNING.value,
            started_at=utcnow(),
        )
        session.add(row)
        session.flush()
        handle = RecordedOperation(id=row.id, command=command)
    try:
        yield handle
    except BaseException as exc:
        reason = (
            "interrupted"
            if isinstance(exc, KeyboardInterrupt)
            else (str(exc) or type(exc).__name__)
        )
        _finish(session_factory, handle.id, OperationStatus.FAILED, reason)
        raise
    _finish(session_factory, handle.id, OperationStatus.SUCCEEDED, handle.message)


def _finish(
    session_factory: sessionmaker[Session],
    operation_id: int,
    status: OperationStatus,
    message: str | None,
) -> None:
    try:
        with session_factory.begin() as session:
            row = session.get(Operation, operation_id)
            if row is None:
                _log.warning("operation %d vanished from the audit log", operation_id)
                return
            row.status = status.value
            row.finished_at = utcnow()
            row.message = message
    except Exception:
        if status is OperationStatus.FAILED:
            # Do not mask the error that made the operation fail.
            _log.exception("could not record the failure of operation %d", operation_id)
            return
        raise
