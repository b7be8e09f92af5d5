"""``skybatch run`` refuses a site cache that overlaps the repository before it writes
anything, even one defined in a home made before roots were checked (issue 12, defect 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsst.daf.butler import Butler

from skybatch.backbone.roots import OverlappingRootError
from skybatch.backbone.service import Backbone
from skybatch.demo.driver import pipeline_path
from skybatch.run.driver import RunOptions, submit_run
from skybatch.settings import load_settings


@pytest.mark.parametrize("where", ["repo", "repo/cache", "."])
def test_a_site_overlapping_the_repository_is_refused(tmp_path: Path, where: str) -> None:
    repo = tmp_path / "repo"
    Butler.makeRepo(str(repo))
    settings = load_settings(home=tmp_path / "home")
    catalog = Backbone.from_settings(settings).catalog
    # As an older skybatch let it be made (the catalog itself does not check roots).
    catalog.add_endpoint("site:old", "site", str(tmp_path / where), {})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    options = RunOptions(
        repo=repo, pipeline=str(pipeline_path()), inputs=["in"], site="site:old", workers=1
    )
    with pytest.raises(OverlappingRootError) as caught:
        submit_run(settings, options, None)
    assert caught.value.where == "--site"
    assert str(repo.resolve()) in caught.value.message
    assert "site:old" in caught.value.message
    assert [e.name for e in catalog.endpoints()] == ["site:old"]  # no archive made
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
