"""Telling a damaged or foreign state database from a new home, and saying what to do.

Only a *missing* SQLite file is a new home. A file that exists is checked before
skybatch connects to it (a connection would happily turn a 0-byte file into a fresh,
empty database, and every campaign with it would be forgotten):

- 0 bytes, no SQLite header, a page size that is not one, or fewer bytes than its
  header says it has (truncated): refused at once, nothing written;
- damaged pages found by a query (SQLITE_CORRUPT, SQLITE_NOTADB): the error is
  translated wherever it surfaces (:func:`corruption_error`, used by the CLI);
- a schema revision this skybatch does not know: written by a newer skybatch.

``skybatch db check`` runs SQLite's ``integrity_check`` (or ``quick_check``) on a
read-only connection and reports the schema revision (:func:`check_database`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

from skybatch.errors import DatabaseError

__all__ = [
    "DamagedDatabaseError",
    "DatabaseCheck",
    "NewerSchemaError",
    "check_database",
    "check_sqlite_file",
    "corruption_error",
    "damaged_error",
    "sqlite_file_problem",
]

SQLITE_MAGIC = b"SQLite format 3\x00"
EMPTY = "the file is empty (0 bytes)"
#: SQLite result codes (primary, the low byte) that mean the file is not a sound database.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class DamagedDatabaseError(DatabaseError):
    """The state database file is empty, not a SQLite database, truncated or damaged."""


class NewerSchemaError(DatabaseError):
    """The state database was migrated by a newer skybatch than this one."""


def sqlite_file_problem(path: Path) -> str | None:
    """What is wrong with the SQLite file at ``path`` judged from its size and header
    (100 bytes read); ``None`` when it looks sound or does not exist."""
    try:
        size = path.stat().st_size
        if size == 0:
            return EMPTY
        header = _read_header(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the file cannot be read: {exc}"
    if not header.startswith(SQLITE_MAGIC):
        return "the file is not a SQLite database (no SQLite header)"
    if len(header) < 100:
        return f"the file is truncated: {size} bytes, shorter than a SQLite header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"the SQLite header is damaged (page size {page_size})"
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid when the change counter equals "version valid for".
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        return (
            f"the file is truncated: its header counts {pages} pages of {page_size} bytes "
            f"({pages * page_size} bytes) but the file has {size} bytes"
        )
    if size % page_size:
        return (
            f"the file is truncated: {size} bytes is not a whole number of {page_size}-byte pages"
        )
    return None


#: One read-only descriptor per database file (device, inode) this process checked,
#: never closed: SQLite's locks are POSIX advisory locks, which the kernel drops for
#: the whole process when it closes *any* descriptor of the file. Closing one after a
#: check would silently unlock the process's live connections, and another process
#: could then checkpoint and delete the WAL under them: their next commits are lost.
_HEADER_FDS: dict[tuple[int, int], int] = {}
_HEADER_LOCK = threading.Lock()


def _read_header(path: Path) -> bytes:
    """The first 100 bytes of ``path``, read without ever closing a descriptor of it."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    with _HEADER_LOCK:
        fd = _HEADER_FDS.get(key)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            found = os.fstat(fd)
            key = (found.st_dev, found.st_ino)  # the file may have been replaced since
            fd = _HEADER_FDS.setdefault(key, fd)
        return os.pread(fd, 100, 0)


def damaged_error(where: str, problem: str) -> DamagedDatabaseError:
    """The error for a damaged state database at ``where`` (a path or masked URL)."""
    hint = (
        "Nothing was changed. Stop every skybatch process using this home, restore the "
        f"file from a backup (remove {where}-wal and {where}-shm if they are left), and "
        "check it with `skybatch db check`"
    )
    if problem.startswith(EMPTY):
        hint += (
            "; if this home is new and nothing ever ran in it, delete the empty file "
            "and skybatch creates a new database"
        )
    return DamagedDatabaseError(
        f"the state database is unusable: {problem}", where=where, hint=hint
    )


#: Looks again at a file that seems truncated before calling it damaged: another
#: process's WAL checkpoint writes the header (with the new page count) before the
#: pages that grow the file, so a look in between sees a "truncated" sound file.
TRUNCATED_RECHECKS = 10
TRUNCATED_RECHECK_S = 0.05


