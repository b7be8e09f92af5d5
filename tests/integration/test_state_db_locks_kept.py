"""Checking the state database's file must not cost committed writes.

SQLite keeps its locks as POSIX advisory locks, which the kernel drops for the whole
process when the process closes *any* descriptor of the file. A header check that
opened and closed ``state.sqlite3`` each time an engine was made (every
``open_state_db``: a driver makes several, a warm worker one per job) silently dropped
the locks of the process's live connections; another process closing its connection
then took itself for the last one, checkpointed and deleted the WAL, and the first
process's later commits went to the deleted WAL, lost when that process ended without
a checkpoint of its own (a warm worker is killed when its engine closes). The fault
trials lost every row the jobs of a resumed run wrote this way.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

WRITER = """
import os, sys, time
from sqlalchemy import text
from skybatch.db.engine import make_engine

url, go = sys.argv[1], sys.argv[2]
first = make_engine(url)
with first.begin() as conn:  # a live pooled connection, as in a driver or warm worker
    conn.execute(text("INSERT INTO t VALUES (1)"))
second = make_engine(url)  # what every later open_state_db of the process does
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.05)
with first.begin() as conn:
    conn.execute(text("INSERT INTO t VALUES (3)"))
print("committed", flush=True)
time.sleep(600)  # killed here, as a warm worker is
"""


def test_a_process_that_makes_another_engine_keeps_its_commits(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (v INTEGER)")
    setup.commit()
    setup.close()

    go = tmp_path / "go"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, f"sqlite:///{db}", str(go)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        other = sqlite3.connect(db)  # another process writes, then closes
        other.execute("INSERT INTO t VALUES (2)")
        other.commit()
        other.close()
        go.touch()
        assert writer.stdout.readline().strip() == "committed"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    check = sqlite3.connect(db)
    try:
        assert sorted(v for (v,) in check.execute("SELECT v FROM t")) == [1, 2, 3]
    finally:
        check.close()
