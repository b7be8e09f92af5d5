"""``skybatch manager``: the campaign manager daemon, in the foreground.

``skybatch manager run`` advances every active campaign (see
:mod:`skybatch.campaign.manager`): expands steps into groups, runs groups through the
execution driver, records every state change, cleans up campaigns that ended. It
keeps polling for new submissions and operator actions until interrupted; with
``--once`` it stops when nothing more can run. A killed manager is simply started
again: it resumes the groups that were running.
"""

from __future__ import annotations

import signal
from types import FrameType

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import DataError

__all__ = ["manager"]


@click.group()
def manager() -> None:
    """The campaign manager: runs the submitted campaigns."""


@manager.command("run")
@click.option("--once", is_flag=True, help="Stop when nothing more can run now.")
@click.option(
    "--poll-s",
    type=values.finite(0.1, max=86400.0),
    default=10.0,
    show_default=True,
    help="Seconds between passes when idle.",
)
@click.option(
    "--max-groups",
    type=values.POSITIVE,
    default=64,
    show_default=True,
    help="Most groups in flight at once, over all campaigns (each step also keeps "
    "to its max_running_groups).",
)
@pass_cli_context
def run_cmd(cli: CliContext, once: bool, poll_s: float, max_groups: int) -> None:
    """Run the campaign manager in the foreground (Ctrl-C or SIGTERM stops it).

    Only one manager runs per skybatch home. Stopping it at any point is safe: the
    next start resumes what was running.

    With --once the exit status is 0 when no campaign failed during the pass and 5
    when one did; the failed campaigns are then named on standard error, each with
    the commands that show why and retry it.

    \b
    Example:
      skybatch campaign submit campaigns/demo.yaml
      skybatch manager run --once
    """
    from rich.console import Console

    from skybatch.campaign.lock import manager_lock
    from skybatch.campaign.manager import Manager
    from skybatch.campaign.progress import ProgressDisplay
    from skybatch.db.state import open_state_db

    console = Console(stderr=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with (
            manager_lock(cli.settings),
            ProgressDisplay(open_state_db(cli.settings), console=console) as display,
        ):

            def say(text: str) -> None:
                console.print(text, markup=False, highlight=False, soft_wrap=True)

            with Manager(
                cli.settings, say=say, max_groups=max_groups, progress=display.update
            ) as runner:
                if once:
                    report = runner.run_pass()
                    display.update(force=True)
                    say(
                        f"manager pass done: {report.groups_run} group run(s), "
                        f"{len(report.succeeded)} succeeded, {len(report.failed)} failed"
                    )
                    if report.failed_campaigns:
                        raise _campaigns_failed(report.failed_campaigns)
                else:
                    say(f"campaign manager running (pass every {poll_s:g} s)")
                    runner.run_forever(poll_s)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _campaigns_failed(failed: list[tuple[int, str, str]]) -> DataError:
    """The error ``manager run --once`` exits with (status 5) when campaigns failed."""
    names = "; ".join(f"campaign {id_} ({name}): {why}" for id_, name, why in failed)
    first = failed[0][0]
    return DataError(
        f"{len(failed)} campaign(s) failed: {names}",
        hint=f"see `skybatch campaign report {first}`, fix the cause, then "
        f"`skybatch campaign retry {first}` and `skybatch manager run --once`",
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
