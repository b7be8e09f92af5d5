"""Commands open the state database migrated, and record themselves in `operations`."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from skybatch.cli.main import main
from skybatch.db.engine import (
    HEAD_REVISION,
    current_revision,
    head_revision,
    make_engine,
    stored_revision,
)
from skybatch.db.models import Operation
from skybatch.db.state import open_state_db
from skybatch.errors import DatabaseError
from skybatch.settings import load_settings


def test_embedded_database_is_created_and_migrated_on_first_use(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    assert not (tmp_path / "home" / "state.sqlite3").exists()
    sessions = open_state_db(settings)
    assert current_revision(settings.database_url()) == head_revision()
    with sessions() as session:
        assert session.scalars(select(Operation)).all() == []


def test_the_head_revision_constant_is_the_migrations_head(tmp_path: Path) -> None:
    # Opening a database compares it with HEAD_REVISION without alembic: a new
    # migration must update the constant, or every command would migrate again.
    assert head_revision() == HEAD_REVISION
    settings = load_settings(home=tmp_path / "home")
    open_state_db(settings)
    engine = make_engine(settings.database_url())
    try:
        assert stored_revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()
    never = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        assert stored_revision(never) is None
    finally:
        never.dispose()


def test_commands_starting_together_on_a_fresh_home_all_get_a_migrated_database(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from skybatch.settings import load_settings; "
        "from skybatch.db.state import open_state_db; "
        "open_state_db(load_settings(home=sys.argv[1]))"
    )
    home = str(tmp_path / "home")
    procs = [
        subprocess.Popen([sys.executable, "-c", code, home], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert current_revision(load_settings(home=home).database_url()) == head_revision()


def test_a_new_server_database_is_migrated_on_first_use(postgres_url: str) -> None:
    sessions = open_state_db(load_settings(db={"url": postgres_url}))
    assert current_revision(postgres_url) == head_revision()
    with sessions() as session:
        assert session.scalars(select(Operation)).all() == []


def test_a_missing_server_database_is_created_and_migrated(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    missing = make_url(postgres_url)
    missing = missing.set(database=f"{missing.database}_new")
    url = missing.render_as_string(hide_password=False)
    try:
        open_state_db(load_settings(db={"url": url}))
        assert current_revision(url) == head_revision()
    finally:
        admin = create_engine(missing.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{missing.database}" WITH (FORCE)'))
        admin.dispose()


def test_server_database_behind_head_is_refused_with_the_fix(postgres_url: str) -> None:
    from skybatch.db.engine import upgrade

    upgrade(postgres_url, "0005")
    with pytest.raises(DatabaseError) as info:
        open_state_db(load_settings(db={"url": postgres_url}))
    assert "skybatch db upgrade" in str(info.value)
    assert current_revision(postgres_url) == "0005", "nothing was migrated implicitly"


def test_a_server_database_holding_other_tables_is_refused(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE dataset (id int)"))
    engine.dispose()
    with pytest.raises(DatabaseError) as info:
        open_state_db(load_settings(db={"url": postgres_url}))
    assert "holds tables of something else (dataset)" in info.value.message
    assert info.value.where == "SKYBATCH_DB__URL"
    assert current_revision(postgres_url) is None


def test_a_server_database_at_a_newer_revision_is_refused(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text

    open_state_db(load_settings(db={"url": postgres_url}))
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseError) as info:
        open_state_db(load_settings(db={"url": postgres_url}))
    assert "9999" in str(info.value)


def test_demo_init_is_recorded_as_succeeded_or_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    target = tmp_path / "survey"
    target.mkdir()
    (target / "keep.txt").write_text("not a survey")
    assert main(["--home", str(home), "demo", "init", str(target)]) == 2
    capsys.readouterr()
    sessions = open_state_db(load_settings(home=home))
    with sessions() as session:
        rows = session.scalars(select(Operation)).all()
    assert [(r.command, r.status) for r in rows] == [("demo init", "failed")]
    assert "not an empty directory" in (rows[0].message or "")
    assert rows[0].arguments["directory"] == str(target)
    assert (target / "keep.txt").read_text() == "not a survey"


def test_commands_starting_together_on_a_new_server_database_migrate_it_once(
    postgres_url: str,
) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from skybatch.settings import load_settings; "
        "from skybatch.db.state import open_state_db; "
        "open_state_db(load_settings(db={'url': sys.argv[1]}))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert current_revision(postgres_url) == head_revision()
