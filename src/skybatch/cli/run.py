"""``skybatch run`` and ``skybatch report``: one pipeline over one data selection."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.cli.values import first_error
from skybatch.errors import InputError

if TYPE_CHECKING:
    from skybatch.engines.errors import EngineSettingsError

__all__ = ["report", "run"]


def _resources(values: tuple[str, ...]) -> dict[str, Any]:
    from skybatch.graph.workflow import ResourceRequest

    out: dict[str, Any] = {}
    for value in values:
        label, _, spec = value.partition("=")
        try:
            fields = dict(item.split(":", 1) for item in spec.split(","))
            out[label] = ResourceRequest(**{k: int(v) for k, v in fields.items()})
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"bad --resources value {value!r}: {first_error(exc)}",
                where="--resources",
                hint="write LABEL=memory_mb:4096,cores:1,walltime_s:3600",
            ) from None
    return out


def _clusters(values: tuple[str, ...]) -> list[Any]:
    from skybatch.graph.workflow import ClusterRule

    out = []
    for value in values:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise InputError(
                f"bad --cluster value {value!r}",
                where="--cluster",
                hint="write NAME:task1,task2[:dim1,dim2], e.g. step1:isr,calibrate:visit,detector",
            )
        dims = parts[2].split(",") if len(parts) == 3 and parts[2] else []
        out.append(ClusterRule(name=parts[0], tasks=parts[1].split(","), dimensions=dims))
    return out


def _file_templates(values: tuple[str, ...], repo: Path, pipeline: str) -> dict[str, str]:
    """``DATASET_TYPE=TEMPLATE`` flags, each checked as the campaign's file_templates are."""
    from skybatch.campaign.naming import check_file_templates, unwritten_templates

    templates: dict[str, str] = {}
    for value in values:
        name, sep, template = value.partition("=")
        if not sep or not name.strip() or not template.strip():
            raise InputError(
                f"--file-template {value!r} is not DATASET_TYPE=TEMPLATE",
                where="--file-template",
                hint="e.g. --file-template "
                '"calexp={run:/}/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}_{detector}"',
            )
        templates[name.strip()] = template.strip()
    problems = check_file_templates(templates, repo) if templates else {}
    problems = problems or (unwritten_templates(templates, pipeline) if templates else {})
    if problems:  # the first; the others are alike
        name, problem = next(iter(problems.items()))
        raise InputError(
            problem.message,
            where=f"--file-template {name}".rstrip(),
            hint=problem.hint,
        )
    return templates


def _catalogs(names: tuple[str, ...], none: bool) -> list[str] | None:
    """``--catalog`` names (None: every table output), or [] for ``--no-catalogs``."""
    if none and names:
        raise InputError(
            "--catalog and --no-catalogs contradict each other",
            where="--no-catalogs",
            hint="give either the catalogs to load or --no-catalogs",
        )
    for name in names:
        if not name.strip() or any(c.isspace() for c in name):
            raise InputError(
                f"--catalog {name!r} is not a dataset type name",
                where="--catalog",
                hint="name an output dataset type, e.g. --catalog src",
            )
    return [] if none else (list(dict.fromkeys(names)) or None)


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    """``target[a][b] = value`` for the dotted key ``a.b`` (nested settings)."""
    *parents, last = key.split(".")
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[last] = value


