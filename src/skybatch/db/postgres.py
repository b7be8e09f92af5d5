"""PostgreSQL where a database is named (seed steps 1, 7 and 12): a Butler registry, a
reference catalog source, object catalogs, skybatch's own state.

What every such place needs from a server before it writes: the URL recognised
(:func:`is_postgres_url`), the server reached with one clear error when it is not
(:func:`connect_error`), a database created on first use when the user may
(:func:`ensure_database`), and, for a Butler registry, the ``btree_gist`` extension
the daf_butler PostgreSQL backend requires, created when the user may, with how to
get it when not (:func:`ensure_btree_gist`), and a schema of its own
(:func:`schema_exists`, :func:`drop_schema`).
"""

from __future__ import annotations

import re
from typing import Any

from skybatch.errors import InputError

__all__ = [
    "connect_error",
    "drop_schema",
    "ensure_btree_gist",
    "ensure_database",
    "is_postgres_url",
    "looks_like_url",
    "schema_exists",
]

#: ``scheme://`` or ``scheme:/`` at the start (a path that click or pathlib already
#: collapsed keeps one slash).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def looks_like_url(text: str) -> bool:
    """Whether ``text`` is a URL (``postgresql://...``, ``sqlite:///...``), not a path."""
    return bool(_URL.match(text))


def is_postgres_url(text: str) -> bool:
    """Whether ``text`` is a PostgreSQL SQLAlchemy URL (``postgresql[+driver]://``)."""
    return text.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _engine(url: str, **kw: Any) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(parsed, connect_args={"connect_timeout": 5}, **kw)


def _masked(url: str) -> str:
    from skybatch.db.engine import mask_url

    return mask_url(url)


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    return (str(inner).strip().splitlines() or [type(inner).__name__])[0]


def connect_error(url: str, exc: BaseException, *, where: str) -> InputError:
    """The error for a server that did not let us in (unreachable, no such database,
    refused login), naming the option or field that gave the URL."""
    return InputError(
        f"cannot connect to the PostgreSQL database {_masked(url)}: {_first_line(exc)}",
        where=where,
        hint="check that the server runs and the user, host, port and database name are "
        "right (e.g. postgresql://user@host:5432/dbname; passwords belong in "
        "~/.pgpass or ~/.lsst/db-auth.yaml, not in the URL)",
    )


def ensure_database(url: str, *, where: str) -> bool:
    """Create the database ``url`` names if it does not exist (connecting to the
    server's ``postgres`` database to do it); True if it was created.

    Raises:
        InputError: the server cannot be reached, or the database is missing and this
            user may not create it (the error says how to).
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = _engine(url)
    try:
        with engine.connect():
            return False
    except sqlalchemy.exc.OperationalError as exc:
        if not name or f'database "{name}" does not exist' not in str(exc):
            raise connect_error(url, exc, where=where) from None
    finally:
        engine.dispose()
    admin = _engine(make_url(url).set(database="postgres").render_as_string(False))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
    except sqlalchemy.exc.ProgrammingError as exc:
        if "already exists" in str(exc):  # another process made it meanwhile
            return False
        raise InputError(
            f"the PostgreSQL database {name!r} does not exist and cannot be created: "
            f"{_first_line(exc)}",
            where=where,
            hint=f'ask the server\'s administrator to run `CREATE DATABASE "{name}";` '
            "(owned by your user), or give an existing database",
        ) from None
    except sqlalchemy.exc.OperationalError as exc:
        raise connect_error(url, exc, where=where) from None
    finally:
        admin.dispose()
    return True


def ensure_btree_gist(url: str, *, where: str) -> None:
    """Make sure database ``url`` has the ``btree_gist`` extension a Butler registry
    needs: created if missing and this user may (a trusted extension: any user with
    CREATE on the database).

    Raises:
        InputError: unreachable, or missing and not creatable (says who can add it).
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url

    engine = _engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            present = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM pg_extension WHERE extname = 'btree_gist'")
            ).scalar()
            if present:
                return
            try:
                connection.execute(sqlalchemy.text("CREATE EXTENSION IF NOT EXISTS btree_gist"))
            except sqlalchemy.exc.DBAPIError as exc:
                database = make_url(url).database
                raise InputError(
                    f"the PostgreSQL database {database!r} lacks the btree_gist extension a "
                    f"Butler registry needs, and this user cannot create it: {_first_line(exc)}",
                    where=where,
                    hint="ask the database's owner or a superuser to run "
                    f"`psql -d {database} -c 'CREATE EXTENSION btree_gist;'` once, then retry",
                ) from None
    except sqlalchemy.exc.OperationalError as exc:
        raise connect_error(url, exc, where=where) from None
    finally:
        engine.dispose()


def schema_exists(url: str, schema: str, *, where: str) -> bool:
    """Whether database ``url`` has a schema (namespace) called ``schema``."""
    import sqlalchemy

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                sqlalchemy.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                {"s": schema},
            ).first()
            return found is not None
    except sqlalchemy.exc.OperationalError as exc:
        raise connect_error(url, exc, where=where) from None
    finally:
        engine.dispose()


def drop_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (what a failed build made); never raises."""
    import sqlalchemy

    engine = _engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            quoted = connection.dialect.identifier_preparer.quote(schema)
            connection.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
    except Exception:  # the build's own error is what matters
        pass
    finally:
        engine.dispose()
