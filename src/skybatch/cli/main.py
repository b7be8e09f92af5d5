"""The ``skybatch`` command group and the one place that maps exceptions to exit codes.

Keep imports here light: ``skybatch --help`` must not load SQLAlchemy or the LSST
stack; commands import what they need inside their functions.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import click

from skybatch import __version__
from skybatch.cli.backbone import backbone
from skybatch.cli.campaign import campaign
from skybatch.cli.context import CliContext
from skybatch.cli.db import db
from skybatch.cli.demo import demo
from skybatch.cli.manager import manager
from skybatch.cli.pilot import pilot
from skybatch.cli.run import report, run
from skybatch.cli.serve import serve
from skybatch.cli.token import token
from skybatch.cli.workflow import workflow
from skybatch.errors import SkybatchError, exit_code_for
from skybatch.logging_setup import configure_logging
from skybatch.settings import load_settings

__all__ = ["CliContext", "cli", "main"]

_log = logging.getLogger("skybatch.cli")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@click.group(name="skybatch", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help=(
        "Minimum level of log messages. Without it the LSST middleware's INFO messages "
        "go only to the run's log file (WORKDIR/run.log); with it they are shown too. "
        "[default: SKYBATCH_LOG__LEVEL, else INFO]"
    ),
)
@click.option(
    "--log-json/--no-log-json",
    default=None,
    help="Write logs as JSON lines. [default: SKYBATCH_LOG__JSON_FORMAT, else no]",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="skybatch home directory. [default: SKYBATCH_HOME, else ~/.skybatch]",
)
@click.option(
    "--db-url",
    metavar="URL",
    default=None,
    help=(
        "State database URL, e.g. postgresql://user@host/skybatch. "
        "[default: SKYBATCH_DB__URL, else SQLite in the home directory]"
    ),
)
@click.version_option(__version__, "--version", prog_name="skybatch")
@click.pass_context
def cli(
    ctx: click.Context,
    log_level: str | None,
    log_json: bool | None,
    home: Path | None,
    db_url: str | None,
) -> None:
    """skybatch: batch processing of astronomical survey campaigns.

    Every option also has a SKYBATCH_* environment variable; options win.
    """
    settings = load_settings(
        home=home,
        db={"url": db_url},
        log={"level": log_level.upper() if log_level else None, "json_format": log_json},
    )
    # The middleware's INFO records show only when a level was asked for.
    asked = "level" in settings.log.model_fields_set
    configure_logging(settings.log.level, settings.log.json_format, middleware=asked)
    ctx.obj = CliContext(settings=settings)


cli.add_command(backbone)
cli.add_command(campaign)
cli.add_command(db)
cli.add_command(demo)
cli.add_command(manager)
cli.add_command(pilot)
cli.add_command(report)
cli.add_command(run)
cli.add_command(serve)
cli.add_command(token)
cli.add_command(workflow)


def _print_error(text: str) -> None:
    click.echo(f"{click.style('error:', fg='red', bold=True)} {text}", err=True)


def _damaged_database(exc: BaseException) -> SkybatchError | None:
    """The state-database error for SQLite saying a file is damaged, wherever a query
    raised it; ``None`` for any other exception."""
    if "sqlalchemy" not in sys.modules:
        return None
    from skybatch.db.integrity import corruption_error

    return corruption_error(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``skybatch`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    This is the only place where exceptions become exit codes (see
    :func:`skybatch.errors.exit_code_for`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="skybatch", standalone_mode=False)
    except click.ClickException as exc:  # UsageError, BadParameter, FileError
        exc.show()
        return exit_code_for(exc)
    except click.exceptions.Abort as exc:
        click.echo("Aborted!", err=True)
        return exit_code_for(exc)
    except KeyboardInterrupt as exc:
        click.echo("Interrupted.", err=True)
        return exit_code_for(exc)
    except SkybatchError as exc:
        _log.debug("traceback of the error below", exc_info=exc)
        _print_error(str(exc))
        return exit_code_for(exc)
    except Exception as exc:
        damaged = _damaged_database(exc)
        if damaged is not None:  # found by a query after the database was opened
            _log.debug("traceback of the error below", exc_info=exc)
            _print_error(str(damaged))
            return exit_code_for(damaged)
        _print_error(f"unexpected {type(exc).__name__}: {exc}")
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            traceback.print_exception(exc, file=sys.stderr)
        else:
            click.echo("run with --log-level DEBUG for the traceback", err=True)
        return exit_code_for(exc)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
