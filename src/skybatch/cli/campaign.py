"""``skybatch campaign``: check, submit and operate campaigns.

``validate`` and ``schema`` write nothing (``validate`` reads the campaign's Butler
repository and loads its pipelines, which runs their ``config: python:`` blocks);
``submit`` stores a campaign for the manager (``skybatch manager run``); ``list``,
``status``, ``report``, ``history`` and ``failures`` read the state database through
:mod:`skybatch.read`; ``pause``, ``resume``, ``retry`` and ``cancel`` are the
operator's transitions of the campaign state machine (``skybatch campaign states``
prints it). The campaign models (pydantic, LSST middleware) are imported inside the
commands so that ``skybatch --help`` stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import InputError

__all__ = ["campaign"]


@click.group()
def campaign() -> None:
    """Campaigns: pipelines, inputs, calibrations and steps, in one YAML file."""


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check the campaign FILE and report every problem; write nothing.

    Reads FILE with its includes and ${VAR} substitutions, checks it against its
    pipelines and its Butler repository (read-only: collections, dimensions) and
    reports every problem as FILE:LINE:COLUMN: FIELD: what is wrong. What to do (exit
    status 2). No skybatch database or file is written.

    Loading the pipelines runs code: pipe_base imports their tasks and runs their
    `config: python:` blocks. Campaign files and pipelines are code: validate only
    those you would trust to run.

    \b
    Example:
      skybatch campaign validate campaigns/demo.yaml
    """
    from skybatch.campaign.load import load_campaign

    loaded = load_campaign(file)
    names = ", ".join(step.name for step in loaded.steps)
    count = len(loaded.steps)
    click.echo(
        f"{file}: valid campaign {loaded.name} with {count} step{'s' if count != 1 else ''} "
        f"({names})"
    )


