"""A campaign's ``repo:`` names a repository as the Butler does: an index label, a
butler.yaml kept apart from its datastore, a file:// URI; the campaign is archived at
the datastore root, and what names no repository is refused at its line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from campaignworld import DATA, DEMO_PIPELINES, SkybatchCli
from lsst.daf.butler import Config

from skybatch.backbone.service import Backbone
from skybatch.campaign import load_campaign
from skybatch.settings import load_settings


@pytest.fixture
def campaign(tmp_path: Path, empty_survey: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "campaigns"
    target.mkdir()
    for source in DATA.glob("*.yaml"):
        shutil.copy(source, target / source.name)
    monkeypatch.setenv("DEMO_PIPELINES", str(DEMO_PIPELINES))
    monkeypatch.delenv("DEMO_WORKERS", raising=False)
    return target / "demo_campaign.yaml"


def _with_repo(campaign: Path, repo: str) -> Path:
    text = campaign.read_text()
    assert "repo: ${DEMO_SURVEY:-demo-survey}/repo\n" in text
    campaign.write_text(text.replace("repo: ${DEMO_SURVEY:-demo-survey}/repo\n", f"repo: {repo}\n"))
    return campaign


def _apart(repo: Path, target: Path) -> Path:
    config = Config(str(repo / "butler.yaml"))
    config["root"] = repo.resolve().as_uri()
    target.parent.mkdir(parents=True, exist_ok=True)
    config.dumpToUri(str(target))
    return target


def test_an_index_label_for_a_config_apart_is_submitted_and_archived_at_the_datastore(
    campaign: Path,
    empty_survey: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    apart = _apart(empty_survey / "repo", tmp_path / "etc" / "survey.yaml")
    index = tmp_path / "index.yaml"
    index.write_text(f"survey: {apart.as_uri()}\n")
    monkeypatch.setenv("DAF_BUTLER_REPOSITORY_INDEX", str(index))
    _with_repo(campaign, "survey")
    assert load_campaign(campaign).repo == apart
    sky = SkybatchCli(tmp_path / "home", capsys)
    done = sky("campaign", "submit", campaign)
    assert done.code == 0, done.err
    backbone = Backbone.from_settings(load_settings(home=sky.home))
    archive = backbone.endpoint(backbone.archive_name())
    assert archive.root.resolve() == (empty_survey / "repo").resolve()
    provenance = backbone.catalog.files(path_prefix="skybatch/provenance/campaigns/")
    assert provenance and all(archive.local_path(f.path).is_file() for f in provenance)


def test_a_file_uri_names_the_repository(campaign: Path, empty_survey: Path) -> None:
    uri = (empty_survey / "repo" / "butler.yaml").as_uri()
    assert load_campaign(_with_repo(campaign, uri)).repo == (empty_survey / "repo").resolve()


def test_an_unknown_label_is_refused_at_its_line(
    campaign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_repo(campaign, "pgdemo")
    sky = SkybatchCli(tmp_path / "home", capsys)
    done = sky("campaign", "submit", campaign)
    assert done.code == 2
    assert "demo_campaign.yaml:11" in done.err and "repo" in done.err
    assert "no Butler repository at pgdemo" in done.err
    assert not (tmp_path / "home").exists()


def _with_catalogs(text: str, database: str) -> str:
    """The campaign text with ``policies.catalogs.database`` set."""
    assert "\npolicies:\n" in text
    return text.replace("\npolicies:\n", f"\npolicies:\n  catalogs: {{database: {database}}}\n")


def test_databases_may_be_postgresql_urls(campaign: Path, empty_survey: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/refcats"
    text = campaign.read_text()
    text = text.replace("database: ${DEMO_SURVEY:-demo-survey}/refcat.sqlite", f"database: {url}")
    campaign.write_text(_with_catalogs(text, f"{url}_objects"))
    loaded = load_campaign(campaign)
    assert loaded.refcat is not None and loaded.refcat.database == url
    assert loaded.policies.catalogs.database == f"{url}_objects"


def test_a_relative_catalog_database_or_another_backend_is_refused(
    campaign: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    original = campaign.read_text()
    for database, expected in (
        ("sqlite:///objects.sqlite3", "is not an absolute path"),
        ("mysql://db/objects", "not mysql"),
    ):
        campaign.write_text(_with_catalogs(original, database))
        sky = SkybatchCli(tmp_path / "home", capsys)
        done = sky("campaign", "validate", campaign)
        assert done.code == 2 and expected in done.err, done.err
        assert "policies.catalogs.database" in done.err
