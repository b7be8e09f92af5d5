"""A run on a site whose compute nodes do not see the site cache (``shared_filesystem``
False): jobs fetch their inputs from the archive (recalled from tape first) and push
their outputs there; the outputs end up ingested and cataloged as on a shared site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from sqlalchemy import select

from skybatch.backbone.butler import register_butler
from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import ReplicaState
from skybatch.backbone.service import Backbone
from skybatch.backbone.staging import release_to_tape
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.run.driver import RunOptions, submit_run
from skybatch.run.models import RunRow
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


def test_jobs_stage_through_the_archive_when_nodes_do_not_see_the_site(
    survey: Survey, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    backbone = Backbone.from_settings(settings)
    backbone.add_endpoint("archive", "archive", str(survey.repo))
    register_butler(backbone, survey.repo, [DEFAULTS])
    raws = backbone.catalog.files(dataset_type="raw")
    assert raws
    # The raws are on tape only: the run must recall them to the archive's disk front.
    release_to_tape(backbone, raws)
    assert not any(Path(survey.repo, f.path).exists() for f in raws)
    site_root = tmp_path / "site"

    summary = submit_run(
        settings,
        RunOptions(
            repo=survey.repo,
            pipeline=str(pipeline_path()),
            inputs=[DEFAULTS],
            workers=2,
            output_run="t/no-shared-fs",
            shared_filesystem=False,
            site_root=str(site_root),
        ),
    )

    assert summary.state == "succeeded", summary
    assert summary.outputs_ingested > 0 and summary.catalog_rows > 0
    # Every job read from and wrote to the archive.
    reports = list((summary.workdir / "jobs").glob("*/attempt-*/report.json"))
    assert reports
    assert {json.loads(p.read_text())["stage_in_mode"] for p in reports} == {"archive"}
    # The raws were recalled (online on the archive again), never copied to the site.
    placements = backbone.catalog.placements([f.id for f in raws])
    assert {(p.endpoint, p.replica.state) for p in placements} == {("archive", ReplicaState.ONLINE)}
    # The site endpoint was made at the given root, flagged as not seen by the nodes,
    # and holds nothing.
    (site,) = [e for e in backbone.catalog.endpoints() if e.kind == "site"]
    assert Path(site.root) == site_root.resolve()
    assert site.settings == {"shared_fs": False}
    assert backbone.catalog.replicas_on(site.name) == []
    assert not site_root.exists() or not [p for p in site_root.rglob("*") if p.is_file()]
    # Each output is in the Butler, in the catalog with an online archive replica, and
    # the file in the repository is the one the catalog describes.
    with Butler.from_config(str(survey.repo)) as butler:
        refs = butler.query_all_datasets("t/no-shared-fs", find_first=False, limit=None)
        types = {r.datasetType.name for r in refs}
        assert {"calexp", "src", "visitSummary", "deepCoadd", "deepCoadd_src"} <= types
        files = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
        assert len(files) == len(refs)
        online = {
            p.file.id
            for p in backbone.catalog.placements([f.id for f in files.values()], "archive")
            if p.replica.state == ReplicaState.ONLINE
        }
        assert online == {f.id for f in files.values()}
        for ref in refs:
            f = files[str(ref.id)]
            assert md5_file(Path(butler.getURI(ref).ospath)) == (f.size_bytes, f.md5)
    # The run keeps its options: a resume stages through the archive as well.
    with backbone.catalog.sessions() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == "t/no-shared-fs"))
        assert row is not None
        stored = RunOptions.from_json(row.options)
    assert stored.shared_filesystem is False
    assert stored.site_root == str(site_root)
