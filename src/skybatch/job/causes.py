"""Root causes of a job's failure (seed step 11): what the operator must read first.

Libraries wrap low-level errors: a full disk reaches the job as daf_butler's
"Failed to serialize dataset ..." with the ``OSError: [Errno 28] No space left on
device`` two causes down. :func:`error_line` keeps the outer message and appends the
root cause when the outer one does not already say it, and :func:`failure_kind`
classifies from ``errno`` anywhere in the chain (``__cause__`` and ``__context__``);
the one message read is numpy's short-write error, which carries no errno.
:data:`ADVICE` is what the reports print for a kind.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

from skybatch.engines.base import FailureKind

__all__ = [
    "ADVICE",
    "DISK_FULL_ERRNOS",
    "EXIT_DISK_FULL",
    "advice_for",
    "chain",
    "error_line",
    "failure_kind",
]

#: Out of space (ENOSPC) or over a quota (EDQUOT): the disk is full for this job.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Exit code of the job wrapper when the disk is so full that not even its report could
#: be written (ENOSPC's errno): the scheduler then classifies from the code alone.
EXIT_DISK_FULL = errno.ENOSPC

#: What the operator does about a failure of this kind (run and campaign reports).
ADVICE: dict[FailureKind, str] = {
    FailureKind.DISK_FULL: (
        "a filesystem the job writes to is full (or over quota): free space there, then "
        "`skybatch run --resume RUN` (a campaign: `skybatch campaign retry ID`)"
    ),
}


def advice_for(failure: str | None) -> str | None:
    """The advice for a stored failure kind (``None`` for kinds without one)."""
    try:
        return ADVICE.get(FailureKind(failure)) if failure else None
    except ValueError:
        return None


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


#: numpy's ``tofile`` (through which astropy writes FITS data) reports a failed
#: ``fwrite`` as a short write without errno: on a local file that is a full disk or a
#: quota; the C library's errno (ENOSPC/EDQUOT) is lost.
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def _short_write(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno is None and bool(_SHORT_WRITE.match(str(exc)))


def _disk_full(exc: BaseException) -> BaseException | None:
    for item in chain(exc):
        if isinstance(item, OSError) and (item.errno in DISK_FULL_ERRNOS or _short_write(item)):
            return item
    return None


def failure_kind(exc: BaseException) -> FailureKind | None:
    """The failure kind the chain of ``exc`` proves (``None``: an ordinary error)."""
    return FailureKind.DISK_FULL if _disk_full(exc) is not None else None


def _line(exc: BaseException) -> str:
    if _short_write(exc):
        return (
            f"{type(exc).__name__}: No space left on device or quota exceeded (a short "
            f"write: {exc})"
        )
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of ``exc``, followed by its root cause when the message does
    not carry it (a disk-full error wins over a deeper one): one line."""
    line = _line(exc)
    causes = list(chain(exc))[1:]
    if not causes:
        return line
    root = _disk_full(exc) or causes[-1]
    if root is exc:
        return line
    detail = _line(root).split(": ", 1)[-1]
    if detail in line:
        return line
    return f"{line} [root cause: {_line(root)}]"
