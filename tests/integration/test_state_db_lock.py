"""State writes wait out a SQLite state database another process holds locked for longer
than the busy timeout, and succeed; only a lock held past ``db.lock_wait_s`` fails."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from skybatch.db.models import Operation
from skybatch.db.operations import record_operation
from skybatch.db.state import open_state_db
from skybatch.errors import DatabaseError
from skybatch.settings import load_settings

#: Takes the write lock (BEGIN EXCLUSIVE), writes a row, says so, holds it, commits.
HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
connection.execute(
    "INSERT INTO operations (command, arguments, status, started_at)"
    " VALUES ('holder', '{}', 'succeeded', '2026-01-01 00:00:00')"
)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


@contextmanager
def _locked(db: Path, hold_s: float) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(hold_s)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.wait(timeout=120)


def test_writes_wait_for_a_lock_held_longer_than_the_busy_timeout_and_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(home=tmp_path / "home", db={"busy_timeout_s": 0.2, "lock_wait_s": 120})
    sessions = open_state_db(settings)
    db = tmp_path / "home" / "state.sqlite3"
    caplog.set_level(logging.WARNING, logger="skybatch.db.locking")

    # A transaction that reads, then writes (the usual shape of a state change).
    with _locked(db, 3.0), sessions.begin() as session:
        before = session.scalar(select(func.count()).select_from(Operation))
        session.add(Operation(command="after the lock", arguments={}))
    assert before == 1  # it read after the holder committed: no stale snapshot
    assert "is locked by another process; waiting to write" in caplog.text

    # A session committing by itself, and the audit log of a command.
    caplog.clear()
    with _locked(db, 2.0):
        with sessions() as session:
            session.add(Operation(command="plain session", arguments={}))
            session.commit()
        with record_operation(sessions, "recorded", {}) as op:
            op.message = "done"
    assert "is locked by another process; waiting" in caplog.text
    with sessions() as session:
        commands = session.scalars(select(Operation.command).order_by(Operation.id)).all()
    assert commands == ["holder", "after the lock", "holder", "plain session", "recorded"]


def test_a_lock_held_past_the_total_wait_is_a_database_error_saying_so(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home", db={"busy_timeout_s": 0.2, "lock_wait_s": 1})
    sessions = open_state_db(settings)
    db = tmp_path / "home" / "state.sqlite3"
    with _locked(db, 6.0), pytest.raises(DatabaseError) as info, sessions.begin() as session:
        session.add(Operation(command="too late", arguments={}))
    assert "stayed locked by another process" in str(info.value)
    assert "db.lock_wait_s" in str(info.value)