@campaign.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the schema to this file instead of standard output.",
)
def schema(output: Path | None) -> None:
    """Print the JSON schema of campaign files (for editors and validators).

    \b
    Example (refresh the schema shipped with skybatch):
      skybatch campaign schema --output src/skybatch/campaign/campaign.schema.json
    """
    from skybatch.campaign.schema import schema_text

    text = schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    partial = output.with_name(f".{output.name}.skybatch-part")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(
            f"cannot write the schema to {output}: {exc.strerror or exc}",
            where=str(output),
            hint="give a writable file path with --output",
        ) from None
    click.echo(f"wrote the campaign schema to {output}")


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="Print only the campaign id.")
@pass_cli_context
def submit(cli: CliContext, file: Path, quiet: bool) -> None:
    """Validate the campaign FILE, store it and archive its files; print its id.

    The manager (`skybatch manager run`) then runs it. The same file submitted twice
    is two campaigns, each with its own output runs (CAMPAIGN/ID/STEP/GROUP). An
    invalid FILE is reported as `validate` does, and nothing is written.

    \b
    Example:
      skybatch campaign submit campaigns/demo.yaml
    """
    from skybatch.campaign.load import load_campaign

    loaded = load_campaign(file)  # refused before the state database is even imported
    from skybatch.campaign.submit import submit_campaign

    with _recorded(cli, "campaign submit", file=file) as op:
        submitted = submit_campaign(cli.settings, file, campaign=loaded)
        op.message = f"campaign {submitted.id}"
    if quiet:
        click.echo(submitted.id)
        return
    click.echo(
        f"campaign {submitted.id} submitted ({submitted.name}): steps {', '.join(submitted.steps)}"
    )
    click.echo(f"  provenance: {len(submitted.provenance)} file(s) archived and registered")
    click.echo("  run it:     skybatch manager run")
    click.echo(f"  follow it:  skybatch campaign status {submitted.id}")


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def list_cmd(cli: CliContext, as_json: bool) -> None:
    """List the campaigns with their state and groups per state."""
    from skybatch.campaign.render import format_list
    from skybatch.read.campaigns import list_campaigns
    from skybatch.read.models import to_json

    with _sessions(cli)() as session:
        data = list_campaigns(session)
    click.echo(to_json(data) if as_json else format_list(data))


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def status(cli: CliContext, campaign_id: int, as_json: bool) -> None:
    """State of campaign ID and of each step: groups and jobs per state."""
    from skybatch.campaign.render import format_status
    from skybatch.read.campaigns import campaign_status
    from skybatch.read.models import to_json

    with _sessions(cli)() as session:
        data = campaign_status(session, campaign_id)
    click.echo(to_json(data) if as_json else format_status(data))


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def report(cli: CliContext, campaign_id: int, as_json: bool) -> None:
    """Per step, group and task: quanta expected, succeeded, failed and running, CPU
    hours and peak memory; and the failed jobs with exit code and first error line."""
    from skybatch.campaign.render import format_report
    from skybatch.read.campaigns import campaign_report
    from skybatch.read.models import to_json

    with _sessions(cli)() as session:
        data = campaign_report(session, campaign_id)
    click.echo(to_json(data) if as_json else format_report(data))


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@click.option("--limit", type=values.POSITIVE, default=None, help="Only the newest N.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def history(cli: CliContext, campaign_id: int, limit: int | None, as_json: bool) -> None:
    """Every state change of campaign ID, its steps and groups: when, who, why."""
    from skybatch.campaign.render import format_history
    from skybatch.read.campaigns import campaign_history
    from skybatch.read.models import to_json

    with _sessions(cli)() as session:
        data = campaign_history(session, campaign_id, limit)
    click.echo(to_json(data) if as_json else format_history(data))


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@click.option("--step", default=None, help="Only this step's failed jobs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def failures(cli: CliContext, campaign_id: int, step: str | None, as_json: bool) -> None:
    """The held and failed jobs of campaign ID grouped by cause: failure kind and error
    signature (the first error line with ids, paths and numbers masked), most first."""
    from skybatch.read.failures import failure_signatures
    from skybatch.read.models import to_json

    with _sessions(cli)() as session:
        data = failure_signatures(session, campaign_id, step=step)
    if as_json:
        click.echo(to_json(data))
        return
    if not data:
        click.echo(f"campaign {campaign_id}: no held or failed jobs")
    for sig in data:
        click.echo(f"{sig.count} job(s), {sig.failure or 'failed'}: {sig.signature}")
        click.echo(f"  tasks: {', '.join(sig.tasks)}; steps: {', '.join(sig.steps)}")
        if sig.advice:
            click.echo(f"  what to do: {sig.advice}")
        for job in sig.examples:
            click.echo(f"  e.g. {job.step}/{job.group} {job.job}: {job.error}")


@campaign.command()
def states() -> None:
    """Print the state machine: every allowed transition and who makes it."""
    from skybatch.campaign.states import state_table_text

    click.echo(state_table_text())


_REASON = click.option("--reason", default=None, help="Why (kept in the campaign's history).")


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@_REASON
@pass_cli_context
def pause(cli: CliContext, campaign_id: int, reason: str | None) -> None:
    """Start no more groups of campaign ID; running groups finish."""
    from skybatch.campaign.actions import pause_campaign

    _act(cli, "pause", campaign_id, pause_campaign, "paused", reason=reason)


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@_REASON
@pass_cli_context
def resume(cli: CliContext, campaign_id: int, reason: str | None) -> None:
    """Let the manager go on with the paused campaign ID."""
    from skybatch.campaign.actions import resume_campaign

    _act(cli, "resume", campaign_id, resume_campaign, "resumed", reason=reason)


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@_REASON
@pass_cli_context
def cancel(cli: CliContext, campaign_id: int, reason: str | None) -> None:
    """Cancel campaign ID: nothing more runs; its cache files are cleaned up."""
    from skybatch.campaign.actions import cancel_campaign

    _act(cli, "cancel", campaign_id, cancel_campaign, "cancelled", reason=reason)


@campaign.command()
@click.argument("campaign_id", metavar="ID", type=values.DATABASE_ID)
@click.option("--step", default=None, help="Only this step's failed work.")
@click.option(
    "--memory-mb",
    type=values.MEMORY_MB,
    default=None,
    help="Raise the memory request of the failed jobs (and of later jobs of the step).",
)
@click.option(
    "--retries",
    type=values.ATTEMPTS,
    default=None,
    help="Attempts each failed job gets now (and jobs of the step later).",
)
@_REASON
@pass_cli_context
def retry(
    cli: CliContext,
    campaign_id: int,
    step: str | None,
    memory_mb: int | None,
    retries: int | None,
    reason: str | None,
) -> None:
    """Run the failed work of campaign ID again.

    Failed groups resume their runs (held jobs get new attempts, succeeded jobs are
    kept; memory a job was escalated to is kept); failed steps go on.

    \b
    Example:
      skybatch campaign retry 3 --step step1 --memory-mb 4096
    """
    from skybatch.campaign.actions import retry_campaign

    _act(
        cli,
        "retry",
        campaign_id,
        retry_campaign,
        "retried",
        step=step,
        memory_mb=memory_mb,
        retries=retries,
        reason=reason,
    )


def _sessions(cli: CliContext) -> Any:
    from skybatch.db.state import open_state_db

    return open_state_db(cli.settings)


@contextmanager
def _recorded(cli: CliContext, command: str, **arguments: Any) -> Iterator[Any]:
    """Record the command in the state database's operations log."""
    from skybatch.db.operations import record_operation

    with record_operation(_sessions(cli), command, arguments) as op:
        yield op


def _act(cli: CliContext, name: str, campaign_id: int, action: Any, verb: str, **kw: Any) -> None:
    with _recorded(cli, f"campaign {name}", id=campaign_id, **kw) as op:
        result = action(_sessions(cli), campaign_id, **kw)
        op.message = result.describe(verb)
    click.echo(result.describe(verb))
    if name in ("resume", "retry"):
        click.echo("  the manager picks it up at its next pass (`skybatch manager run`)")
