"""``skybatch demo``: build the synthetic DemoCam survey and run the demo campaign on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import DataError, InputError

if TYPE_CHECKING:
    from skybatch.demo.survey import Survey
    from skybatch.read.models import CampaignReport

DEFAULT_DIR = Path("demo-survey")


def _survey_options(func: Any) -> Any:
    """The survey-shape options shared by ``init`` and ``run`` (SurveyParams fields)."""
    options = [
        click.option(
            "--visits", type=int, default=6, show_default=True, help="Visits (one exposure each)."
        ),
        click.option(
            "--detectors", type=int, default=4, show_default=True, help="Detectors per visit."
        ),
        click.option(
            "--size",
            type=int,
            default=256,
            show_default=True,
            help="Detector width/height in pixels.",
        ),
        click.option("--seed", type=int, default=42, show_default=True, help="Random seed."),
        click.option(
            "--registry",
            metavar="POSTGRESQL_URL",
            default=None,
            help="Put the Butler registry in this PostgreSQL database (made if missing; "
            "btree_gist is created if missing) instead of SQLite, e.g. "
            "postgresql://postgres@127.0.0.1:5432/demo.",
        ),
        click.option(
            "--registry-schema",
            metavar="NAME",
            default=None,
            help="Schema of the registry's tables in that database (must be new). "
            "[default: the survey directory's name, e.g. demo_survey]",
        ),
        click.option(
            "--datastore",
            metavar="URI",
            default=None,
            help="Put the Butler datastore (the survey's files) at this root instead of "
            "DIRECTORY/repo, e.g. s3://bucket/demo (an S3 object store: endpoint and "
            "credentials as lsst-resources reads them, S3_ENDPOINT_URL and the AWS ones). "
            "It must hold no file.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _params(visits: int, detectors: int, size: int, seed: int) -> Any:
    from pydantic import ValidationError

    from skybatch.demo.params import SurveyParams

    try:
        return SurveyParams(visits=visits, detectors=detectors, size=size, seed=seed)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        raise InputError(
            f"invalid value for {option}: {first['msg']}",
            where=option,
            hint="see `skybatch demo init --help` for the allowed ranges",
        ) from None


class SurveyDirectory(click.ParamType):
    """A survey's directory; a database URL given in its place is refused (it would
    otherwise become a directory named ``postgresql:``)."""

    name = "DIRECTORY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from skybatch.db.postgres import looks_like_url

        if isinstance(value, Path):
            return value
        if looks_like_url(str(value)):
            self.fail(
                f"{value!r} is a URL, not a directory: the survey's files go in a directory; "
                "give the PostgreSQL registry with --registry URL "
                f"(e.g. skybatch demo init demo-survey --registry {value})",
                param,
                ctx,
            )
        return Path(value)


def _registry(directory: Path, url: str | None, schema: str | None) -> Any:
    """The survey's PostgreSQL registry, or None (SQLite)."""
    from skybatch.demo.survey import PostgresRegistry

    if url is None:
        if schema is not None:
            raise InputError(
                "--registry-schema needs --registry",
                where="--registry-schema",
                hint="give the PostgreSQL database with --registry URL",
            )
        return None
    return PostgresRegistry.for_survey(url, directory, schema)


@click.group()
def demo() -> None:
    """Build the synthetic DemoCam survey and run the demo campaign on it."""


@demo.command("init")
@click.argument("directory", type=SurveyDirectory())
@_survey_options
@pass_cli_context
def init_cmd(
    cli: CliContext,
    directory: Path,
    visits: int,
    detectors: int,
    size: int,
    seed: int,
    registry: str | None,
    registry_schema: str | None,
    datastore: str | None,
) -> None:
    """Create a demo survey in DIRECTORY: a Butler repo with raws, calibrations, refcat.

    DIRECTORY/repo is the Butler repository (its registry in SQLite there, or in the
    PostgreSQL database given with --registry; its files there, or at the datastore
    root given with --datastore), DIRECTORY/refcat.sqlite the reference catalog
    database, DIRECTORY/truth.json what was injected.
    """
    from skybatch.demo.driver import init_survey
    from skybatch.progress import rich_bars

    params = _params(visits, detectors, size, seed)
    where = _registry(directory, registry, registry_schema)
    with _recorded(cli, "demo init", directory=directory, **params.model_dump()) as op:
        survey = init_survey(directory, params, rich_bars(), where, datastore)
        op.message = f"survey in {survey.root.resolve()}"
    click.echo(f"demo survey: {survey.root.resolve()}")
    click.echo(f"  Butler repository: {survey.repo.resolve()} (input collection DemoCam/defaults)")
    if datastore is not None:
        click.echo(f"  Butler datastore: {datastore}")
    if where is not None:
        from skybatch.db.engine import mask_url

        click.echo(f"  Butler registry: {mask_url(where.url)} (schema {where.schema})")
    click.echo(f"  reference catalog database: {survey.refcat_db.resolve()}")


