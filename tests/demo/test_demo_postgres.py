"""A demo survey whose Butler registry is in PostgreSQL (`skybatch demo init --registry`),
used the ways an operator's production repository is: `skybatch run`, the demo
campaign, a repository index label, a butler.yaml kept apart from the datastore root.
Bad registries are refused naming --registry, saying what to do, with nothing left.

Needs the server of SKYBATCH_TEST_POSTGRES_URL (skipped with the reason otherwise);
every database made here has a unique name and is dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lsst.daf.butler import Butler, Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from skybatch.cli.main import main
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey

pytestmark = [pytest.mark.postgres]

SKYBATCH = str(Path(sys.executable).parent / "skybatch")
SHAPE = ("--visits", "2", "--detectors", "2", "--size", "128", "--seed", "7")


def _admin(server: str) -> object:
    return create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="module")
def _database(_postgres_server: str) -> Iterator[str]:
    """A database for this module's survey; it is *not* created here: demo init makes it."""
    name = f"skybatch_test_{uuid.uuid4().hex}"
    yield make_url(_postgres_server).set(database=name).render_as_string(hide_password=False)
    admin = _admin(_postgres_server)
    with admin.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()  # type: ignore[attr-defined]


def _skybatch(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKYBATCH, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def pg_survey(_database: str, tmp_path_factory: pytest.TempPathFactory) -> Survey:
    """`skybatch demo init DIR --registry URL`, the database not existing before."""
    root = tmp_path_factory.mktemp("pg") / "pg-survey"
    home = tmp_path_factory.mktemp("pg-home")
    proc = _skybatch(home, "demo", "init", str(root), "--registry", _database, *SHAPE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Butler registry: postgresql" in proc.stdout and "schema survey_pg_survey" in proc.stdout
    return Survey(root)


def _run(
    home: Path, repo: str, run: str, *options: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return _skybatch(
        home,
        "run",
        "--repo",
        repo,
        "--pipeline",
        f"{pipeline_path()}#isr,calibrate",
        "--input",
        DEFAULTS,
        "--output-run",
        run,
        "--workers",
        "2",
        *options,
        **env,
    )


def _assert_run_archived(home: Path, repo: str, survey: Survey, run: str) -> None:
    from skybatch.backbone.service import Backbone
    from skybatch.settings import load_settings

    backbone = Backbone.from_settings(load_settings(home=home))
    assert backbone.endpoint(backbone.archive_name()).root.resolve() == survey.repo.resolve()
    with Butler.from_config(repo) as butler:
        refs = butler.query_all_datasets(run, find_first=False, limit=None)
        assert {"calexp", "postISRCCD"} <= {r.datasetType.name for r in refs}
    files = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
    assert len(files) == len(refs) and all(f.md5 for f in files.values())


def test_demo_init_makes_the_survey_with_a_postgresql_registry(
    pg_survey: Survey, _database: str
) -> None:
    config = Config(str(pg_survey.repo / "butler.yaml"))
    assert config["registry", "db"] == _database
    assert config["registry", "namespace"] == "survey_pg_survey"
    assert not list(pg_survey.repo.glob("*.sqlite3"))  # no SQLite registry beside it
    with Butler.from_config(str(pg_survey.repo)) as butler:
        assert "PostgreSQL" in str(butler._registry._db)  # type: ignore[attr-defined]
        raws = butler.query_datasets("raw", collections=DEFAULTS, limit=None)
        assert len(raws) == 2 * 2
    engine = create_engine(_database)
    with engine.connect() as connection:
        assert connection.execute(
            text("SELECT count(*) FROM pg_extension WHERE extname = 'btree_gist'")
        ).scalar()
    engine.dispose()


@pytest.mark.slow
def test_skybatch_run_on_the_postgresql_repository_with_postgresql_catalogs(
    pg_survey: Survey, _database: str, tmp_path: Path
) -> None:
    catalogs = make_url(_database)
    catalogs = catalogs.set(database=f"{catalogs.database}_cat")  # made on first use
    url = catalogs.render_as_string(hide_password=False)
    home = tmp_path / "home"
    try:
        proc = _run(home, str(pg_survey.repo), "t/pg-run", "--catalog-db-url", url)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _assert_run_archived(home, str(pg_survey.repo), pg_survey, "t/pg-run")
        engine = create_engine(url)
        with engine.connect() as connection:
            rows = connection.execute(text('SELECT count(*) FROM "src"')).scalar()
        engine.dispose()
        assert rows and rows > 0
    finally:
        admin = create_engine(catalogs.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{catalogs.database}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.slow
def test_an_index_label_for_a_butler_yaml_apart_from_the_datastore(
    pg_survey: Survey, tmp_path: Path
) -> None:
    config = Config(str(pg_survey.repo / "butler.yaml"))
    config["root"] = pg_survey.repo.resolve().as_uri()
    apart = tmp_path / "etc" / "butler" / "pg.yaml"
    apart.parent.mkdir(parents=True)
    config.dumpToUri(str(apart))
    index = tmp_path / "repositories.yaml"
    index.write_text(f"pgdemo: {apart.as_uri()}\n")
    home = tmp_path / "home"
    proc = _run(home, "pgdemo", "t/pg-label", DAF_BUTLER_REPOSITORY_INDEX=str(index))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_run_archived(home, str(apart), pg_survey, "t/pg-label")


@pytest.mark.slow
def test_the_demo_campaign_on_the_postgresql_repository(pg_survey: Survey, tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = _skybatch(home, "demo", "run", str(pg_survey.root), "-j", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"using the existing demo survey in {pg_survey.root.resolve()}" in proc.stdout
    assert "campaign total" in proc.stdout


def test_a_database_url_given_as_the_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    assert main(["demo", "init", url, "--visits", "1"]) == 2
    err = capsys.readouterr().err
    assert "is a URL, not a directory" in err and "--registry" in err
    assert not (tmp_path / "postgresql:").exists()


def test_a_registry_without_btree_gist_that_the_user_cannot_create_is_refused_saying_how(
    postgres_url: str, _postgres_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    role = f"skybatch_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(_postgres_server)
    with admin.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
        target = tmp_path / "survey"
        assert main(["demo", "init", str(target), "--registry", url, *SHAPE]) == 2
        err = capsys.readouterr().err
        assert "btree_gist" in err and "--registry" in err
        assert "CREATE EXTENSION btree_gist" in err
        assert not target.exists()
    finally:
        with admin.connect() as connection:  # type: ignore[attr-defined]
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()  # type: ignore[attr-defined]


def test_a_registry_schema_already_there_is_refused_and_left_alone(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE SCHEMA taken"))
        connection.execute(text("CREATE TABLE taken.keep (x int)"))
    target = tmp_path / "survey"
    argv = ["demo", "init", str(target), "--registry", postgres_url, "--registry-schema", "taken"]
    assert main([*argv, *SHAPE]) == 2
    err = capsys.readouterr().err
    assert "already has a schema 'taken'" in err and "--registry-schema" in err
    assert not target.exists()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM taken.keep")).scalar() == 0
    engine.dispose()


def test_an_unreachable_registry_server_is_refused_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://postgres@127.0.0.1:1/nothing"
    assert main(["demo", "init", str(tmp_path / "s"), "--registry", url, *SHAPE]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to the PostgreSQL database" in err and "--registry" in err
    assert not (tmp_path / "s").exists()


def test_a_registry_url_with_a_password_is_refused_before_anything_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused from the URL alone: no server is asked, nothing is written.
    url = "postgresql://survey:s3cret-pw@127.0.0.1:5432/registry"
    assert main(["demo", "init", str(tmp_path / "s"), "--registry", url, *SHAPE]) == 2
    err = capsys.readouterr().err
    assert "holds a password" in err and "--registry" in err and "db-auth.yaml" in err
    assert "s3cret-pw" not in err
    assert not (tmp_path / "s").exists()
