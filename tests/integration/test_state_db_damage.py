"""A damaged, foreign or newer state database is an error saying how to recover, never a
new home: every command refuses it with exit 3 and leaves the file's bytes as they were;
only a missing file is a new home. ``skybatch db check`` reports what is wrong."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from skybatch.cli.main import main
from skybatch.db.engine import HEAD_REVISION
from skybatch.db.state import open_state_db
from skybatch.errors import EXIT_DATABASE
from skybatch.settings import load_settings

COMMANDS = [
    ("campaign", "list"),
    ("report", "--list"),
    ("backbone", "endpoint", "list"),
    ("db", "upgrade"),
    ("db", "current"),
    ("db", "info"),
    ("db", "check"),
]


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state database at head, written by skybatch (WAL checkpointed)."""
    home = tmp_path_factory.mktemp("good") / "home"
    sessions = open_state_db(load_settings(home=home))
    sessions.kw["bind"].dispose()
    return home / "state.sqlite3"


def _empty(path: Path, good: Path) -> None:
    path.write_bytes(b"")


def _text(path: Path, good: Path) -> None:
    path.write_text("campaigns: none\n")


def _truncated(path: Path, good: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damaged_schema_page(path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[3600:4096] = b"\xff" * 496  # the cells of page 1 (the schema table)
    path.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "empty": (_empty, "the file is empty (0 bytes)"),
    "not sqlite": (_text, "the file is not a SQLite database"),
    "truncated": (_truncated, "the file is truncated: its header counts"),
    "damaged page": (_damaged_schema_page, "database disk image is malformed"),
}


def _snapshot(home: Path) -> dict[str, str]:
    out = {}
    for path in sorted(home.iterdir()):
        try:
            out[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
        except FileNotFoundError:  # a -shm file SQLite removed meanwhile
            continue
    return out


def _run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_state_database_is_refused_by_every_command_and_left_as_it_was(
    case: str, good_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, problem = DAMAGE[case]
    home = tmp_path / "home"
    home.mkdir()
    make(home / "state.sqlite3", good_db)
    before = _snapshot(home)
    for command in COMMANDS:
        code, out, err = _run(home, capsys, *command)
        assert code == EXIT_DATABASE, (command, out, err)
        assert problem in err, (command, err)
        assert "restore the file from a backup" in err, (command, err)
        assert "skybatch db check" in err, (command, err)
        assert "no campaigns" not in out
        after = _snapshot(home)
        assert after["state.sqlite3"] == before["state.sqlite3"], command  # nothing written
        if case != "damaged page":  # found before connecting: not even -wal/-shm files
            assert after == before, command
    if case == "empty":
        assert "if this home is new and nothing ever ran in it, delete the empty file" in err


def test_db_check_reports_integrity_and_revision_of_a_sound_database(
    good_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(good_db, home / "state.sqlite3")
    before = _snapshot(home)
    code, out, err = _run(home, capsys, "db", "check")
    assert code == 0, err
    assert "integrity: ok" in out
    assert f"revision:  {HEAD_REVISION} (head)" in out
    code, out, err = _run(home, capsys, "db", "check", "--quick")
    assert code == 0 and "integrity: ok" in out
    assert (home / "state.sqlite3").read_bytes() == good_db.read_bytes()
    assert set(_snapshot(home)) >= set(before)


def _set_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def test_a_database_of_a_newer_skybatch_is_refused_with_advice_that_works(
    good_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = home / "state.sqlite3"
    shutil.copy(good_db, db)
    _set_revision(f"sqlite:///{db}", "0999")
    before = db.read_bytes()
    for command in COMMANDS:
        code, out, err = _run(home, capsys, *command)
        if command in (("db", "current"), ("db", "info")):  # they only describe it
            assert code == 0 and "0999 (newer than this skybatch" in out, err
            continue
        assert code == EXIT_DATABASE, (command, out, err)
        assert "schema revision 0999, which this skybatch does not know" in err, command
        assert "Upgrade skybatch" in err and "the skybatch version that wrote it" in err
        # The advice must not be a command that fails with this same error.
        assert "run `skybatch db upgrade`" not in err, command
        assert db.read_bytes() == before, command


def test_only_a_missing_file_is_a_new_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, out, err = _run(home, capsys, "campaign", "list")
    assert code == 0, err
    assert "no campaigns" in out
    with sqlite3.connect(home / "state.sqlite3") as connection:
        assert connection.execute("PRAGMA quick_check").fetchall() == [("ok",)]


def test_a_server_database_of_a_newer_skybatch_is_refused(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from skybatch.db.engine import upgrade

    upgrade(postgres_url)
    _set_revision(postgres_url, "0999")
    code = main(["--db-url", postgres_url, "campaign", "list"])
    err = capsys.readouterr().err
    assert code == EXIT_DATABASE
    assert "schema revision 0999, which this skybatch does not know" in err
    assert "run `skybatch db upgrade`" not in err
    code = main(["--db-url", postgres_url, "db", "check"])
    out, err = capsys.readouterr()
    assert code == EXIT_DATABASE and "0999 (newer than this skybatch's head" in out


def test_a_file_another_process_is_growing_is_not_called_truncated(
    good_db: Path, tmp_path: Path
) -> None:
    """A WAL checkpoint writes the header with the new page count before the pages
    that grow the file: a new connection opened in between must not refuse the
    database (at 1,000 groups a manager's set-up failed so); a file that stays short
    is still refused."""
    from skybatch.db.integrity import DamagedDatabaseError, check_sqlite_file

    data = good_db.read_bytes()
    path = tmp_path / "state.sqlite3"
    path.write_bytes(data[: len(data) // 2])
    grow = threading.Timer(0.1, path.write_bytes, [data])
    grow.start()
    try:
        check_sqlite_file(path)  # the checkpoint ended within the look again
    finally:
        grow.join()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedDatabaseError, match="truncated"):
        check_sqlite_file(path)
