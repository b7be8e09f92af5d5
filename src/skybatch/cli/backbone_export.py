"""``skybatch backbone export-refcat``: catalog rows of a sky region → tracked ref_cat shards."""

from __future__ import annotations

from pathlib import Path

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context

__all__ = ["export_refcat", "parse_polygon", "parse_visits"]

MAX_SHARDS_SHOWN = 20
_POLYGON_HINT = 'give space-separated "ra,dec" pairs in degrees, e.g. --polygon "10,0 11,0 10.5,1"'


def parse_visits(text: str) -> list[int]:
    """``"1000,1001"`` → ``[1000, 1001]``; anything else is an InputError naming --visits."""
    from skybatch.errors import InputError

    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        visits = [int(item) for item in items]
    except ValueError:
        visits = []
    if not visits:
        raise InputError(
            f"cannot read visit ids from {text!r}",
            where="--visits",
            hint="give integer visit ids separated by commas, e.g. --visits 1000,1001",
        )
    return visits


def parse_polygon(text: str) -> list[tuple[float, float]]:
    """``"ra,dec ra,dec ..."`` (degrees) → vertex list; malformed pairs name --polygon."""
    from skybatch.errors import InputError

    vertices: list[tuple[float, float]] = []
    for pair in text.split():
        parts = pair.split(",")
        try:
            if len(parts) != 2:
                raise ValueError(pair)
            vertices.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise InputError(
                f"cannot read the vertex {pair!r} of the polygon",
                where="--polygon",
                hint=_POLYGON_HINT,
            ) from None
    if not vertices:
        raise InputError(
            "the polygon has no vertices",
            where="--polygon",
            hint=_POLYGON_HINT,
        )
    return vertices


@click.command("export-refcat")
@click.option(
    "--repo",
    required=True,
    type=values.REPOSITORY,
    help="Butler repository: directory, butler.yaml or index label (its datastore root "
    "must be the archive endpoint).",
)
@click.option(
    "--database",
    required=True,
    help="Database holding the catalog table: an SQLite file, or a PostgreSQL URL "
    "(postgresql://USER@HOST:PORT/DB; the table may be SCHEMA.TABLE).",
)
@click.option("--table", default="refcat", show_default=True, help="Catalog table or view.")
@click.option("--visits", default=None, help="Region: union of these visits, e.g. 1000,1001.")
@click.option("--instrument", default=None, help="Instrument of --visits. [default: the only one]")
@click.option(
    "--polygon",
    default=None,
    help='Region: convex polygon of "ra,dec" degree vertices, e.g. "10,0 11,0 10.5,1".',
)
@click.option("--run", default=None, help="New Butler run. [default: refcats/export/<UTC time>]")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["parquet", "sqlite"]),
    default="parquet",
    show_default=True,
    help="Shard file format.",
)
@pass_cli_context
def export_refcat(
    cli: CliContext,
    repo: Path,
    database: str,
    table: str,
    visits: str | None,
    instrument: str | None,
    polygon: str | None,
    run: str | None,
    file_format: str,
) -> None:
    """Export the catalog rows of a sky region as HTM7 ref_cat shards (seed step 7).

    Reads only the rows of the HTM level-7 trixels that overlap the region (--visits or
    --polygon), writes one file per non-empty trixel, ingests them into a new Butler
    run and registers them in the Data Backbone with the source database, table and
    query as provenance.
    """
    from typing import cast

    from skybatch.backbone.export import FileFormat
    from skybatch.backbone.export import export_refcat as run_export
    from skybatch.cli.backbone_files import open_backbone
    from skybatch.progress import rich_bars

    report = run_export(
        open_backbone(cli),  # Backbone.from_settings with the group's --workers
        repo,
        database,
        visits=parse_visits(visits) if visits is not None else (),
        instrument=instrument,
        polygon=parse_polygon(polygon) if polygon is not None else (),
        table=table,
        run=run,
        file_format=cast(FileFormat, file_format),
        progress=rich_bars(),
    )
    repo_path = repo.expanduser().resolve()
    click.echo(f"exported {report.rows} rows into {len(report.shards)} ref_cat shards")
    click.echo(f"  Butler run:       {report.run}")
    shown = ", ".join(map(str, report.shards[:MAX_SHARDS_SHOWN]))
    more = len(report.shards) - MAX_SHARDS_SHOWN
    click.echo(f"  shards (htm7):    {shown}" + (f", ... ({more} more)" if more > 0 else ""))
    click.echo(f"  bytes:            {report.bytes}")
    click.echo(f"  files registered: {report.files_registered} (producer export-refcat)")
    click.echo(f"  activity id:      {report.activity_id}")
    click.echo(f"find them: butler query-datasets {repo_path} ref_cat --collections {report.run}")