@demo.command("run")
@click.argument(
    "directory",
    type=SurveyDirectory(),
    default=DEFAULT_DIR,
    required=False,
)
@_survey_options
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel jobs. [default: the demo campaign's, 2]",
)
@click.option(
    "--seeing-limit",
    "seeing_limit",
    metavar="ARCSEC",
    type=values.finite(0.0, min_open=True, max=1e6),
    default=None,
    help="Step 2 coadds the visits whose PSF FWHM stays under this on every detector. "
    "[default: the demo campaign's, 1.6]",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "slurm"]),
    default="local",
    show_default=True,
    help="Where the jobs run: this machine, or the Slurm cluster this machine submits to "
    "(site file demo_site_slurm.yaml; DEMO_SLURM_MODE=pilot for warm pilots).",
)
@pass_cli_context
def run_cmd(
    cli: CliContext,
    directory: Path,
    visits: int,
    detectors: int,
    size: int,
    seed: int,
    workers: int | None,
    seeing_limit: float | None,
    engine: str,
    registry: str | None,
    registry_schema: str | None,
    datastore: str | None,
) -> None:
    """Build the demo survey in DIRECTORY (if not there yet) and run the demo campaign.

    The demo campaign (the packaged campaigns/demo.yaml) is submitted and run to its
    end by the campaign manager, as `skybatch campaign submit` then `skybatch manager
    run` do: step 1 runs isr, calibrate and visitSummary with one group per visit;
    step 2 is expanded after step 1 and coadds only the visits whose visitSummary
    PSF size is under the seeing limit. The campaign report is printed, then the
    visits step 2 kept and dropped and a per-visit table of measured vs injected
    seeing and zero points. The survey-shape options only apply when the survey is
    built. [default DIRECTORY: ./demo-survey]
    """
    from rich.console import Console

    from skybatch.campaign.demo import run_demo_campaign
    from skybatch.campaign.progress import ProgressDisplay
    from skybatch.campaign.render import format_report
    from skybatch.db.state import open_state_db
    from skybatch.demo.driver import check_home, init_survey
    from skybatch.demo.survey import Survey
    from skybatch.progress import rich_bars
    from skybatch.read.campaigns import campaign_report

    survey = Survey(directory)
    where = _registry(directory, registry, registry_schema)
    arguments = {
        "directory": directory,
        "workers": workers,
        "seeing_limit": seeing_limit,
        "engine": engine,
    }
    with _recorded(cli, "demo run", **arguments) as op:
        check_home(cli.settings, survey, datastore)
        if not survey.repo.joinpath("butler.yaml").exists():
            params = _params(visits, detectors, size, seed)
            survey = init_survey(directory, params, rich_bars(), where, datastore)
            click.echo(f"built the demo survey in {survey.root.resolve()}")
        else:
            click.echo(f"using the existing demo survey in {survey.root.resolve()}")
        console = Console(stderr=True)
        with ProgressDisplay(open_state_db(cli.settings), console=console) as display:

            def say(text: str) -> None:
                console.print(text, markup=False, highlight=False, soft_wrap=True)

            result = run_demo_campaign(
                cli.settings,
                survey.root,
                workers=workers,
                seeing_limit_arcsec=seeing_limit,
                engine=engine,
                say=say,
                progress=display.update,
            )
        with open_state_db(cli.settings)() as session:
            report = campaign_report(session, result.campaign_id)
        click.echo("")
        click.echo(format_report(report))
        if not result.succeeded:
            raise DataError(
                f"demo campaign {result.campaign_id} {result.state}",
                where=str(result.campaign_id),
                hint=f"see `skybatch campaign report {result.campaign_id}`, fix the cause, then "
                f"`skybatch campaign retry {result.campaign_id}` and `skybatch manager run --once`",
            )
        _outcome(survey, report)
        op.message = f"campaign {result.campaign_id} succeeded"


def _recorded(cli: CliContext, command: str, **arguments: Any) -> Any:
    """Record the command in the state database's operations log."""
    from skybatch.db.operations import record_operation
    from skybatch.db.state import open_state_db

    return record_operation(open_state_db(cli.settings), command, arguments)


def _visits(data_ids: list[dict[str, Any]]) -> list[int]:
    """The visit numbers of data ids that are a visit alone."""
    return [int(d["visit"]) for d in data_ids if list(d) == ["visit"]]


def _outcome(survey: Survey, report: CampaignReport) -> None:
    """After the report of a succeeded campaign: what each selecting step kept and
    dropped, the per-visit table of the first step's runs, where the outputs are."""
    from skybatch.campaign.selection import data_id_text
    from skybatch.demo.report import visit_table

    marks: dict[str, dict[int, str]] = {}
    for step in report.steps:
        selection = step.selection
        if selection is None:
            continue
        click.echo("")
        click.echo(f"step {step.name}: {selection.headline()}")
        click.echo(f"  kept:    {', '.join(map(data_id_text, selection.kept)) or 'none'}")
        click.echo(f"  dropped: {', '.join(map(data_id_text, selection.dropped)) or 'none'}")
        marks[step.name] = {v: "kept" for v in _visits(selection.kept)}
        marks[step.name].update({v: "dropped" for v in _visits(selection.dropped)})

    # The per-visit processing is the first step (one run per visit group);
    # visit_table reads one collection, so its rows are gathered run by run.
    first = report.steps[0]
    runs = [g.run for g in first.groups if g.state == "succeeded"]
    header, rows = "", []
    for run in runs:
        lines = visit_table(survey, run).splitlines()
        header = lines[0]
        rows.extend(lines[1:])
    if rows:
        columns = [name for name, by_visit in marks.items() if by_visit]
        click.echo("")
        click.echo(f"visits of {first.name} (FWHM and ZP meas: median over detectors):")
        click.echo(header + "".join(f" {name:>8}" for name in columns))
        for row in sorted(rows, key=lambda r: int(r.split()[0])):
            visit = int(row.split()[0])
            click.echo(row + "".join(f" {marks[n].get(visit, '-'):>8}" for n in columns))

    repo = survey.repo.resolve()
    campaign_id = report.id
    click.echo("")
    click.echo(f"Butler repository: {repo} (output runs: see the groups above)")
    click.echo(f"report:  skybatch campaign report {campaign_id}")
    click.echo(f"history: skybatch campaign history {campaign_id}")
    last = report.steps[-1].groups
    if last:
        click.echo(f"explore: butler query-datasets {repo} deepCoadd --collections {last[0].run}")
