"""Seed step 7: catalog rows in a database → ref_cat shard files in the Butler and catalog.

One tiny demo survey is built per module, centred near an HTM7 trixel corner so that
the catalog database spans six trixels while each visit overlaps only some of them:
that is what lets the tests tell "exactly the overlapping shards" from "all shards".
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from lsst.daf.butler import Butler
from lsst.sphgeom import DISJOINT, HtmPixelization, LonLat, Region, UnitVector3d
from sqlalchemy import func, select

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.export import ExportReport, export_refcat
from skybatch.backbone.models import Activity, EdgeRelation
from skybatch.backbone.service import Backbone
from skybatch.demo.params import INSTRUMENT, SurveyParams
from skybatch.demo.survey import REFCAT_RUN, Survey, build_survey
from skybatch.errors import InputError
from skybatch.settings import load_settings

PIX = HtmPixelization(7)
VISIT = 1001


@dataclass
class Env:
    survey: Survey
    backbone: Backbone
    home: Path
    db_url: str


def _params() -> SurveyParams:
    corner = LonLat(PIX.pixel(231869).getVertices()[0])
    return SurveyParams(
        visits=2,
        detectors=2,
        size=128,
        seed=3,
        ra_deg=corner.getLon().asDegrees() + 0.02,
        dec_deg=corner.getLat().asDegrees() + 0.012,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("export")
    survey = build_survey(root / "survey", _params())
    home = root / "home"
    db_url = f"sqlite:///{home / 'state.sqlite3'}"
    backbone = Backbone.from_settings(load_settings(home=home, db={"url": db_url}))
    backbone.add_endpoint("archive", "archive", str(survey.repo), {})
    return Env(survey, backbone, home, db_url)


@pytest.fixture(scope="module")
def visit_export(env: Env) -> ExportReport:
    return export_refcat(
        env.backbone, env.survey.repo, env.survey.refcat_db, visits=[VISIT], run="test/visit"
    )


def _db_shards(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        return {int(r[0]) for r in conn.execute("SELECT DISTINCT htm7 FROM refcat")}


def _db_rows(db: Path, shard: int) -> Table:
    with sqlite3.connect(db) as conn:
        cur = conn.execute("SELECT * FROM refcat WHERE htm7 = ? ORDER BY id", (shard,))
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return Table(rows=rows, names=names)


def _expected(db: Path, region: Region) -> set[int]:
    """Shards of the database whose trixel overlaps ``region`` (no envelope involved)."""
    return {s for s in _db_shards(db) if not PIX.pixel(s).relate(region) & DISJOINT}


def _visit_region(repo: Path, visit: int) -> Region:
    with Butler.from_config(str(repo)) as butler:
        (record,) = butler.query_dimension_records(
            "visit", instrument=INSTRUMENT, where=f"visit = {visit}"
        )
        region: Region = record.region
        return region


def _assert_same_table(got: Table, want: Table) -> None:
    assert got.colnames == want.colnames
    got = got[np.argsort(got["id"])]
    for name in want.colnames:
        assert np.array_equal(np.asarray(got[name]), np.asarray(want[name])), name


def _snapshot(env: Env) -> tuple[set[str], int, int]:
    """Butler collections, catalog files and activities: what bad input must not change."""
    with Butler.from_config(str(env.survey.repo)) as butler:
        collections = set(butler.collections.query("*"))
    with env.backbone.catalog.sessions() as session:
        activities = session.scalar(select(func.count(Activity.id))) or 0
    return collections, len(env.backbone.catalog.files()), activities


# -- visit export ---------------------------------------------------------------------
def test_visit_export_writes_exactly_the_overlapping_shards_with_rows(
    env: Env, visit_export: ExportReport
) -> None:
    db = env.survey.refcat_db
    expected = _expected(db, _visit_region(env.survey.repo, VISIT))
    assert expected and expected < _db_shards(db), "the survey must straddle trixels"
    assert visit_export.shards == sorted(expected)
    assert visit_export.rows == sum(len(_db_rows(db, s)) for s in expected)
    assert visit_export.files_registered == len(expected)
    with Butler.from_config(str(env.survey.repo)) as butler:
        refs = butler.query_datasets("ref_cat", collections="test/visit")
        assert sorted(r.dataId["htm7"] for r in refs) == sorted(expected)
        # How pipetask's graph builder finds prerequisite refcats: a spatial join.
        spatial = butler.query_datasets(
            "ref_cat",
            collections="test/visit",
            where=f"instrument='{INSTRUMENT}' AND visit={VISIT}",
        )
        assert {r.id for r in spatial} == {r.id for r in refs}


def test_rows_read_back_through_the_butler_equal_the_database(
    env: Env, visit_export: ExportReport
) -> None:
    with Butler.from_config(str(env.survey.repo)) as butler:
        for ref in butler.query_datasets("ref_cat", collections="test/visit"):
            shard = int(ref.dataId["htm7"])
            _assert_same_table(butler.get(ref), _db_rows(env.survey.refcat_db, shard))


def test_catalog_tracks_each_file_with_provenance(env: Env, visit_export: ExportReport) -> None:
    files = env.backbone.catalog.files(run="test/visit")
    assert len(files) == len(visit_export.shards)
    assert visit_export.bytes == sum(f.size_bytes for f in files)
    with Butler.from_config(str(env.survey.repo)) as butler:
        refs = {str(r.id): r for r in butler.query_datasets("ref_cat", collections="test/visit")}
        uris = butler.get_many_uris(list(refs.values()))
    for f in files:
        ref = refs[str(f.dataset_id)]
        primary = uris[ref].primaryURI
        assert primary is not None
        on_disk = Path(primary.ospath)
        assert on_disk == env.survey.repo / f.path
        assert (f.size_bytes, f.md5) == md5_file(on_disk)
        assert (f.dataset_type, f.run, f.producer) == ("ref_cat", "test/visit", "export-refcat")
        assert f.data_id == {"htm7": ref.dataId["htm7"]}
        edges = env.backbone.catalog.provenance(f.id)
        assert [(rel, act.id if act else None) for rel, act, _ in edges] == [
            (EdgeRelation.WAS_GENERATED_BY.value, visit_export.activity_id)
        ]
    activity = edges[0][1]
    assert activity is not None and activity.finished_at is not None
    info = activity.info
    assert info["source"]["database"] == str(env.survey.refcat_db.resolve())
    assert (info["source"]["size_bytes"], info["source"]["md5"]) == md5_file(env.survey.refcat_db)
    assert info["source"]["table"] == "refcat"
    assert 'FROM "refcat" WHERE "htm7" IN (?' in info["query"]["sql"]
    assert info["query"]["shards"] == visit_export.shards
    assert info["region"] == {"kind": "visits", "instrument": INSTRUMENT, "visits": [VISIT]}
    assert (info["status"], info["rows"], info["shard_count"]) == (
        "succeeded",
        visit_export.rows,
        len(visit_export.shards),
    )
    assert info["file_format"] == "parquet" and info["started"] <= info["finished"]


# -- polygon and sqlite ---------------------------------------------------------------
def test_polygon_region_and_sqlite_format_round_trip(env: Env) -> None:
    params = _params()
    ra, dec = params.ra_deg, params.dec_deg
    vertices = [(ra - 0.03, dec - 0.005), (ra + 0.001, dec - 0.005), (ra - 0.01, dec + 0.02)]
    db = env.survey.refcat_db
    polygon = _polygon(vertices)
    expected = _expected(db, polygon)
    assert expected and expected < _db_shards(db)
    parquet = export_refcat(
        env.backbone, env.survey.repo, db, polygon=vertices, run="test/polygon-parquet"
    )
    sqlite = export_refcat(
        env.backbone,
        env.survey.repo,
        db,
        polygon=vertices,
        run="test/polygon-sqlite",
        file_format="sqlite",
    )
    assert parquet.shards == sqlite.shards == sorted(expected)
    with Butler.from_config(str(env.survey.repo)) as butler:
        for shard in expected:
            from_parquet = butler.get("ref_cat", htm7=shard, collections="test/polygon-parquet")
            from_sqlite = butler.get("ref_cat", htm7=shard, collections="test/polygon-sqlite")
            want = _db_rows(db, shard)
            _assert_same_table(from_sqlite, want)
            _assert_same_table(from_parquet, want)
            assert from_sqlite.dtype == from_parquet.dtype
        uri = butler.getURI("ref_cat", htm7=min(expected), collections="test/polygon-sqlite")
        assert uri.getExtension() == ".sqlite3"
    files = env.backbone.catalog.files(run="test/polygon-sqlite")
    assert len(files) == len(expected) and all(f.path.endswith(".sqlite3") for f in files)


def _polygon(vertices: list[tuple[float, float]]) -> Region:
    from lsst.sphgeom import ConvexPolygon

    return ConvexPolygon.convexHull([UnitVector3d(LonLat.fromDegrees(a, d)) for a, d in vertices])


def test_sqlite_table_files_keep_nulls_and_declared_dtypes(tmp_path: Path) -> None:
    from skybatch.backbone.formatters import read_sqlite_table, write_sqlite_table

    source = tmp_path / "source.sqlite"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, mag REAL, name TEXT, flag INTEGER)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?)", [(1, 20.5, "a", None), (2, None, None, 3)]
        )
    table = read_sqlite_table(source)
    assert [table[c].dtype.kind for c in table.colnames] == ["i", "f", "U", "i"]
    assert table["mag"].mask.tolist() == [False, True]
    assert table["flag"].mask.tolist() == [True, False]
    copy = tmp_path / "copy.sqlite3"
    write_sqlite_table(table, copy)
    again = read_sqlite_table(copy)
    assert again.pformat() == table.pformat()
    assert read_sqlite_table(copy, columns=["na*"]).colnames == ["name"]
    with pytest.raises(FileExistsError):
        write_sqlite_table(table, copy)


# -- bad input ------------------------------------------------------------------------
def _bad_inputs(env: Env, tmp: Path) -> dict[str, tuple[dict[str, object], str]]:
    db = env.survey.refcat_db
    no_htm = tmp / "no_htm7.sqlite"
    with sqlite3.connect(no_htm) as conn:
        conn.execute("CREATE TABLE refcat (id INTEGER PRIMARY KEY, ra REAL, dec REAL)")
    not_sqlite = tmp / "notes.sqlite"
    not_sqlite.write_text("not a database\n" * 100)
    visit = {"visits": [VISIT]}
    return {
        "missing database": ({"database": tmp / "nope.sqlite", **visit}, "nope.sqlite"),
        "not sqlite": ({"database": not_sqlite, **visit}, "SQLite"),
        "missing table": ({"database": db, "table": "stars", **visit}, "no table 'stars'"),
        "no htm7 column": ({"database": no_htm, **visit}, "no htm7 column"),
        "both regions": ({"database": db, **visit, "polygon": [(1, 1)] * 3}, "not both"),
        "neither region": ({"database": db}, "not neither"),
        "two-point polygon": ({"database": db, "polygon": [(150, 2), (151, 2)]}, "3 vertices"),
        "unknown visit": ({"database": db, "visits": [999999]}, "999999"),
        "existing run": ({"database": db, **visit, "run": REFCAT_RUN}, "already exists"),
        "bad format": ({"database": db, **visit, "file_format": "csv"}, "--format"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing database",
        "not sqlite",
        "missing table",
        "no htm7 column",
        "both regions",
        "neither region",
        "two-point polygon",
        "unknown visit",
        "existing run",
        "bad format",
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    env: Env, tmp_path: Path, case: str
) -> None:
    kwargs, fragment = _bad_inputs(env, tmp_path)[case]
    before = _snapshot(env)
    database = kwargs.pop("database")
    with pytest.raises(InputError) as caught:
        export_refcat(env.backbone, env.survey.repo, database, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert caught.value.hint
    assert _snapshot(env) == before


def test_no_archive_endpoint_is_refused(env: Env, tmp_path: Path) -> None:
    bare = Backbone.from_settings(load_settings(home=tmp_path / "bare-home"))
    before = _snapshot(env)
    with pytest.raises(InputError, match="archive endpoint"):
        export_refcat(bare, env.survey.repo, env.survey.refcat_db, visits=[VISIT], run="t/none")
    assert _snapshot(env) == before
    assert bare.catalog.files() == []


def test_archive_elsewhere_than_the_datastore_is_refused(env: Env, tmp_path: Path) -> None:
    other = Backbone.from_settings(load_settings(home=tmp_path / "other-home"))
    other.add_endpoint("archive", "archive", str(tmp_path / "elsewhere"), {})
    before = _snapshot(env)
    with pytest.raises(InputError, match="datastore root"):
        export_refcat(other, env.survey.repo, env.survey.refcat_db, visits=[VISIT], run="t/x")
    assert _snapshot(env) == before


def test_failed_ingest_leaves_no_run_and_records_the_failure(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsst.daf.butler.direct_butler import DirectButler

    def broken_ingest(self: DirectButler, *datasets: object, **kwargs: object) -> None:
        raise RuntimeError("datastore unavailable")

    monkeypatch.setattr(DirectButler, "ingest", broken_ingest)
    collections, files, activities = _snapshot(env)
    with pytest.raises(RuntimeError, match="datastore unavailable"):
        export_refcat(
            env.backbone, env.survey.repo, env.survey.refcat_db, visits=[VISIT], run="t/broken"
        )
    assert _snapshot(env) == (collections, files, activities + 1)
    with env.backbone.catalog.sessions() as session:
        activity = session.scalars(select(Activity).where(Activity.name == "t/broken")).one()
    assert activity.info["status"] == "failed" and "datastore unavailable" in activity.info["error"]


# -- CLI ------------------------------------------------------------------------------
def test_cli_exports_and_reports(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from skybatch.cli.main import main

    base = ["--home", str(env.home), "--db-url", env.db_url, "backbone", "export-refcat"]
    args = ["--repo", str(env.survey.repo), "--database", str(env.survey.refcat_db)]
    code = main([*base, *args, "--visits", str(VISIT), "--run", "test/cli", "--format", "sqlite"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test/cli" in out and "activity id" in out
    assert (
        f"butler query-datasets {env.survey.repo.resolve()} ref_cat --collections test/cli" in out
    )
    assert len(env.backbone.catalog.files(run="test/cli")) > 0

    before = _snapshot(env)
    assert main([*base, *args, "--visits", "abc"]) == 2
    assert "--visits" in capsys.readouterr().err
    assert main([*base, *args, "--polygon", "1,2 3"]) == 2
    assert "--polygon" in capsys.readouterr().err
    assert _snapshot(env) == before


# -- a PostgreSQL source ----------------------------------------------------------------
def _copy_to_postgres(db: Path, url: str, schema: str) -> None:
    """The survey's refcat table in PostgreSQL (``schema.refcat``, same columns and rows)."""
    from sqlalchemy import create_engine, text

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM refcat ORDER BY id").fetchall()
    engine = create_engine(url)
    with engine.begin() as pg:
        pg.execute(text(f"CREATE SCHEMA {schema}"))
        pg.execute(
            text(
                f"CREATE TABLE {schema}.refcat (id bigint PRIMARY KEY, ra double precision "
                "NOT NULL, dec double precision NOT NULL, g_mag double precision, "
                '"g_magErr" double precision, r_mag double precision, '
                '"r_magErr" double precision, htm7 bigint NOT NULL)'
            )
        )
        pg.execute(text(f"CREATE INDEX ON {schema}.refcat (htm7)"))
        names = ["id", "ra", "dec", "g_mag", "g_magErr", "r_mag", "r_magErr", "htm7"]
        pg.execute(
            text(f"INSERT INTO {schema}.refcat VALUES ({', '.join(':' + n for n in names)})"),
            [dict(zip(names, row, strict=True)) for row in rows],
        )
    engine.dispose()


