"""Engines, sessions and programmatic Alembic migrations for the state database.

SQLite (the embedded default) gets its parent directory created, foreign keys, WAL,
a busy timeout and a longer wait with backoff for a database another process locked
(:mod:`skybatch.db.locking`); PostgreSQL is reached through psycopg2. Failures to reach or
migrate a database become :class:`~skybatch.errors.DatabaseError` with the URL
(password masked) and a hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.locking import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_LOCK_WAIT_S,
    LockPolicy,
    StateSessions,
    install_lock_waiting,
)
from skybatch.errors import DatabaseError

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "SQLITE_BUSY_TIMEOUT_S",
    "current_revision",
    "database_errors",
    "head_revision",
    "known_revisions",
    "make_engine",
    "mask_url",
    "session_factory",
    "sqlite_path",
    "stored_revision",
    "upgrade",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = _PACKAGE_DIR / "alembic.ini"
MIGRATIONS_DIR = _PACKAGE_DIR / "migrations"
SQLITE_BUSY_TIMEOUT_S = DEFAULT_BUSY_TIMEOUT_S

_URL_HINT = "Check the URL given with --db-url or SKYBATCH_DB__URL"


def mask_url(url: str | URL) -> str:
    """``url`` with its password replaced by ``***``; safe to show and log."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _parse_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise DatabaseError(
            f"invalid database URL {mask_url(url)!r}: {exc}",
            hint=(
                f"{_URL_HINT}; expected e.g. sqlite:////abs/path/state.sqlite3 or "
                "postgresql://user:password@host:5432/dbname"
            ),
        ) from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite ``url``; ``None`` for other backends and in-memory databases."""
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _sqlite_pragmas(busy_timeout_s: float) -> Any:
    def listener(dbapi_connection: Any, _record: Any) -> None:
        _set_sqlite_pragmas(dbapi_connection, busy_timeout_s)

    return listener


def _set_sqlite_pragmas(dbapi_connection: Any, busy_timeout_s: float) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a killed
        # process loses nothing committed, a power cut may lose the last commits but
        # never corrupts the file. Every job and scheduler loop commits, so FULL
        # (an fsync per commit) would dominate short jobs.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    finally:
        cursor.close()


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    pool_pre_ping: bool = True,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
) -> Engine:
    """Create an engine for ``url`` (SQLite or PostgreSQL); does not connect yet.

    On SQLite a statement waits ``busy_timeout_s`` for another process's write lock,
    and every statement and ``begin()`` transaction keeps trying with backoff for up
    to ``lock_wait_s`` in all (:mod:`skybatch.db.locking`).

    Raises:
        DatabaseError: the URL is malformed, names an unknown dialect or a driver that
            is not installed, or the SQLite directory cannot be created.
    """
    parsed = _parse_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if path is not None and path.exists() and path.stat().st_size > 0:
            from skybatch.db.integrity import check_sqlite_file

            check_sqlite_file(path)  # (an empty file is judged under the migration lock)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"cannot create the directory of SQLite database {path}: {exc}",
                    where=mask_url(parsed),
                    hint="Choose a writable location with --home/SKYBATCH_HOME or --db-url",
                ) from exc
        connect_args["timeout"] = busy_timeout_s
    try:
        engine = create_engine(
            parsed, echo=echo, pool_pre_ping=pool_pre_ping, connect_args=connect_args
        )
    except sqlalchemy.exc.NoSuchModuleError as exc:
        raise DatabaseError(
            f"unsupported database URL {mask_url(parsed)!r}: no SQLAlchemy dialect "
            f"{parsed.drivername!r}",
            hint=f"{_URL_HINT}; skybatch supports sqlite:// and postgresql:// URLs",
        ) from exc
    except ImportError as exc:
        raise DatabaseError(
            f"the database driver for {mask_url(parsed)!r} is not installed: {exc}",
            hint=(
                "skybatch supports sqlite:// and postgresql:// URLs; for PostgreSQL "
                "install the driver: pip install 'skybatch[postgres]'"
            ),
        ) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_s))
        install_lock_waiting(engine, LockPolicy(busy_timeout_s, lock_wait_s))
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay usable after commit, and
    ``begin()`` transactions wait out a locked SQLite database
    (:class:`~skybatch.db.locking.StateSessions`)."""
    return StateSessions(bind=engine, expire_on_commit=False)


