"""One bootstrap of a home's archive and site endpoints (``skybatch run``, ``campaign
submit``, ``demo run``): checked before anything is made, made on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from skybatch.backbone.errors import UnknownEndpointError
from skybatch.backbone.roots import OverlappingRootError
from skybatch.backbone.service import Backbone, SiteRequest
from skybatch.errors import InputError


def _site(
    tmp_path: Path, root: str | None = None, *, named: bool = True, shared: bool = True
) -> SiteRequest:
    default = tmp_path / "home" / "site-cache"
    return SiteRequest("site:x", root, default, "--site", named, shared)


@pytest.fixture(autouse=True)
def _repo(tmp_path: Path) -> Path:
    """The repository's configuration (the bootstrap reads its datastore root)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "butler.yaml").write_text("datastore:\n  root: <butlerRoot>\n")
    return repo


def _names(backbone: Backbone) -> list[str]:
    return sorted(e.name for e in backbone.catalog.endpoints())


def test_first_use_makes_the_archive_and_the_site_then_finds_them(
    backbone: Backbone, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    site = _site(tmp_path, named=False, shared=False)
    made = backbone.bootstrap(repo, subject="the run's repository", where="--repo", site=site)
    assert (made.archive, made.site) == ("archive", "site:x")
    rows = {e.name: e for e in backbone.catalog.endpoints()}
    assert Path(rows["archive"].root) == repo.resolve()
    assert Path(rows["site:x"].root) == tmp_path / "home" / "site-cache"
    assert rows["site:x"].settings == {"shared_fs": False}
    again = backbone.bootstrap(repo, subject="the run's repository", where="--repo", site=site)
    assert again == made
    assert _names(backbone) == ["archive", "site:x"]


def test_checks_only_when_told_not_to_make(backbone: Backbone, tmp_path: Path) -> None:
    made = backbone.bootstrap(
        tmp_path / "repo", subject="s", where="w", site=_site(tmp_path), make=False
    )
    assert (made.archive, made.site) == (None, None)
    made = backbone.bootstrap(
        tmp_path / "repo", subject="s", where="w", site=_site(tmp_path), make_site=False
    )
    assert (made.archive, made.site) == ("archive", None)
    assert _names(backbone) == ["archive"]


def test_an_archive_of_another_repository_is_refused_naming_the_option(
    backbone: Backbone, tmp_path: Path
) -> None:
    backbone.add_endpoint("archive", "archive", str(tmp_path / "other"), {})
    with pytest.raises(InputError) as caught:
        backbone.bootstrap(
            tmp_path / "repo", subject="the campaign's repository", where="repo", make=False
        )
    assert caught.value.where == "repo"
    assert "already archives" in caught.value.message
    assert str((tmp_path / "repo").resolve()) in caught.value.message
    assert "--home" in (caught.value.hint or "")


def test_a_site_overlapping_the_repository_is_refused_before_anything_is_made(
    backbone: Backbone, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(OverlappingRootError) as caught:
        backbone.bootstrap(
            repo, subject="s", where="--repo", site=_site(tmp_path, str(repo / "cache"))
        )
    assert caught.value.where == "--site"
    assert _names(backbone) == []


def test_a_named_unknown_site_without_root_and_a_moved_root_are_refused(
    backbone: Backbone, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    with pytest.raises(UnknownEndpointError):
        backbone.bootstrap(repo, subject="s", where="--repo", site=_site(tmp_path))
    backbone.bootstrap(repo, subject="s", where="--repo", site=_site(tmp_path, str(tmp_path / "a")))
    with pytest.raises(InputError) as caught:
        backbone.bootstrap(
            repo, subject="s", where="--repo", site=_site(tmp_path, str(tmp_path / "b"))
        )
    assert caught.value.where == "root of site site:x"
