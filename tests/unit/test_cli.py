"""The skybatch command line: help everywhere, settings errors, exit-code mapping."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from skybatch import __version__
from skybatch.cli.main import cli, main
from skybatch.errors import DatabaseError, ExternalToolError, InputError

SKYBATCH_SCRIPT = Path(sys.executable).parent / "skybatch"


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _command_paths(sub, (*path, name))


ALL_COMMANDS = list(_command_paths(cli))


def test_command_tree_has_the_db_commands() -> None:
    assert {("db", "upgrade"), ("db", "current"), ("db", "info"), ("demo",)} <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "skybatch")
def test_help_works_on_every_command(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: skybatch {' '.join(path)}".rstrip())
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help, f"skybatch {' '.join(path)} has no help text"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-option"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["--log-level", "LOUD", "db", "current"]) == 2


def test_bad_setting_in_env_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKYBATCH_LOG__LEVEL", "LOUD")
    assert main(["db", "current"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "SKYBATCH_LOG__LEVEL" in err


def test_entry_point_bad_setting_exits_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SKYBATCH_DB__ECHO": "maybe"}
    result = subprocess.run(
        [str(SKYBATCH_SCRIPT), "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "SKYBATCH_DB__ECHO" in result.stderr
    assert "'maybe'" in result.stderr


def test_entry_point_unknown_setting_exits_2(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SKYBATCH_DB__URLL": "x"}
    result = subprocess.run(
        [str(SKYBATCH_SCRIPT), "db", "info"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "SKYBATCH_DB__URLL" in result.stderr


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from skybatch.cli.main import main\n"
        "rc = main(['--help'])\n"
        "heavy = {'sqlalchemy', 'alembic', 'lsst', 'numpy', 'astropy', 'scipy', 'pyarrow'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _add_command(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    @click.command("boom")
    def boom() -> None:
        raise exc

    monkeypatch.setitem(cli.commands, "boom", boom)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InputError("bad visit range", where="--visits", hint="Use START:STOP"), 2),
        (DatabaseError("down"), 3),
        (ExternalToolError("sbatch failed", command=["sbatch"], returncode=1), 4),
    ],
)
def test_skybatch_errors_map_to_their_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
) -> None:
    _add_command(monkeypatch, exc)
    assert main(["boom"]) == code
    assert capsys.readouterr().err.startswith(f"error: {exc}")


def test_unexpected_error_exits_1_with_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_command(monkeypatch, RuntimeError("kaboom"))
    assert main(["boom"]) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: kaboom" in err
    assert "run with --log-level DEBUG for the traceback" in err
    assert "Traceback" not in err

    assert main(["--log-level", "DEBUG", "boom"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), click.exceptions.Abort()])
def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    _add_command(monkeypatch, exc)
    assert main(["boom"]) == 130


def test_options_override_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKYBATCH_DB__URL", "sqlite:///env.sqlite3")
    seen = {}

    @click.command("show")
    @click.pass_obj
    def show(obj: object) -> None:
        seen["obj"] = obj

    monkeypatch.setitem(cli.commands, "show", show)
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["--home", str(tmp_path), "--db-url", url, "--log-level", "warning", "show"]) == 0
    from skybatch.cli.context import CliContext

    obj = seen["obj"]
    assert isinstance(obj, CliContext)
    assert obj.settings.home == tmp_path
    assert obj.settings.database_url() == url
    assert obj.settings.log.level == "WARNING"
