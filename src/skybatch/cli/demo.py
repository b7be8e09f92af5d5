"""``skybatch demo``: build the synthetic DemoCam survey and run the demo pipeline on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from skybatch.cli.context import CliContext, pass_cli_context

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
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _params(visits: int, detectors: int, size: int, seed: int) -> Any:
    from pydantic import ValidationError

    from skybatch.demo.params import SurveyParams
    from skybatch.errors import InputError

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


@click.group()
def demo() -> None:
    """Build the synthetic DemoCam survey and run the demo pipeline on it."""


@demo.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_survey_options
@pass_cli_context
def init_cmd(
    cli: CliContext, directory: Path, visits: int, detectors: int, size: int, seed: int
) -> None:
    """Create a demo survey in DIRECTORY: a Butler repo with raws, calibrations, refcat.

    DIRECTORY/repo is the Butler repository, DIRECTORY/refcat.sqlite the reference
    catalog database, DIRECTORY/truth.json what was injected.
    """
    from skybatch.demo.driver import init_survey
    from skybatch.progress import rich_bars

    params = _params(visits, detectors, size, seed)
    with _recorded(cli, "demo init", directory=directory, **params.model_dump()) as op:
        survey = init_survey(directory, params, rich_bars())
        op.message = f"survey in {survey.root.resolve()}"
    click.echo(f"demo survey: {survey.root.resolve()}")
    click.echo(f"  Butler repository: {survey.repo.resolve()} (input collection DemoCam/defaults)")
    click.echo(f"  reference catalog database: {survey.refcat_db.resolve()}")


@demo.command("run")
@click.argument(
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    required=False,
)
@_survey_options
@click.option("--output", default=None, help="Output collection. [default: demo/pipetask/<time>]")
@click.option(
    "-j", "--processes", type=int, default=1, show_default=True, help="pipetask processes."
)
@pass_cli_context
def run_cmd(
    cli: CliContext,
    directory: Path,
    visits: int,
    detectors: int,
    size: int,
    seed: int,
    output: str | None,
    processes: int,
) -> None:
    """Build the demo survey in DIRECTORY (if not there yet) and run the demo pipeline.

    The pipeline (isr, calibrate, visitSummary, coadd) runs with `pipetask run`; the
    command prints where the outputs are. [default DIRECTORY: ./demo-survey]
    """
    from skybatch.demo.driver import init_survey, run_with_pipetask
    from skybatch.demo.survey import Survey
    from skybatch.progress import rich_bars

    survey = Survey(directory)
    with _recorded(cli, "demo run", directory=directory, output=output) as op:
        if not survey.repo.joinpath("butler.yaml").exists():
            survey = init_survey(directory, _params(visits, detectors, size, seed), rich_bars())
        else:
            click.echo(f"using the existing demo survey in {survey.root.resolve()}")
        result = run_with_pipetask(survey, output=output, processes=processes)
        op.message = f"{result.quanta} quanta into {result.output}"
    _report(result)


def _recorded(cli: CliContext, command: str, **arguments: Any) -> Any:
    """Record the command in the state database's operations log."""
    from skybatch.db.operations import record_operation
    from skybatch.db.state import open_state_db

    return record_operation(open_state_db(cli.settings), command, arguments)


def _report(result: Any) -> None:
    from skybatch.demo.report import visit_table

    repo = result.survey.repo.resolve()
    click.echo("")
    click.echo(f"pipeline finished: {result.quanta} quanta in {result.wall_s:.1f} s")
    click.echo(f"  Butler repository: {repo}")
    click.echo(f"  output collection: {result.output}")
    click.echo(f"  files under:       {repo / result.output}")
    click.echo(f"  pipetask log:      {result.log_path.resolve()}")
    click.echo("  datasets: " + ", ".join(f"{k}={v}" for k, v in result.datasets.items()))
    click.echo("")
    click.echo(visit_table(result.survey, result.output))
    click.echo("")
    click.echo(f"explore: butler query-datasets {repo} deepCoadd --collections {result.output}")
