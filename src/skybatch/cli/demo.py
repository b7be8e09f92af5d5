"""``skybatch demo``: build the synthetic DemoCam survey and run the demo pipeline on it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import DataError, InputError

if TYPE_CHECKING:
    from skybatch.demo.driver import SkybatchResult

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
@click.option(
    "--output", default=None, help="Output RUN collection. [default: demo/run/<UTC time>]"
)
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel jobs. [default: the engine's default]",
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
    workers: int | None,
) -> None:
    """Build the demo survey in DIRECTORY (if not there yet) and run the demo pipeline.

    The pipeline (isr, calibrate, visitSummary, coadd) runs with skybatch's own
    execution, as `skybatch run` does; the command prints where the outputs are and
    how to see the run with `skybatch report RUN`. [default DIRECTORY: ./demo-survey]
    """
    from skybatch.demo.driver import check_home, init_survey, run_with_skybatch
    from skybatch.demo.survey import Survey
    from skybatch.progress import make_progress, rich_bars

    survey = Survey(directory)
    arguments = {"directory": directory, "output": output, "workers": workers}
    with _recorded(cli, "demo run", **arguments) as op:
        check_home(cli.settings, survey)
        if not survey.repo.joinpath("butler.yaml").exists():
            survey = init_survey(directory, _params(visits, detectors, size, seed), rich_bars())
            click.echo(f"built the demo survey in {survey.root.resolve()}")
        else:
            click.echo(f"using the existing demo survey in {survey.root.resolve()}")
        with make_progress() as bar:
            task = bar.add_task("jobs", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_with_skybatch(cli.settings, survey, output, workers, progress)
        _report(result)
        summary = result.summary
        if not result.succeeded:
            raise DataError(
                f"run {summary.run} did not finish: jobs {_counts(summary.jobs)}",
                where=summary.run,
                hint=f"see `skybatch report {summary.run}`, fix the cause, then "
                f"`skybatch run --resume {summary.run}`",
            )
        op.message = f"{summary.quanta} quanta into {summary.run}"


def _recorded(cli: CliContext, command: str, **arguments: Any) -> Any:
    """Record the command in the state database's operations log."""
    from skybatch.db.operations import record_operation
    from skybatch.db.state import open_state_db

    return record_operation(open_state_db(cli.settings), command, arguments)


def _counts(jobs: Mapping[str, int]) -> str:
    """``succeeded=17, failed=1``: job states are str enums, whose repr is noisy."""
    return ", ".join(f"{state}={n}" for state, n in jobs.items()) or "none"


def _report(result: SkybatchResult) -> None:
    from skybatch.demo.report import visit_table

    summary = result.summary
    repo = result.survey.repo.resolve()
    click.echo("")
    if not result.succeeded:
        click.echo(f"run {summary.run}: {summary.state}")
        click.echo(f"  quanta: {summary.quanta}; jobs: {_counts(summary.jobs)}")
        click.echo(f"  Butler repository: {repo}")
        click.echo(f"  workdir (job logs): {summary.workdir}")
        return
    click.echo(
        f"pipeline finished: {summary.quanta} quanta in {result.wall_s:.1f} s "
        f"(expansion {summary.expansion_s:.1f} s); jobs: {_counts(summary.jobs)}"
    )
    click.echo(f"  Butler repository: {repo}")
    click.echo(f"  output collection: {summary.run}")
    click.echo(f"  files under:       {repo / summary.run}")
    click.echo(f"  workdir:           {summary.workdir}")
    click.echo("  datasets: " + ", ".join(f"{k}={v}" for k, v in result.datasets.items()))
    click.echo("")
    click.echo(visit_table(result.survey, summary.run))
    click.echo("")
    click.echo(f"report:  skybatch report {summary.run}")
    click.echo(f"explore: butler query-datasets {repo} deepCoadd --collections {summary.run}")