def _get(source: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(source, dict) or part not in source:
            return None
        source = source[part]
    return source


def _engine_settings(engine: str, pairs: tuple[str, ...], file: Path | None) -> dict[str, Any]:
    """``--engine-settings FILE`` with ``--engine-setting KEY=VALUE`` over it, validated
    against the engine's settings model; the settings as the run stores them.

    A value is read as YAML (``4`` is a number, ``true`` a boolean, ``[a, b]`` a
    list), except that a string setting keeps the text as written
    (``--engine-setting account=1234`` is the account ``"1234"``).

    Raises:
        InputError: a pair or the file is malformed.
        EngineConfigError: the engine is unknown or its plugin is broken.
        EngineSettingsError: a setting is unknown or invalid (names the field).
    """
    import yaml
    from pydantic import ValidationError

    from skybatch.engines.errors import EngineSettingsError
    from skybatch.engines.registry import EngineRegistry

    settings: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(
                f"cannot read engine settings: {exc}",
                where=f"--engine-settings {file}",
                hint="give a YAML file holding a mapping of setting: value",
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(
                f"engine settings file holds a {type(loaded).__name__}, not a mapping",
                where=f"--engine-settings {file}",
                hint="write one `setting: value` per line",
            )
        settings = dict(loaded or {})
    written: dict[str, str] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError(
                f"bad --engine-setting value {pair!r}",
                where="--engine-setting",
                hint="write KEY=VALUE, e.g. --engine-setting max_workers=4 "
                "(nested settings: pilot.cores=4)",
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _set(settings, key, value)
        written[key] = text
    registry = EngineRegistry.default()
    try:
        registry.settings_model(engine).model_validate(settings)
    except ValidationError as exc:
        # A value YAML made a number or a boolean, for a setting that is a string.
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            if error["type"] == "string_type" and key in written:
                _set(settings, key, written[key])
    try:
        return registry.normalize_settings(engine, settings)
    except EngineSettingsError as exc:
        raise _from_flags(exc, written, file) from None


def _from_flags(
    exc: EngineSettingsError, written: dict[str, str], file: Path | None
) -> EngineSettingsError:
    """The settings error, saying which flag (or the file) gave the first bad field."""
    first = exc.problems[0][0]
    if file is None or any(first == key or first.startswith(f"{key}.") for key in written):
        exc.where = f"--engine-setting {first}"
    else:
        exc.where = f"--engine-settings {file}: {first}"
    return exc


def _resume_engine_settings(cli: CliContext, kw: dict[str, Any]) -> dict[str, Any] | None:
    """``--engine-setting``/``--engine-settings`` given with ``--resume``: the run's
    engine's new settings (merged over the stored ones by resume_run)."""
    if not kw["engine_setting"] and kw["engine_settings_file"] is None:
        return None
    from skybatch.run.driver import run_engine_name

    engine = run_engine_name(cli.settings, kw["resume"])
    return _engine_settings(engine, kw["engine_setting"], kw["engine_settings_file"])


@click.command()
@click.option(
    "--repo",
    type=values.REPOSITORY,
    help="Butler repository: its directory, its butler.yaml (path or file:// URI) or a "
    "repository index label.",
)
@click.option("--pipeline", help="Pipeline YAML, optionally PATH#label1,label2.")
@click.option("--input", "inputs", multiple=True, help="Input collection (repeatable).")
@click.option("--query", default="", help="Data query (Butler WHERE expression).")
@click.option(
    "--output-run",
    type=values.RUN_NAME,
    default=None,
    help="Output RUN. [default: u/USER/PIPELINE/TIME]",
)
@click.option("--site", default=None, help="Backbone site endpoint. [default: site:local]")
@click.option(
    "--engine", default="local", show_default=True, help="Execution engine (an installed plugin)."
)
@click.option(
    "--engine-setting",
    "engine_setting",
    multiple=True,
    metavar="KEY=VALUE",
    help="One setting of the engine (repeatable; VALUE is read as YAML; "
    "nested: pilot.cores=4). Wins over --engine-settings.",
)
@click.option(
    "--engine-settings",
    "engine_settings_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE.yaml",
    help="The engine's settings as a YAML mapping.",
)
@click.option(
    "--shared-filesystem/--no-shared-filesystem",
    default=True,
    show_default=True,
    help="Whether compute nodes see the site cache; without, jobs fetch their inputs "
    "from the archive and push their outputs there.",
)
@click.option(
    "--workers", type=values.POSITIVE, default=None, help="Parallel jobs. [default: cores]"
)
@click.option(
    "--isolation",
    type=click.Choice(["warm", "process"]),
    default="warm",
    show_default=True,
    help="warm: long-lived workers with the LSST stack imported; process: one per job.",
)
@click.option(
    "--retries", type=values.ATTEMPTS, default=3, show_default=True, help="Attempts per job."
)
@click.option(
    "--infrastructure-retries",
    type=values.NON_NEGATIVE,
    default=3,
    show_default=True,
    help="Attempts on top of --retries after preemption or node failure.",
)
@click.option("--memory-factor", type=values.MEMORY_FACTOR, default=2.0, show_default=True)
@click.option("--memory-cap-mb", type=values.MEMORY_MB, default=16384, show_default=True)
@click.option(
    "--memory-mb", type=values.MEMORY_MB, default=2048, show_default=True, help="Default request."
)
@click.option("--resources", multiple=True, help="LABEL=memory_mb:N,cores:N,walltime_s:N")
@click.option("--cluster", multiple=True, help="NAME:task1,task2[:dim1,dim2]")
@click.option("--intermediate", multiple=True, help="Dataset type deleted after the run.")
@click.option("--catalog-db-url", default=None, help="SQL database for object catalogs.")
@click.option(
    "--catalog",
    "catalogs",
    multiple=True,
    metavar="DATASET_TYPE",
    help="Load this output dataset type into the object catalogs if it is a table "
    "(astropy, Arrow, DataFrame; repeatable). [default: every table output]",
)
@click.option("--no-catalogs", is_flag=True, help="Load no object catalogs.")
@click.option(
    "--file-template",
    "file_template",
    multiple=True,
    metavar="DATASET_TYPE=TEMPLATE",
    help="Name this dataset type's output files with a daf_butler file template "
    "instead of the repository's (repeatable).",
)
@click.option("--junk-tarball/--no-junk-tarball", default=False)
@click.option("--resume", type=values.RUN_NAME, default=None, help="Finish an interrupted run.")
@pass_cli_context
def run(cli: CliContext, **kw: Any) -> None:
    """Run a pipeline over a data selection, end to end.

    \b
    Example:
      skybatch run --repo demo-survey/repo --pipeline pipelines/demo_drp.yaml \\
          --input DemoCam/defaults --query "instrument='DemoCam'"
      skybatch run --resume u/me/demo_drp/20261125T010203Z
    """
    from skybatch.graph.workflow import ResourceRequest
    from skybatch.progress import make_progress
    from skybatch.run.driver import RunOptions, check_engine, resume_run, submit_run

    options = None
    if not kw["resume"]:
        missing = [n for n in ("repo", "pipeline") if not kw[n]] + (
            [] if kw["inputs"] else ["input"]
        )
        if missing:
            raise InputError(
                f"missing --{', --'.join(missing)}",
                where=f"--{missing[0]}",
                hint="give --repo, --pipeline and --input (or --resume RUN)",
            )
        # Everything given is checked before anything (database, run, files) is written.
        options = RunOptions(
            repo=kw["repo"],
            pipeline=kw["pipeline"],
            inputs=list(kw["inputs"]),
            query=kw["query"],
            output_run=kw["output_run"],
            site=kw["site"],
            engine=kw["engine"],
            engine_settings=_engine_settings(
                kw["engine"], kw["engine_setting"], kw["engine_settings_file"]
            ),
            workers=kw["workers"],
            isolation=kw["isolation"],
            shared_filesystem=kw["shared_filesystem"],
            max_attempts=kw["retries"],
            infrastructure_retries=kw["infrastructure_retries"],
            memory_factor=kw["memory_factor"],
            memory_cap_mb=kw["memory_cap_mb"],
            resources=_resources(kw["resources"]),
            default_resources=ResourceRequest(memory_mb=kw["memory_mb"]),
            cluster=_clusters(kw["cluster"]),
            intermediates=list(kw["intermediate"]),
            catalog_db_url=kw["catalog_db_url"],
            catalog_tables=_catalogs(kw["catalogs"], kw["no_catalogs"]),
            junk_tarball=kw["junk_tarball"],
            file_templates=_file_templates(kw["file_template"], kw["repo"], kw["pipeline"]),
        )
        check_engine(options)  # with --workers and --isolation merged in
    with make_progress() as bar:
        task = bar.add_task("jobs", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if options is None:
            summary = resume_run(
                cli.settings, kw["resume"], progress, _resume_engine_settings(cli, kw)
            )
        else:
            summary = submit_run(cli.settings, options, progress)
    click.echo(f"run {summary.run}: {summary.state}")
    click.echo(f"  quanta: {summary.quanta}; jobs: {summary.jobs}")
    click.echo(f"  expansion {summary.expansion_s:.1f} s; execution {summary.wall_s:.1f} s")
    if summary.phases:
        click.echo("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.phases.items()))
    click.echo(f"  outputs ingested into the Butler: {summary.outputs_ingested}")
    click.echo(f"  object catalog rows loaded: {summary.catalog_rows}")
    for warning in summary.warnings:
        click.echo(f"  warning: {warning}")
    click.echo(f"  workdir: {summary.workdir}")
    click.echo(f"  report: skybatch report {summary.run}")
    if summary.state != "succeeded":
        from skybatch.errors import DataError

        raise DataError(
            f"run {summary.run} did not finish: jobs {summary.jobs}",
            where=summary.run,
            hint=f"see `skybatch report {summary.run}`, fix the cause, then "
            f"`skybatch run --resume {summary.run}`",
        )


@click.command()
@click.argument("run_name", metavar="RUN", required=False)
@click.option("--list", "list_", is_flag=True, help="List runs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def report(cli: CliContext, run_name: str | None, list_: bool, as_json: bool) -> None:
    """Per-task quanta counts of RUN and the first error line of each failure."""
    from skybatch.db.state import open_state_db
    from skybatch.read.models import to_json
    from skybatch.read.runs import list_runs, run_report

    sessions = open_state_db(cli.settings)
    if list_ or not run_name:
        with sessions() as session:
            runs = list_runs(session)
        if as_json:
            click.echo(to_json(runs))
            return
        for r in runs:
            click.echo(f"{r.run}  {r.state}  {r.created.isoformat()}")
        return
    with sessions() as session:
        data = run_report(session, run_name)
    if as_json:
        click.echo(to_json(data))
        return
    click.echo(f"run {data.run}: {data.state}  ({data.pipeline})")
    columns = ("expected", "succeeded", "failed", "running", "blocked")
    click.echo(f"{'task':<16} " + " ".join(f"{c:>9}" for c in columns))
    for label, counts in data.tasks.items():
        click.echo(f"{label:<16} " + " ".join(f"{getattr(counts, c):>9}" for c in columns))
    click.echo(f"jobs: {data.jobs}")
    for f in data.failures:
        click.echo(
            f"  {f.state:<9} {f.job}: exit {f.exit_code} ({f.failure}), "
            f"{f.attempts} attempt(s), memory {f.memory_mb} MB: {f.error}"
        )
        if f.advice:
            click.echo(f"    what to do: {f.advice}")
    for warning in data.warnings:
        click.echo(f"  warning: {warning}")
