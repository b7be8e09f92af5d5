"""Alembic environment of skybatch's state database.

The database is chosen by the caller, never by ``alembic.ini``: skybatch sets
``config.attributes["connection"]`` (an open SQLAlchemy connection) or
``config.attributes["url"]``; developers running the ``alembic`` command pass
``-x url=...``. SQLite runs in batch mode so that ALTERs work there too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection, make_url

from skybatch.db.schema import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise RuntimeError(
            "no database URL for the skybatch migrations: run them with "
            "`skybatch db upgrade` or pass `-x url=...` to the alembic command"
        )
    return str(url)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit the migration SQL for ``--sql`` runs without connecting."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection, or on a fresh engine for ``url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from skybatch.db.engine import make_engine

    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