def check_sqlite_file(path: Path) -> None:
    """Raise :class:`DamagedDatabaseError` if the existing file at ``path`` is not a
    sound SQLite database (a missing file passes: it is a new home). A file that looks
    truncated is looked at again for half a second (a checkpoint under way)."""
    problem = sqlite_file_problem(path)
    for _ in range(TRUNCATED_RECHECKS):
        if problem is None or not problem.startswith("the file is truncated"):
            break
        time.sleep(TRUNCATED_RECHECK_S)
        problem = sqlite_file_problem(path)
    if problem is not None:
        raise damaged_error(str(path), problem)


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def corruption_error(
    exc: BaseException, where: str | Path | URL | None = None
) -> DatabaseError | None:
    """A :class:`DamagedDatabaseError` if ``exc`` or an exception in its chain is
    SQLite saying the file is damaged or not a database; ``None`` otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for candidate in (current, getattr(current, "orig", None)):
            if isinstance(candidate, sqlite3.DatabaseError) and _sqlite_code(candidate) in (
                _SQLITE_CORRUPT,
                _SQLITE_NOTADB,
            ):
                text = str(candidate).strip() or type(candidate).__name__
                place = str(where) if where is not None else "the state database"
                return damaged_error(place, f"SQLite reports: {text}")
        current = current.__cause__ or current.__context__
    return None


def newer_schema_error(where: str, revision: str, head: str) -> NewerSchemaError:
    """The error for a database at a revision this skybatch does not know."""
    return NewerSchemaError(
        f"the state database is at schema revision {revision}, which this skybatch does not "
        f"know (its newest is {head}): a newer skybatch wrote it",
        where=where,
        hint="Nothing was changed. Upgrade skybatch (pip install -U skybatch) or use this "
        "home with the skybatch version that wrote it; a database is never migrated "
        "backwards",
    )


@dataclass
class DatabaseCheck:
    """What ``skybatch db check`` found."""

    target: str
    backend: str
    integrity: str  # "ok", "not checked (...)" or the first problems found
    revision: str | None
    head: str
    revision_state: str  # "head", "behind", "newer", "none", "unknown" (unreadable)
    problems: list[str] = field(default_factory=list)  # damage found

    @property
    def ok(self) -> bool:
        return not self.problems and self.revision_state != "newer"


def _revision_state(revision: str | None, head: str, known: set[str]) -> str:
    if revision is None:
        return "none"
    if revision == head:
        return "head"
    return "behind" if revision in known else "newer"


def check_database(url: str | URL, *, quick: bool = False) -> DatabaseCheck:
    """Check the state database at ``url`` without changing it (SQLite: a read-only
    connection; PostgreSQL: the schema revision only)."""
    from skybatch.db.engine import head_revision, known_revisions, sqlite_path

    head = head_revision()
    known = known_revisions()
    path = sqlite_path(url)
    if path is None:
        return _check_server(url, head, known)
    target = str(path)
    if not path.exists():
        return DatabaseCheck(
            target,
            "sqlite",
            "no file",
            None,
            head,
            "none",
            [f"no database at {path} (a new home: the first command creates it)"],
        )
    problem = sqlite_file_problem(path)
    if problem is not None:
        return DatabaseCheck(target, "sqlite", problem, None, head, "unknown", [problem])
    pragma = "quick_check" if quick else "integrity_check"
    problems: list[str] = []
    revision: str | None = None
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = [str(r[0]) for r in connection.execute(f"PRAGMA {pragma}(20)").fetchall()]
            integrity = "ok" if rows == ["ok"] else "; ".join(rows)
            if rows != ["ok"]:
                problems.append(f"{pragma}: {integrity}")
            try:
                found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
                revision = str(found[0][0]) if len(found) == 1 else None
            except sqlite3.OperationalError:  # no such table: never migrated
                revision = None
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        integrity = f"SQLite reports: {exc}"
        problems.append(integrity)
    state = "unknown" if problems and revision is None else _revision_state(revision, head, known)
    return DatabaseCheck(target, "sqlite", integrity, revision, head, state, problems)


def _check_server(url: str | URL, head: str, known: set[str]) -> DatabaseCheck:
    from skybatch.db.engine import current_revision, make_engine, mask_url

    engine = make_engine(url)
    try:
        revision = current_revision(url, engine=engine)
    finally:
        engine.dispose()
    state = _revision_state(revision, head, known)
    problems: list[str] = []
    integrity = f"not checked ({engine.dialect.name} checks its own pages; see pg_amcheck)"
    return DatabaseCheck(
        mask_url(url), engine.dialect.name, integrity, revision, head, state, problems
    )
