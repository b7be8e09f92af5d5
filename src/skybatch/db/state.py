"""Opening the state database for a command: migrated, or a clear error saying how."""

from __future__ import annotations

import fcntl
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.engine import (
    HEAD_REVISION,
    current_revision,
    head_revision,
    make_engine,
    mask_url,
    session_factory,
    sqlite_path,
    stored_revision,
    upgrade,
)
from skybatch.errors import DatabaseError
from skybatch.settings import Settings

__all__ = ["open_state_db"]


def open_state_db(settings: Settings) -> sessionmaker[Session]:
    """Sessions on the state database at the newest schema.

    The embedded SQLite database is created and migrated on first use (it belongs to
    this skybatch installation). A server database (PostgreSQL) is never migrated
    implicitly: when it is behind, the error says to run ``skybatch db upgrade``.
    """
    url = settings.database_url()
    engine = make_engine(url, echo=settings.db.echo, pool_pre_ping=settings.db.pool_pre_ping)
    if stored_revision(engine) == HEAD_REVISION:
        return session_factory(engine)  # the usual case, without alembic
    head = head_revision()
    current = current_revision(url, engine=engine)
    if current != head:
        db_path = sqlite_path(url)
        if db_path is not None:
            # Two commands starting together on a fresh home must not both migrate:
            # one does, under an exclusive lock; the other then finds it at head.
            lock = Path(f"{db_path}.migrate.lock")
            lock.parent.mkdir(parents=True, exist_ok=True)
            with open(lock, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
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
