"""The state database on SQLite and PostgreSQL: migrations, audit log, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from skybatch.cli.main import main
from skybatch.db.engine import (
    current_revision,
    head_revision,
    make_engine,
    session_factory,
    upgrade,
)
from skybatch.db.models import Meta, Operation
from skybatch.db.operations import record_operation
from skybatch.db.schema import metadata
from skybatch.errors import DatabaseError

BAD_URL = "postgresql://nouser:s3cret@127.0.0.1:1/none"
MASKED_BAD_URL = "postgresql://nouser:***@127.0.0.1:1/none"


def test_head_is_the_newest_migration_file() -> None:

    versions_dir = Path(__file__).parents[2] / "src/skybatch/db/migrations/versions"
    newest = max(p.name[:4] for p in versions_dir.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert head_revision() == newest


def test_upgrade_creates_the_tables(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    engine = make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"skybatch_meta", "operations", "alembic_version"} <= tables
        indexes = {ix["name"] for ix in inspect(engine).get_indexes("operations")}
        assert "ix_operations_started_at" in indexes
        assert inspect(engine).get_pk_constraint("operations")["name"] in (
            "pk_operations",
            None,  # SQLite does not report primary key names
        )
    finally:
        engine.dispose()


def test_migrations_match_the_models(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with session_factory(engine).begin() as session:
            session.add(Meta(key="marker", value="kept"))
        upgrade(db_url)
        assert current_revision(db_url, engine=engine) == head_revision()
        with session_factory(engine)() as session:
            assert session.get(Meta, "marker") is not None
    finally:
        engine.dispose()


def test_record_operation(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = session_factory(engine)
    try:
        with record_operation(factory, "campaign submit", {"file": tmp_path, "n": 2}) as op:
            with factory() as session:  # committed before the work runs
                running = session.get(Operation, op.id)
                assert running is not None
                assert running.status == "running"
                assert running.finished_at is None
            op.message = "submitted 2 steps"

        with (
            pytest.raises(ValueError, match="no such pipeline"),
            record_operation(factory, "campaign submit", {"file": "bad.yaml"}),
        ):
            raise ValueError("no such pipeline")

        with factory() as session:
            rows = session.scalars(select(Operation).order_by(Operation.id)).all()
        assert [(r.command, r.status) for r in rows] == [
            ("campaign submit", "succeeded"),
            ("campaign submit", "failed"),
        ]
        succeeded, failed = rows
        assert succeeded.arguments == {"file": str(tmp_path), "n": 2}
        assert succeeded.message == "submitted 2 steps"
        assert succeeded.finished_at is not None
        assert failed.message == "no such pipeline"
        assert failed.finished_at is not None
        assert failed.started_at <= failed.finished_at
    finally:
        engine.dispose()


def test_status_is_constrained(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with (
            pytest.raises(IntegrityError, match=r"ck_operations_status|CHECK constraint"),
            engine.begin() as connection,
        ):
            connection.execute(
                text(
                    "INSERT INTO operations (command, arguments, status, started_at) "
                    "VALUES ('x', '{}', 'exploded', CURRENT_TIMESTAMP)"
                )
            )
    finally:
        engine.dispose()


def test_cli_upgrade_current_info(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db-url", db_url, "db", "current"]) == 0
    assert capsys.readouterr().out.startswith("none")

    assert main(["--db-url", db_url, "db", "upgrade"]) == 0
    assert f"upgraded from empty to revision {head_revision()}" in capsys.readouterr().out

    assert main(["--db-url", db_url, "db", "upgrade"]) == 0
    assert f"already at revision {head_revision()}" in capsys.readouterr().out

    assert main(["--db-url", db_url, "db", "current"]) == 0
    assert capsys.readouterr().out.strip() == f"{head_revision()} (head)"

    assert main(["--db-url", db_url, "db", "info"]) == 0
    out = capsys.readouterr().out
    assert f"revision: {head_revision()}" in out
    assert "operations: 0 rows" in out
    assert "skybatch_meta: 0 rows" in out


def test_cli_default_database_is_in_home(
    _isolated_skybatch_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "info"]) == 0
    assert "no database at" in capsys.readouterr().out
    assert not (_isolated_skybatch_env / "state.sqlite3").exists()
    assert main(["db", "upgrade"]) == 0
    assert (_isolated_skybatch_env / "state.sqlite3").is_file()


def test_cli_unknown_revision_exits_3(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db-url", sqlite_url, "db", "upgrade", "--revision", "9999"]) == 3
    err = capsys.readouterr().err
    assert "'9999'" in err
    assert f"newest: {head_revision()}" in err


def test_sqlite_engine_settings(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert engine.url.database is not None
        assert Path(engine.url.database).parent.is_dir()
    finally:
        engine.dispose()


def test_unreachable_database_is_a_database_error() -> None:
    with pytest.raises(DatabaseError) as info:
        upgrade(BAD_URL)
    text_ = str(info.value)
    assert MASKED_BAD_URL in text_
    assert "s3cret" not in text_
    assert info.value.hint


def test_cli_unreachable_database_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db-url", BAD_URL, "db", "upgrade"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert MASKED_BAD_URL in err
    assert "s3cret" not in err


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x/y"])
def test_malformed_url_is_a_database_error(url: str) -> None:
    with pytest.raises(DatabaseError, match="database URL"):
        make_engine(url)
