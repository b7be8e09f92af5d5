"""``skybatch db``: create, migrate and inspect skybatch's own state database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from skybatch.cli.context import CliContext, pass_cli_context

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["db"]


@click.group()
def db() -> None:
    """Manage skybatch's own state database.

    The database is an embedded SQLite file under the skybatch home
    (SKYBATCH_HOME/state.sqlite3) unless --db-url or SKYBATCH_DB__URL points
    elsewhere, e.g. postgresql://user:password@host:5432/skybatch.
    """


def _engine(cli: CliContext) -> Engine:
    from skybatch.db.engine import make_engine

    settings = cli.settings
    return make_engine(
        settings.database_url(), echo=settings.db.echo, pool_pre_ping=settings.db.pool_pre_ping
    )


def _missing_sqlite_file(url: str) -> str | None:
    """A message if ``url`` is a SQLite file that does not exist yet (read-only commands);
    DamagedDatabaseError if it exists but is empty or not a sound SQLite file."""
    from skybatch.db.engine import sqlite_path
    from skybatch.db.integrity import check_sqlite_file

    path = sqlite_path(url)
    if path is not None and not path.exists():
        return f"no database at {path} yet; run `skybatch db upgrade` to create it"
    if path is not None:
        check_sqlite_file(path)
    return None


@db.command()
@click.option(
    "--revision",
    default="head",
    show_default=True,
    metavar="REV",
    help="Migration revision to reach: 'head' (newest) or a revision id such as 0001.",
)
@pass_cli_context
def upgrade(cli: CliContext, revision: str) -> None:
    """Create the state database or migrate it to the newest schema.

    Safe to run repeatedly: a database already at REV is left unchanged. Run it
    after installing a new skybatch version.
    """
    from skybatch.db.engine import current_revision, mask_url
    from skybatch.db.engine import upgrade as run_upgrade

    url = cli.settings.database_url()
    _missing_sqlite_file(url)  # only a missing file is created; an empty one is refused
    engine = _engine(cli)
    try:
        before = current_revision(url, engine=engine)
        run_upgrade(url, revision, engine=engine)
        after = current_revision(url, engine=engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"{mask_url(url)}: already at revision {after}")
    else:
        click.echo(f"{mask_url(url)}: upgraded from {before or 'empty'} to revision {after}")


@db.command()
@pass_cli_context
def current(cli: CliContext) -> None:
    """Print the schema revision of the state database.

    Prints the revision id, then '(head)' when it is the newest known to this
    skybatch, or 'none' for a database that was never migrated.
    """
    from skybatch.db.engine import current_revision, head_revision, known_revisions

    url = cli.settings.database_url()
    missing = _missing_sqlite_file(url)
    if missing:
        click.echo(f"none ({missing})")
        return
    engine = _engine(cli)
    try:
        revision = current_revision(url, engine=engine)
    finally:
        engine.dispose()
    head = head_revision()
    if revision is None:
        click.echo("none (empty database; run `skybatch db upgrade`)")
    elif revision == head:
        click.echo(f"{revision} (head)")
    elif revision not in known_revisions():
        click.echo(
            f"{revision} (newer than this skybatch, whose head is {head}: upgrade skybatch "
            "or use the version that wrote it)"
        )
    else:
        click.echo(f"{revision} (head is {head}; run `skybatch db upgrade`)")


@db.command()
@pass_cli_context
def info(cli: CliContext) -> None:
    """Show the database URL (password masked), schema revision and row counts."""
    from sqlalchemy import func, inspect, select

    from skybatch.db.engine import (
        current_revision,
        database_errors,
        head_revision,
        known_revisions,
        mask_url,
    )
    from skybatch.db.models import Base

    url = cli.settings.database_url()
    click.echo(f"url:      {mask_url(url)}")
    missing = _missing_sqlite_file(url)
    if missing:
        click.echo(f"revision: none ({missing})")
        return
    engine = _engine(cli)
    try:
        revision = current_revision(url, engine=engine)
        click.echo(f"backend:  {engine.dialect.name}")
        head = head_revision()
        newer = revision is not None and revision not in known_revisions()
        note = f"newer than this skybatch, whose head is {head}" if newer else f"head: {head}"
        click.echo(f"revision: {revision or 'none'} ({note})")
        with database_errors(url, "read"), engine.connect() as connection:
            inspector = inspect(connection)
            click.echo("tables:")
            for table in Base.metadata.sorted_tables:
                if inspector.has_table(table.name):
                    count = connection.execute(select(func.count()).select_from(table)).scalar()
                    click.echo(f"  {table.name}: {count} rows")
                else:
                    click.echo(f"  {table.name}: missing (run `skybatch db upgrade`)")
    finally:
        engine.dispose()


@db.command()
@click.option(
    "--quick",
    is_flag=True,
    help="Run SQLite's quick_check (faster, skips index contents) instead of integrity_check.",
)
@pass_cli_context
def check(cli: CliContext, quick: bool) -> None:
    """Check the state database's integrity and schema revision; change nothing.

    SQLite: the file's header and size, then PRAGMA integrity_check (or quick_check)
    on a read-only connection. PostgreSQL: the schema revision (the server checks
    its own pages; see pg_amcheck). Exit status 0 when sound, 3 when not: restore
    the database from a backup (stop every skybatch process using it first).
    """
    from skybatch.db.integrity import check_database, damaged_error, newer_schema_error

    result = check_database(cli.settings.database_url(), quick=quick)
    state = {
        "head": "head",
        "none": "never migrated",
        "unknown": "unreadable",
        "behind": f"behind head {result.head}: run `skybatch db upgrade` after a backup",
        "newer": f"newer than this skybatch's head {result.head}: upgrade skybatch",
    }[result.revision_state]
    click.echo(f"database:  {result.target} ({result.backend})")
    click.echo(f"integrity: {result.integrity}")
    click.echo(f"revision:  {result.revision or 'none'} ({state})")
    if result.problems:
        raise damaged_error(result.target, "; ".join(result.problems))
    if result.revision_state == "newer":
        raise newer_schema_error(result.target, str(result.revision), result.head)
