"""Waiting out a locked SQLite state database instead of failing work that succeeded.

SQLite lets one writer at a time in. Another process holding the write lock (a long
transaction, a backup, an operator's ``sqlite3`` shell) makes a write wait SQLite's
busy timeout (``db.busy_timeout_s``) and then fail with "database is locked"; a group
whose jobs all succeeded then failed on its bookkeeping. Here every state write keeps
waiting, with a log line saying so and backoff between tries, up to ``db.lock_wait_s``
(default 600 s) in all:

- a transaction from ``sessions.begin()`` takes the write lock first (``BEGIN
  IMMEDIATE``): nothing has been read or written yet, so waiting and trying again is
  always safe, and the transaction never meets a snapshot that another writer made
  stale meanwhile (SQLITE_BUSY_SNAPSHOT, which no wait can cure);
- any other statement that finds the database busy is tried again the same way
  (SQLite leaves a statement refused with SQLITE_BUSY without effect).

PostgreSQL waits for row locks by itself (no timeout is set), so only SQLite needs this.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from skybatch.errors import DatabaseError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "DEFAULT_LOCK_WAIT_S",
    "LockPolicy",
    "StateSessions",
    "install_lock_waiting",
    "is_busy",
    "wait_out_lock",
]

_log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_S = 30.0
DEFAULT_LOCK_WAIT_S = 600.0

_SQLITE_BUSY = 5
_SQLITE_BUSY_SNAPSHOT = 517

T = TypeVar("T")


@dataclass(frozen=True)
class LockPolicy:
    """How long state writes wait for a locked SQLite database."""

    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S  # SQLite's own wait per try
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S  # all tries together, then the error
    first_backoff_s: float = 0.5
    max_backoff_s: float = 15.0


_policies: weakref.WeakKeyDictionary[Engine, LockPolicy] = weakref.WeakKeyDictionary()


def is_busy(exc: BaseException) -> bool:
    """``exc`` (or the DBAPI error it wraps) is SQLite's "database is locked" that a
    later try can get past (not SQLITE_BUSY_SNAPSHOT)."""
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_BUSY and code != _SQLITE_BUSY_SNAPSHOT
    return "database is locked" in str(orig)


def wait_out_lock(attempt: Callable[[], T], policy: LockPolicy, what: str, where: str) -> T:
    """``attempt()``, tried again with backoff while the database is busy, for up to
    ``policy.lock_wait_s`` seconds in all (each try itself waits the busy timeout)."""
    start = time.monotonic()
    backoff = policy.first_backoff_s
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not is_busy(exc):
                raise
            waited = time.monotonic() - start
            if waited >= policy.lock_wait_s:
                raise DatabaseError(
                    f"the state database stayed locked by another process for {waited:.0f} s "
                    f"while waiting to {what}",
                    where=where,
                    hint="find the process holding it (fuser/lsof on the database file) "
                    "and end it, or raise db.lock_wait_s (SKYBATCH_DB__LOCK_WAIT_S)",
                ) from exc
            _log.warning(
                "the state database %s is locked by another process; waiting to %s "
                "(%.0f s so far, up to %.0f s)",
                where,
                what,
                waited,
                policy.lock_wait_s,
            )
            time.sleep(min(backoff, max(0.0, policy.lock_wait_s - waited)))
            backoff = min(backoff * 2, policy.max_backoff_s)


def install_lock_waiting(engine: Engine, policy: LockPolicy) -> None:
    """Make every statement on the SQLite ``engine`` wait out a busy database."""
    _policies[engine] = policy
    where = engine.url.database or str(engine.url)

    def execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        wait_out_lock(lambda: cursor.execute(statement, parameters), policy, "write", where)
        return True

    def executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        wait_out_lock(lambda: cursor.executemany(statement, parameters), policy, "write", where)
        return True

    def execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        wait_out_lock(lambda: cursor.execute(statement), policy, "write", where)
        return True

    event.listen(engine, "do_execute", execute)
    event.listen(engine, "do_executemany", executemany)
    event.listen(engine, "do_execute_no_params", execute_no_params)


class StateSessions(sessionmaker[Session]):
    """Sessions on the state database whose ``begin()`` transactions take SQLite's
    write lock first, waiting it out as the module says."""

    @contextmanager
    def begin(self) -> Iterator[Session]:
        with super().begin() as session:
            bind = session.get_bind()
            engine = bind if isinstance(bind, Engine) else bind.engine
            if engine.dialect.name == "sqlite":
                # Through the do_execute hook: waits and tries again while busy.
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session


def policy_of(engine: Engine) -> LockPolicy:
    return _policies.get(engine, LockPolicy())