@pytest.mark.postgres
def test_a_postgresql_source_exports_the_same_shards_as_the_sqlite_file(
    env: Env, visit_export: ExportReport, postgres_url: str
) -> None:
    db = env.survey.refcat_db
    _copy_to_postgres(db, postgres_url, "cat")
    report = export_refcat(
        env.backbone,
        env.survey.repo,
        postgres_url,
        visits=[VISIT],
        table="cat.refcat",
        run="test/pg-visit",
    )
    assert report.shards == visit_export.shards and report.rows == visit_export.rows
    with Butler.from_config(str(env.survey.repo)) as butler:
        for shard in report.shards:
            got = butler.get("ref_cat", htm7=shard, collections="test/pg-visit")
            _assert_same_table(got, _db_rows(db, shard))
    with env.backbone.catalog.sessions() as session:
        activity = session.get(Activity, report.activity_id)
        assert activity is not None
        source = activity.info["source"]
    assert source["database"] == postgres_url and source["schema"] == "cat"
    assert "md5" not in source  # no file to checksum


@pytest.mark.postgres
def test_a_postgresql_source_without_the_table_is_refused_naming_it(
    env: Env, postgres_url: str
) -> None:
    before = _snapshot(env)
    with pytest.raises(InputError) as caught:
        export_refcat(
            env.backbone, env.survey.repo, postgres_url, visits=[VISIT], run="test/pg-none"
        )
    assert "has no table 'refcat'" in caught.value.message
    assert _snapshot(env) == before
