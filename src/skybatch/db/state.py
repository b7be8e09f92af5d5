"""Opening the state database for a command: migrated, or a clear error saying how."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.engine import (
    HEAD_REVISION,
    check_known_revision,
    current_revision,
    database_errors,
    head_revision,
    make_engine,
    mask_url,
    session_factory,
    sqlite_path,
    stored_revision,
    upgrade,
)
from skybatch.db.integrity import check_sqlite_file, damaged_error, sqlite_file_problem
from skybatch.db.postgres import is_postgres_url
from skybatch.errors import DatabaseError
from skybatch.settings import Settings

__all__ = ["open_state_db"]

#: Key of the PostgreSQL advisory lock held while a new state database is migrated.
_MIGRATION_LOCK_KEY = 0x5B_BA_7C_40


def _create_postgres(url: str) -> None:
    """Create the PostgreSQL state database if it does not exist yet."""
    from skybatch.db.postgres import ensure_database
    from skybatch.errors import InputError

    try:
        ensure_database(url, where="SKYBATCH_DB__URL")
    except InputError as exc:
        raise DatabaseError(exc.message, where=exc.where, hint=exc.hint) from None


def _migrate_new_postgres(url: str, engine: Engine) -> None:
    """Migrate a PostgreSQL state database that has never been migrated, if it holds
    no tables (a new database); two commands starting together migrate it once (an
    advisory lock). Raises DatabaseError for a database that holds other tables."""
    from sqlalchemy import inspect, text

    with database_errors(url, "migrate"), engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            if current_revision(url, engine=engine) is not None:
                return  # another command migrated it meanwhile
            tables = inspect(connection).get_table_names()
            connection.commit()
            if tables:
                raise DatabaseError(
                    f"state database {mask_url(url)} holds tables of something else "
                    f"({', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}) "
                    "and no skybatch schema",
                    where="SKYBATCH_DB__URL",
                    hint="give skybatch a database of its own (it is created and migrated "
                    "on first use), or `skybatch db upgrade` if these tables are meant to "
                    "share it",
                )
            upgrade(url, engine=engine)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.commit()


def _lock_path(db_path: Path) -> Path:
    return Path(f"{db_path}.migrate.lock")


@contextmanager
def _migration_lock(db_path: Path) -> Iterator[None]:
    """Held while a SQLite state database is created or migrated: two commands
    starting together on a fresh home must not both do it."""
    lock = _lock_path(db_path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _new_or_empty(db_path: Path) -> bool:
    try:
        return db_path.stat().st_size == 0
    except FileNotFoundError:
        return True


def open_state_db(settings: Settings) -> sessionmaker[Session]:
    """Sessions on the state database at the newest schema.

    The embedded SQLite database is created and migrated on first use (it belongs to
    this skybatch installation); only a *missing* file is a new home: an empty,
    foreign, truncated or damaged file, or one a newer skybatch migrated, is an
    error saying how to recover (:mod:`skybatch.db.integrity`), and nothing is
    written to it. A server database (PostgreSQL) is created when missing (if the
    user may) and migrated when new (no tables at all), as a new SQLite file is; one
    that holds other tables is refused, and one behind is never migrated implicitly:
    the error says to run ``skybatch db upgrade`` (after a backup).
    """
    url = settings.database_url()
    db_path = sqlite_path(url)
    if db_path is None and is_postgres_url(url):
        _create_postgres(url)
    if db_path is not None and db_path.exists() and not _lock_path(db_path).exists():
        check_sqlite_file(db_path)  # no creator ever ran: judge it without writing a lock
    if db_path is not None and _new_or_empty(db_path):
        # A new file is created and migrated under the lock, so a file found empty
        # under the lock is not one being created: it is damaged.
        with _migration_lock(db_path):
            if db_path.exists():
                problem = sqlite_file_problem(db_path)
                if problem is not None:
                    raise damaged_error(str(db_path), problem)
            else:
                upgrade(url)
    engine = make_engine(
        url,
        echo=settings.db.echo,
        pool_pre_ping=settings.db.pool_pre_ping,
        busy_timeout_s=settings.db.busy_timeout_s,
        lock_wait_s=settings.db.lock_wait_s,
    )
    try:
        if stored_revision(engine) == HEAD_REVISION:
            return session_factory(engine)  # the usual case, without alembic
        head = head_revision()
        current = current_revision(url, engine=engine)
        check_known_revision(url, current)
    except BaseException:
        engine.dispose()
        raise
    if current is None and db_path is None and is_postgres_url(url):
        _migrate_new_postgres(url, engine)
    elif current != head:
        if db_path is not None:
            with _migration_lock(db_path):
                if current_revision(url, engine=engine) != head:
                    upgrade(url, engine=engine)
        else:
            engine.dispose()
            raise DatabaseError(
                f"state database {mask_url(url)} is at revision {current or 'none'}, "
                f"this skybatch needs {head}",
                where="SKYBATCH_DB__URL",
                hint="run `skybatch db upgrade` (after a backup) and retry",
            )
    return session_factory(engine)