@contextmanager
def database_errors(url: str | URL, action: str = "use") -> Iterator[None]:
    """Turn SQLAlchemy and driver errors raised inside the block into DatabaseError."""
    try:
        yield
    except DatabaseError:
        raise
    except sqlalchemy.exc.SQLAlchemyError as exc:
        from skybatch.db.integrity import corruption_error

        damaged = corruption_error(exc, sqlite_path(url) or mask_url(url))
        if damaged is not None:
            raise damaged from exc
        if isinstance(exc, sqlalchemy.exc.OperationalError):
            raise DatabaseError(
                f"cannot {action} database {mask_url(url)}: {_first_line(exc.orig or exc)}",
                hint=(
                    "Check that the database server is running and reachable and that the "
                    f"user, password and database name are right. {_URL_HINT}"
                ),
            ) from exc
        raise DatabaseError(
            f"cannot {action} database {mask_url(url)}: {_first_line(exc)}",
            hint=(
                "If the schema is missing or old, run `skybatch db upgrade`; "
                "run with --log-level DEBUG for details"
            ),
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


#: The newest migration revision, as a constant: opening the state database compares
#: it with the database's own (one small query) without importing alembic, which
#: costs a command ~0.3 s. A test checks it against the migrations' head.
HEAD_REVISION = "0008"


def stored_revision(engine: Engine) -> str | None:
    """The revision recorded in the database's ``alembic_version`` table (None if none),
    read with plain SQL."""
    from sqlalchemy import text

    from skybatch.db.integrity import corruption_error

    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except sqlalchemy.exc.DBAPIError as exc:  # no such table: never migrated
        damaged = corruption_error(exc, sqlite_path(engine.url) or mask_url(engine.url))
        if damaged is not None:
            raise damaged from exc
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def head_revision() -> str:
    """The newest migration revision shipped with this version of skybatch."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise DatabaseError("no migrations found", where=str(MIGRATIONS_DIR))
    return head


def known_revisions() -> set[str]:
    """Every migration revision this version of skybatch ships."""
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def check_known_revision(url: str | URL, revision: str | None) -> None:
    """Raise :class:`~skybatch.db.integrity.NewerSchemaError` if ``revision`` (the
    database's) is not one this skybatch ships: a newer skybatch migrated it."""
    if revision is not None and revision not in known_revisions():
        from skybatch.db.integrity import newer_schema_error

        raise newer_schema_error(mask_url(url), revision, head_revision())


def upgrade(url: str | URL, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Migrate the database at ``url`` to ``revision``; a no-op when already there.

    Args:
        url: Database URL (used for messages and to make an engine if none is given).
        revision: Alembic revision to reach (``"head"`` by default).
        engine: An existing engine for ``url``, reused instead of creating one.
    """
    import alembic.command
    import alembic.util

    own_engine = engine is None
    engine = engine or make_engine(url)
    try:
        check_known_revision(url, current_revision(url, engine=engine))
        with database_errors(url, "migrate"), engine.begin() as connection:
            alembic.command.upgrade(_alembic_config(connection), revision)
    except alembic.util.CommandError as exc:
        raise DatabaseError(
            f"cannot migrate database {mask_url(url)} to revision {revision!r}: {exc}",
            hint=f"Use 'head' or a known revision (newest: {head_revision()})",
        ) from exc
    finally:
        if own_engine:
            engine.dispose()


def current_revision(url: str | URL, *, engine: Engine | None = None) -> str | None:
    """The revision the database at ``url`` is migrated to; ``None`` if never migrated."""
    from alembic.runtime.migration import MigrationContext

    own_engine = engine is None
    engine = engine or make_engine(url)
    try:
        with database_errors(url, "read"), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if own_engine:
            engine.dispose()
