"""A corrupt replica in the site cache is never consumed (issue 12, defect 4): stage-in
checks it, marks it corrupt, reads the archive's copy instead, and the run's outputs are
those of a run that never saw the corruption."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsst.daf.butler import Butler

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.service import Backbone
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.run.driver import RunOptions, read_reports, submit_run
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow

QUERY = "visit = 1000 AND detector = 0"
# Files whose bytes depend only on the inputs (a table written with a timestamp does not).
TYPES = ("postISRCCD", "calexp")


def _options(survey: Survey, run: str) -> RunOptions:
    return RunOptions(
        repo=survey.repo,
        pipeline=str(pipeline_path()) + "#step1",
        inputs=[DEFAULTS],
        workers=2,
        output_run=run,
        query=QUERY,
    )


def _digests(survey: Survey, run: str) -> dict[tuple[str, tuple], str]:  # type: ignore[type-arg]
    """md5 of every output file of the given types, by (dataset type, data id)."""
    out = {}
    with Butler.from_config(str(survey.repo)) as butler:
        for ref in butler.query_all_datasets(run, find_first=False, limit=None):
            if ref.datasetType.name in TYPES:
                key = (ref.datasetType.name, tuple(sorted(ref.dataId.required.items())))
                out[key] = md5_file(Path(butler.getURI(ref).ospath))[1]
    return out


def test_a_flipped_byte_in_a_cached_raw_is_not_consumed(survey: Survey, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    assert submit_run(settings, _options(survey, "t/clean")).state == "succeeded"
    clean = _digests(survey, "t/clean")
    assert {t for t, _ in clean} == set(TYPES)

    backbone = Backbone.from_settings(settings)
    raws = backbone.catalog.files(dataset_type="raw")
    cached = [p for p in backbone.catalog.placements([f.id for f in raws], "site:local")]
    assert cached and all(p.replica.state == "online" for p in cached)
    # Flip one byte in the middle of every cached raw the run reads (same size).
    site = backbone.endpoint("site:local")
    flipped = []
    for p in cached:
        local = site.local_path(p.file.path)
        data = bytearray(local.read_bytes())
        data[len(data) // 2] ^= 0xFF
        local.write_bytes(bytes(data))
        flipped.append(p.file)
    assert md5_file(site.local_path(flipped[0].path))[1] != flipped[0].md5

    again = submit_run(settings, _options(survey, "t/again"))
    assert again.state == "succeeded"
    replaced = {p for r in read_reports(Path(again.workdir)) for p in r.inputs_replaced}
    assert replaced and replaced <= {f.path for f in flipped}  # the jobs say what they did
    assert _digests(survey, "t/again") == clean  # the corrupt bytes went nowhere
    after = backbone.catalog.placements([f.id for f in flipped], "site:local")
    read = [p for p in after if p.replica.state == "corrupt"]
    assert read, "the corrupt replicas the jobs met are marked corrupt in the catalog"
    # The archive's copies are untouched.
    archive = backbone.endpoint("archive")
    assert all(md5_file(archive.local_path(f.path)) == (f.size_bytes, f.md5) for f in flipped)
