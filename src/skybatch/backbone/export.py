"""Database data → files tracked in the Data Backbone (seed step 7).

A reference catalog lives as a table in an SQL database; PipelineTasks read it as
HTM level-7 shards (dataset type ``ref_cat``, one file per trixel). :func:`export_refcat`
reads only the rows of the trixels that overlap a sky region (the union of visits, or a
polygon), writes one file per non-empty trixel, ingests the files into the Butler and
registers them in the backbone catalog with a provenance activity that names the source
database (path, size, md5), table and query, so every shard can be traced to the rows
it came from.

Every input is checked before anything is written: a bad database, table, region, run
or endpoint leaves the Butler and the catalog untouched.

Regions, shards and the source table are in :mod:`skybatch.backbone.shards`, also used
by the demo survey, which writes its reference catalog straight into the Butler.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lsst.sphgeom import Region

from skybatch.errors import InputError
from skybatch.progress import ProgressFactory, no_bars
from skybatch.repository import resolve_repository

from .checksums import md5_file
from .shards import (
    CHUNK,
    HTM_LEVEL,
    SHARD_COLUMN,
    SourceTable,
    iter_shards,
    open_source,
    overlapping_shards,
    polygon_region,
    shards_with_rows,
    visit_regions,
)

if TYPE_CHECKING:
    from astropy.table import Table
    from lsst.daf.butler import Butler, DatasetRef, DatasetType

    from .service import Backbone

__all__ = ["DATASET_TYPE", "ExportReport", "FileFormat", "export_refcat"]

_log = logging.getLogger(__name__)

DATASET_TYPE = "ref_cat"
STORAGE_CLASS = "ArrowAstropy"
PRODUCER = "export-refcat"

FileFormat = Literal["parquet", "sqlite"]
_FORMATTERS: dict[str, tuple[str, str]] = {
    "parquet": ("lsst.daf.butler.formatters.parquet.ParquetFormatter", ".parq"),
    "sqlite": ("skybatch.backbone.formatters.SqliteTableFormatter", ".sqlite3"),
}


# -- the export -----------------------------------------------------------------------
@dataclass
class ExportReport:
    """What an export wrote: Butler run, shards, rows, bytes and catalog entries."""

    run: str
    shards: list[int] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    files_registered: int = 0
    activity_id: int | None = None
    dataset_type: str = DATASET_TYPE


@dataclass(frozen=True)
class _Plan:
    """A fully validated export: what to read, where to write, what to record."""

    source: SourceTable
    repo: Path
    run: str
    dataset_type: DatasetType
    shards: list[int]
    provenance: dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def export_refcat(
    backbone: Backbone,
    repo: Path,
    database: Path | str,
    *,
    visits: Sequence[int] = (),
    instrument: str | None = None,
    polygon: Sequence[tuple[float, float]] = (),
    table: str = "refcat",
    run: str | None = None,
    file_format: FileFormat = "parquet",
    progress: ProgressFactory | None = None,
) -> ExportReport:
    """Export the catalog rows of a sky region as ``ref_cat`` shards tracked in the backbone.

    The region is the union of ``visits`` (regions from the Butler registry) or the
    convex ``polygon`` of (ra, dec) degree vertices; exactly one must be given. Shards
    go into the new Butler ``run`` (default ``refcats/export/<UTC time>``) and are
    registered on the archive endpoint, whose root must be the repository's datastore
    root. All of this is validated before anything is written.

    Raises:
        InputError: a bad database, table, region, run, format or archive endpoint.
    """
    from lsst.daf.butler import Butler

    started = _now()
    if bool(visits) == bool(polygon):
        raise InputError(
            "give the sky region either as visits or as a polygon, not "
            + ("both" if visits else "neither"),
            where="--visits / --polygon",
            hint='e.g. --visits 1000,1001 or --polygon "10,0 11,0 10.5,1"',
        )
    if file_format not in _FORMATTERS:
        raise InputError(
            f"unknown file format {file_format!r}",
            where="--format",
            hint=f"use one of: {', '.join(_FORMATTERS)}",
        )
    poly = polygon_region(polygon) if polygon else None
    source = open_source(database, table)
    archive = backbone.archive_name()
    repo = resolve_repository(repo, where="--repo").location
    run = run if run is not None else f"refcats/export/{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    with Butler.from_config(str(repo), writeable=True) as butler:
        _check_archive_root(backbone, archive, butler)
        _check_run(butler, run)
        if poly is not None:
            regions: list[Region] = [poly]
            region_info: dict[str, Any] = {"kind": "polygon", "vertices_deg": list(polygon)}
        else:
            instrument, regions = visit_regions(butler, visits, instrument)
            region_info = {
                "kind": "visits",
                "instrument": instrument,
                "visits": sorted(set(visits)),
            }
        plan = _plan(butler, source, repo, run, regions, region_info)
        # Everything is valid: from here on the export writes.
        provenance = {**plan.provenance, "file_format": file_format, "started": started}
        report = ExportReport(run=run)
        report.activity_id = backbone.catalog.add_activity("export", run, info=provenance)
        try:
            _write_and_ingest(backbone, butler, plan, file_format, report, progress or no_bars)
        except BaseException as exc:
            _record_failure(backbone, report.activity_id, exc)
            raise
    backbone.catalog.finish_activity(
        report.activity_id,
        {
            "status": "succeeded",
            "finished": _now(),
            "shard_count": len(report.shards),
            "rows": report.rows,
            "bytes": report.bytes,
        },
    )
    return report


def _plan(
    butler: Butler,
    source: SourceTable,
    repo: Path,
    run: str,
    regions: list[Region],
    region_info: dict[str, Any],
) -> _Plan:
    """Find the shards to write and describe the export for the provenance record."""
    dataset_type = _dataset_type(butler)
    candidates = overlapping_shards(regions)
    shards = shards_with_rows(source, candidates)
    if not shards:
        raise InputError(
            f"table {source.table!r} of {source.shown} has no rows in the "
            f"{len(candidates)} HTM{HTM_LEVEL} trixels overlapping the region",
            where="--visits / --polygon",
            hint="check that the region and the database cover the same part of the sky",
        )
    if isinstance(source.database, str):  # a PostgreSQL database: no file to checksum
        from skybatch.db.engine import mask_url

        database: dict[str, Any] = {"database": mask_url(source.database)}
        if source.schema is not None:
            database["schema"] = source.schema
    else:
        size, md5 = md5_file(source.database)
        database = {"database": str(source.database), "size_bytes": size, "md5": md5}
    provenance = {
        "producer": PRODUCER,
        "source": {
            **database,
            "table": source.table,
            "columns": list(source.columns),
        },
        "query": {
            "sql": source.select_sql("?, ..."),
            "parameters": f"the htm7 ids below, at most {CHUNK} per statement",
            "shards": shards,
        },
        "region": region_info,
        "candidate_trixels": len(candidates),
        "repo": str(repo),
        "run": run,
        "dataset_type": DATASET_TYPE,
        "status": "running",
    }
    return _Plan(source, repo, run, dataset_type, shards, provenance)


def _record_failure(backbone: Backbone, activity_id: int, exc: BaseException) -> None:
    """Mark the activity failed; a failure to do so must not hide the original error."""
    try:
        backbone.catalog.finish_activity(
            activity_id,
            {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "finished": _now()},
        )
    except Exception:
        _log.warning("could not record the failure of export activity %d", activity_id)


def _write_and_ingest(
    backbone: Backbone,
    butler: Butler,
    plan: _Plan,
    file_format: str,
    report: ExportReport,
    bar: ProgressFactory,
) -> None:
    """Write the shard files, ingest them (move) into a new run, register them."""
    from lsst.daf.butler import DataCoordinate, DatasetRef, FileDataset

    from .butler import register_refs

    formatter, extension = _FORMATTERS[file_format]
    with tempfile.TemporaryDirectory(prefix="skybatch-export-") as scratch:
        datasets: list[FileDataset] = []
        with bar("write shards", len(plan.shards)) as advance:
            for shard, rows in iter_shards(plan.source, plan.shards):
                path = Path(scratch) / f"{DATASET_TYPE}_htm{HTM_LEVEL}_{shard}{extension}"
                _write_shard(rows, path, file_format)
                data_id = DataCoordinate.standardize(
                    {SHARD_COLUMN: shard}, universe=butler.dimensions
                )
                ref = DatasetRef(plan.dataset_type, data_id, run=plan.run)
                datasets.append(FileDataset(str(path), [ref], formatter=formatter))
                report.shards.append(shard)
                report.rows += len(rows)
                advance()
        butler.registry.registerDatasetType(plan.dataset_type)
        with butler.transaction():  # the run and its datasets appear together or not at all
            butler.collections.register(plan.run)
            butler.ingest(*datasets, transfer="move")
    refs: list[DatasetRef] = [d.refs[0] for d in datasets]
    try:
        registered = register_refs(
            backbone,
            butler,
            refs,
            producer=PRODUCER,
            activity_id=report.activity_id,
            progress=bar,
        )
    except BaseException as exc:
        exc.add_note(
            f"the shards are in Butler run {plan.run!r} but not all are in the catalog; "
            f"register them with `skybatch backbone register-butler {plan.repo} {plan.run}`"
        )
        raise
    report.files_registered = registered.registered
    report.bytes = registered.bytes


def _write_shard(rows: Table, path: Path, file_format: str) -> None:
    if file_format == "sqlite":
        from .formatters import write_sqlite_table

        write_sqlite_table(rows, path)
    else:
        import pyarrow.parquet as pq
        from lsst.daf.butler.formatters.parquet import astropy_to_arrow

        pq.write_table(astropy_to_arrow(rows), path)


def _check_archive_root(backbone: Backbone, archive: str, butler: Butler) -> None:
    """The archive endpoint must be the datastore root, or catalog paths would be wrong."""
    endpoint = backbone.endpoint(archive)
    root = str(endpoint.root.resolve()) if endpoint.capabilities.local_files else endpoint.location
    roots = [  # directories resolved, object-store roots as their URIs (s3://bucket/repo/)
        str(Path(r.ospath).resolve()) if r.isLocal else str(r)
        for r in butler.get_datastore_roots().values()
        if r
    ]
    if root not in roots:
        raise InputError(
            f"archive endpoint {archive!r} ({root}) is not the datastore root of the "
            f"repository ({', '.join(map(str, roots)) or 'none'})",
            where=f"endpoint {archive!r}",
            hint="export into the repository whose datastore the archive endpoint holds",
        )


def _check_run(butler: Butler, run: str) -> None:
    from lsst.daf.butler import MissingCollectionError

    if not run.strip() or run != run.strip() or any(c in run for c in "*?,\n"):
        raise InputError(
            f"{run!r} is not a usable run name",
            where="--run",
            hint="use a name like refcats/export/2026-05-01 (no spaces, commas or wildcards)",
        )
    try:
        butler.collections.get_info(run)
    except MissingCollectionError:
        return
    raise InputError(
        f"collection {run!r} already exists in the repository",
        where="--run",
        hint="an export always writes a new run: choose another --run name",
    )


def _dataset_type(butler: Butler) -> DatasetType:
    """``ref_cat`` (htm7, ArrowAstropy); an existing definition must match it."""
    from lsst.daf.butler import DatasetType, MissingDatasetTypeError

    wanted = DatasetType(DATASET_TYPE, (SHARD_COLUMN,), STORAGE_CLASS, universe=butler.dimensions)
    try:
        existing = butler.get_dataset_type(DATASET_TYPE)
    except MissingDatasetTypeError:
        return wanted
    if existing.dimensions != wanted.dimensions or existing.storageClass_name != STORAGE_CLASS:
        raise InputError(
            f"dataset type {DATASET_TYPE!r} exists with dimensions "
            f"{list(existing.dimensions.names)} and storage class {existing.storageClass_name}",
            where=DATASET_TYPE,
            hint=f"the export writes {DATASET_TYPE} with dimensions ({SHARD_COLUMN},) and "
            f"storage class {STORAGE_CLASS}; use a repository without a conflicting definition",
        )
    return existing
