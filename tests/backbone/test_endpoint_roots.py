"""Endpoint roots never overlap, and no deletion destroys another endpoint's file or the
last copy of a file (issue 12, defect 1)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skybatch.backbone.maintenance import delete, evict
from skybatch.backbone.models import ReplicaState
from skybatch.backbone.removal import UnsafeRemovalError
from skybatch.backbone.replication import ensure_space, replicate
from skybatch.backbone.roots import OverlappingRootError
from skybatch.backbone.service import Backbone
from skybatch.cli.main import main

MakeFiles = Callable[[int, int, str], list[Any]]


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.dat"))
    }


@pytest.mark.parametrize(
    "where", ["archive", "archive/run/a", "", "site-a", "site-a/sub", "link-to-archive"]
)
def test_an_endpoint_overlapping_another_root_is_refused(
    backbone: Backbone, archive: str, tmp_path: Path, where: str
) -> None:
    backbone.add_endpoint("site:a", "site", str(tmp_path / "site-a"), {})
    (tmp_path / "link-to-archive").symlink_to(tmp_path / "archive")
    before = [e.name for e in backbone.catalog.endpoints()]
    with pytest.raises(OverlappingRootError) as caught:
        backbone.add_endpoint("site:b", "site", str(tmp_path / where), {})
    message = caught.value.message
    assert str((tmp_path / where).resolve()) in message
    assert str(caught.value.other) in message
    assert "root of endpoint 'site:b'" in (caught.value.where or "")
    assert [e.name for e in backbone.catalog.endpoints()] == before


def test_backbone_endpoint_add_refuses_an_overlapping_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, repo = tmp_path / "home", tmp_path / "repo"

    def cli(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--home", str(home), "backbone", "endpoint", *args])
        return code, capsys.readouterr().err

    assert cli("add", "archive", "--kind", "archive", "--root", str(repo))[0] == 0
    code, err = cli("add", "site:x", "--kind", "site", "--root", str(repo / "cache"))
    assert code == 2
    assert str(repo / "cache") in err and str(repo) in err and "--root" in err
    code, err = cli("add", "site:y", "--kind", "site", "--root", str(tmp_path))
    assert code == 2 and "contains" in err
    assert cli("add", "site:z", "--kind", "site", "--root", str(tmp_path / "cache"))[0] == 0


def _overlapping_home(backbone: Backbone, make_files: MakeFiles, tmp_path: Path) -> list[Any]:
    """A home made before roots were checked: a site cache rooted at the archive itself."""
    files = make_files(4, 2000, "run/a")
    backbone.catalog.add_endpoint("site:bad", "site", str(tmp_path / "archive"), {})
    backbone.catalog.set_replicas([f.id for f in files], "site:bad", ReplicaState.ONLINE)
    return files


def test_evicting_site_copies_that_are_the_archive_files_is_refused(
    backbone: Backbone, make_files: MakeFiles, tmp_path: Path
) -> None:
    files = _overlapping_home(backbone, make_files, tmp_path)
    before = _digests(tmp_path / "archive")
    with pytest.raises(UnsafeRemovalError) as caught:
        evict(backbone, "site:bad", files)
    assert "lies inside the root of endpoint 'archive'" in caught.value.message
    assert _digests(tmp_path / "archive") == before
    with pytest.raises(UnsafeRemovalError):
        delete(backbone, files[:1])
    assert _digests(tmp_path / "archive") == before


def test_the_last_copy_is_never_deleted_even_when_the_catalog_says_otherwise(
    backbone: Backbone, make_files: MakeFiles, tmp_path: Path
) -> None:
    """A site replica whose archive copy is gone from disk (catalog stale) stays."""
    files = make_files(3, 1500, "run/a")
    backbone.add_endpoint("site:s", "site", str(tmp_path / "site"), {})
    replicate(backbone, files, "site:s")
    lost = tmp_path / "archive" / files[0].path
    lost.unlink()  # the archive's copy vanished; its replica row still says online
    before = _digests(tmp_path / "site")
    with pytest.raises(UnsafeRemovalError) as caught:
        evict(backbone, "site:s", files)
    assert "last copy of " + files[0].path in caught.value.message
    assert _digests(tmp_path / "site") == before
    # the quota clean-up passes over it rather than deleting it
    evicted, _ = ensure_space(backbone, "site:s", 0, set())
    assert evicted == 0
    # the other two have a real second copy: evicting them works
    report = evict(backbone, "site:s", files[1:])
    assert report.evicted == 2
    assert os.path.exists(tmp_path / "site" / files[0].path)
