"""A run's file-naming policy: daf_butler file templates that replace the repository's
for the run's outputs (``skybatch run --file-template``, a campaign's ``file_templates``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from sqlalchemy import select

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.service import Backbone
from skybatch.cli.main import main
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.errors import InputError
from skybatch.run.driver import RunOptions, resume_run, submit_run
from skybatch.run.models import RunRow
from skybatch.settings import load_settings

CALEXP = "{run:/}/custom/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}_{detector}"
SRC = "{run:/}/tables/{datasetType}_{instrument}_{visit}_{detector}_{id}"


def _options(survey: Survey, run: str, templates: dict[str, str]) -> RunOptions:
    return RunOptions(
        repo=survey.repo,
        pipeline=str(pipeline_path()),
        inputs=[DEFAULTS],
        output_run=run,
        workers=2,
        file_templates=templates,
    )


@pytest.mark.slow
def test_outputs_are_written_catalogued_and_ingested_at_the_templated_paths(
    survey: Survey, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    summary = submit_run(settings, _options(survey, "t/named", {"calexp": CALEXP, "src": SRC}))
    assert summary.state == "succeeded"
    backbone = Backbone.from_settings(settings)
    repo = survey.repo.resolve()
    with Butler.from_config(str(repo)) as butler:
        refs = butler.query_all_datasets("t/named", find_first=False, limit=None)
        files = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
        by_type: dict[str, list[Path]] = {}
        for ref in refs:
            local = Path(butler.getURI(ref).ospath)
            by_type.setdefault(ref.datasetType.name, []).append(local)
            # The catalog knows each file where the Butler has it, with its checksum.
            entry = files[str(ref.id)]
            assert repo / entry.path == local
            assert md5_file(local) == (entry.size_bytes, entry.md5)
        calexps = by_type["calexp"]
        assert len(calexps) == 4  # 2 visits x 2 detectors
        for path in calexps:
            rel = path.relative_to(repo).as_posix()
            assert rel.startswith("t/named/custom/calexp/"), rel
            assert path.is_file()
        for path in by_type["src"]:
            assert path.relative_to(repo).as_posix().startswith("t/named/tables/src_")
        # Dataset types without an override keep the repository's templates.
        for path in by_type["postISRCCD"]:
            assert "/custom/" not in path.as_posix() and "/tables/" not in path.as_posix()
        # The repository's own configuration is untouched: a new Butler names
        # calexps as before.
        assert "custom" not in (repo / "butler.yaml").read_text()
    # The run's configuration, with the templates, is kept beside its workflow and the
    # run resumes with it (nothing left to do: the same outputs, no duplicates).
    assert "custom/{datasetType}" in (summary.workdir / "butler.yaml").read_text()
    again = resume_run(settings, "t/named")
    assert again.state == "succeeded"
    with Butler.from_config(str(repo)) as butler:
        assert len(butler.query_all_datasets("t/named", find_first=False, limit=None)) == len(refs)


@pytest.mark.slow
def test_a_template_that_would_make_outputs_share_a_path_stops_before_any_job(
    survey: Survey, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    # A valid template, but without {detector} two detectors' calexps would collide.
    clash = {"calexp": "{run}/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}"}
    with pytest.raises(InputError) as info:
        submit_run(settings, _options(survey, "t/clash", clash))
    message = str(info.value)
    assert "no usable file template for calexp" in message
    assert "detector" in message
    with Butler.from_config(str(survey.repo)) as butler:
        assert not butler.collections.query("t/*"), "no output run in the Butler"
    backbone = Backbone.from_settings(settings)
    with backbone.catalog.sessions() as session:  # failed, saying why (issue 15 item 4)
        row = session.scalar(select(RunRow).where(RunRow.name == "t/clash"))
        assert row is not None and row.state == "failed"
        assert "no usable file template for calexp" in (row.message or "")
    assert not backbone.catalog.files(path_prefix="t/clash/")
    assert not (settings.home / "runs" / "t_clash").exists()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("calexp", "--file-template 'calexp' is not DATASET_TYPE=TEMPLATE"),
        ("calexp={run}/{visit}/{detector}", "does not name files uniquely"),
        ("calexp={run}/{datasetType}/{nosuch", "invalid file template"),
    ],
    ids=["no template", "not unique", "unparsable"],
)
def test_bad_file_template_flags_exit_2_and_write_nothing(
    flag: str, expected: str, survey: Survey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    args = ["--home", str(home), "run", "--repo", str(survey.repo)]
    args += ["--pipeline", str(pipeline_path()), "--input", DEFAULTS, "--file-template", flag]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "--file-template" in err
    assert not home.exists()


def test_a_campaign_passes_its_file_templates_to_every_group_run(tmp_path: Path) -> None:
    from skybatch.campaign.config import Campaign
    from skybatch.campaign.execute import group_run_options

    campaign = Campaign.model_validate(
        {
            "name": "named",
            "repo": str(tmp_path),
            "inputs": ["a"],
            "file_templates": {"calexp": CALEXP},
            "steps": [{"name": "one", "pipeline": "p.yaml"}],
        }
    )
    options = group_run_options(
        campaign, campaign.steps[0], inputs=["a"], query="", run="named/one/0"
    )
    assert options.file_templates == {"calexp": CALEXP}
    assert RunOptions.from_json(options.to_json()).file_templates == {"calexp": CALEXP}
