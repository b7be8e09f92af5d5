"""`skybatch demo` from the command line: the survey built, the demo campaign run to its
end and reported, bad input refused cleanly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skybatch.cli.main import main

SKYBATCH = str(Path(sys.executable).parent / "skybatch")


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("option", "value"),
    [("--visits", "0"), ("--detectors", "0"), ("--size", "10")],
)
def test_init_rejects_bad_shape_and_creates_nothing(
    tmp_path: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "survey"
    assert main(["demo", "init", str(target), option, value]) == 2
    err = capsys.readouterr().err
    assert option in err
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "skybatch-home"] == []


def test_init_refuses_a_non_empty_directory_and_leaves_it_alone(
    tiny_survey_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(tiny_survey_root)
    assert main(["demo", "init", str(tiny_survey_root), "--visits", "1"]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert _snapshot(tiny_survey_root) == before
    leftovers = [p for p in tiny_survey_root.parent.iterdir() if ".building-" in p.name]
    assert leftovers == []


def _skybatch(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKYBATCH, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


SEEING_LIMIT = 1.6  # the demo campaign's default
GROUP_LINE = re.compile(
    r"^  group (\S+): (\w+) \(run (\S+), (\d+)/(\d+) quanta succeeded\)$", flags=re.M
)


def _campaign_id(out: str) -> int:
    found = re.search(r"^campaign (\d+) \(demo-drp\): succeeded$", out, flags=re.M)
    assert found, out
    return int(found.group(1))


def _json_report(home: Path, campaign_id: int) -> dict[str, Any]:
    proc = _skybatch(home, "campaign", "report", str(campaign_id), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _assert_all_succeeded(report: dict[str, Any]) -> None:
    assert report["state"] == "succeeded" and report["failures"] == []
    for step in report["steps"]:
        assert step["state"] == "succeeded", step
        for group in step["groups"]:
            assert group["state"] == "succeeded", group
        for label, counts in step["tasks"].items():
            assert counts["succeeded"] == counts["expected"] > 0, (step["name"], label)
            assert counts["failed"] == counts["running"] == 0, (step["name"], label)


def _selection(selection: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Kept and dropped visits of a step's selection in the JSON report."""
    return tuple(  # type: ignore[return-value]
        [int(d["visit"]) for d in selection[part]] for part in ("kept", "dropped")
    )


def _coadd_visits(home: Path, run: str) -> set[int]:
    """Visits of the calexps that the quanta writing ``run``'s deepCoadds used, from the
    backbone's provenance edges."""
    from sqlalchemy import select

    from skybatch.backbone.models import EdgeRelation, FileRow, ProvenanceEdge
    from skybatch.backbone.service import Backbone
    from skybatch.settings import load_settings

    catalog = Backbone.from_settings(load_settings(home=home)).catalog
    coadds = catalog.files(run=run, dataset_type="deepCoadd")
    assert coadds
    visits: set[int] = set()
    with catalog.sessions() as session:
        for coadd in coadds:
            quanta = [
                activity.id
                for relation, activity, _ in catalog.provenance(coadd.id)
                if relation == EdgeRelation.WAS_GENERATED_BY and activity is not None
            ]
            assert quanta, coadd.path
            used = session.scalars(
                select(FileRow)
                .join(ProvenanceEdge, ProvenanceEdge.file_id == FileRow.id)
                .where(
                    ProvenanceEdge.activity_id.in_(quanta),
                    ProvenanceEdge.relation == EdgeRelation.USED,
                    FileRow.dataset_type == "calexp",
                )
            )
            visits |= {int(f.data_id["visit"]) for f in used}
    return visits


@pytest.mark.slow
def test_demo_run_builds_the_survey_and_runs_the_demo_campaign(tmp_path: Path) -> None:
    from lsst.daf.butler import Butler

    home, root = tmp_path / "home", tmp_path / "survey"
    shape = ["--visits", "3", "--detectors", "2", "--size", "128"]
    proc = _skybatch(home, "demo", "run", str(root), *shape)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"built the demo survey in {root.resolve()}" in out
    campaign_id = _campaign_id(out)

    # The printed report: every group of both steps succeeded with all its quanta.
    groups = GROUP_LINE.findall(out)
    assert [g[0] for g in groups] == ["visit_1000", "visit_1001", "visit_1002", "all"], out
    for name, state, _run, done, expected in groups:
        assert state == "succeeded" and done == expected and int(expected) > 0, name
    total = out.split("\ncampaign total\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert [line.split()[0] for line in total] == ["isr", "calibrate", "visitSummary", "coadd"]
    for line in total:
        _label, expected, succeeded, failed, running = line.split()[:5]
        assert expected == succeeded != "0" and failed == running == "0", line

    # The same from `skybatch campaign report ID --json`.
    report = _json_report(home, campaign_id)
    _assert_all_succeeded(report)
    step1, step2 = report["steps"]
    assert (step1["name"], step2["name"]) == ("step1", "step2")
    assert report["tasks"]["calibrate"]["expected"] == 6
    assert report["tasks"]["visitSummary"]["expected"] == 3

    # Step 2 was expanded over the good-seeing visits only: the visits whose
    # visitSummary (written by step 1) has every detector's PSF under the limit.
    seeing: dict[int, float] = {}
    with Butler.from_config(str(root / "repo")) as butler:
        runs = [g["run"] for g in step1["groups"]]
        for ref in butler.query_datasets("visitSummary", collections=runs, explain=False):
            seeing[int(ref.dataId["visit"])] = max(butler.get(ref)["psf_fwhm_arcsec"])
    good = sorted(v for v, fwhm in seeing.items() if fwhm < SEEING_LIMIT)
    bad = sorted(set(seeing) - set(good))
    assert sorted(seeing) == [1000, 1001, 1002]
    assert good and bad, f"the survey should have visits on both sides of the limit: {seeing}"
    assert _selection(step2["selection"]) == (good, bad)
    (coadd_group,) = step2["groups"]
    assert coadd_group["query"].endswith(f"(visit IN ({', '.join(map(str, good))}))")
    # The coadds were made from calexps of the kept visits, and of no other.
    assert _coadd_visits(home, coadd_group["run"]) == set(good)

    # What the command printed after the report: kept and dropped, and the visit table.
    assert f"  kept:    {', '.join(f'visit={v}' for v in good)}\n" in out
    assert f"  dropped: {', '.join(f'visit={v}' for v in bad)}\n" in out
    rows = re.findall(r"^\s+(10\d\d)\s+[gr]\s+epoch[12]\s.*\s(kept|dropped)$", out, flags=re.M)
    assert rows == [(str(v), "kept" if v in good else "dropped") for v in sorted(seeing)]
    assert f"report:  skybatch campaign report {campaign_id}" in out

    # Again on the same survey and home, with a seeing limit that keeps only the
    # sharpest visit: a new campaign with its own runs, step 2 over that visit only.
    sharpest = min(seeing, key=seeing.__getitem__)
    limit = f"{(seeing[sharpest] + sorted(seeing.values())[1]) / 2:.4f}"
    proc = _skybatch(home, "demo", "run", str(root), "-j", "1", "--seeing-limit", limit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"using the existing demo survey in {root.resolve()}" in proc.stdout
    second = _campaign_id(proc.stdout)
    assert second != campaign_id
    report = _json_report(home, second)
    _assert_all_succeeded(report)
    step2 = report["steps"][1]
    assert _selection(step2["selection"]) == ([sharpest], sorted(set(seeing) - {sharpest}))
    assert f"psf_fwhm_arcsec < {float(limit)!r}" in step2["selection"]["condition"]["where"]
    assert _coadd_visits(home, step2["groups"][0]["run"]) == {sharpest}


def _fake_survey(root: Path) -> Path:
    """A survey-shaped directory (a Butler repository with the demo's collections and no
    data, an empty reference catalog) for `demo run` not to build one: enough to submit
    the demo campaign."""
    from lsst.daf.butler import Butler, CollectionType

    Butler.makeRepo(str(root / "repo"))
    with Butler.from_config(str(root / "repo"), writeable=True) as butler:
        butler.collections.register("DemoCam/raw/all")
        butler.collections.register("DemoCam/calib", CollectionType.CALIBRATION)
        butler.collections.register("DemoCam/defaults", CollectionType.CHAINED)
        butler.collections.redefine_chain("DemoCam/defaults", ["DemoCam/raw/all", "DemoCam/calib"])
    (root / "refcat.sqlite").write_bytes(b"")
    return root


def test_a_failed_demo_campaign_exits_with_a_data_error_and_the_retry_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skybatch.campaign import demo as campaign_demo
    from skybatch.campaign.demo import DemoCampaignResult, demo_campaign_path
    from skybatch.campaign.models import CampaignRow
    from skybatch.campaign.states import State, change_state
    from skybatch.campaign.submit import submit_campaign
    from skybatch.db.state import open_state_db

    calls: list[dict[str, Any]] = []

    def failed_campaign(settings, survey_dir, **kw):  # type: ignore[no-untyped-def]
        """Submit the demo campaign, then fail it as a manager would."""
        calls.append({"survey_dir": survey_dir, "workers": kw["workers"]})
        calls[-1]["seeing_limit_arcsec"] = kw["seeing_limit_arcsec"]
        environ = {"DEMO_SURVEY": str(Path(survey_dir).resolve())}
        submitted = submit_campaign(settings, demo_campaign_path(), environ)
        with open_state_db(settings).begin() as session:
            row = session.get(CampaignRow, submitted.id)
            assert row is not None
            change_state(session, row, State.RUNNING, reason="test")
            row.message = "step(s) failed: step1"
            change_state(session, row, State.FAILED, reason=row.message)
        return DemoCampaignResult(submitted.id, "failed")

    monkeypatch.setattr(campaign_demo, "run_demo_campaign", failed_campaign)
    root = _fake_survey(tmp_path / "survey")
    argv = ["--home", str(tmp_path / "home"), "demo", "run", str(root)]
    assert main([*argv, "-j", "3", "--seeing-limit", "1.2"]) == 5
    assert calls == [{"survey_dir": root, "workers": 3, "seeing_limit_arcsec": 1.2}]
    captured = capsys.readouterr()
    assert f"using the existing demo survey in {root.resolve()}" in captured.out
    assert "campaign 1 (demo-drp): failed\n  step(s) failed: step1" in captured.out
    assert "kept:" not in captured.out  # nothing after the report of a failed campaign
    assert "demo campaign 1 failed" in captured.err
    assert "skybatch campaign report 1" in captured.err
    assert "skybatch campaign retry 1" in captured.err


def test_demo_run_has_no_output_option(tmp_path: Path) -> None:
    root = tmp_path / "survey"
    argv = ["--home", str(tmp_path / "home"), "demo", "run", str(root), "--output", "x/y"]
    assert main(argv) == 2
    assert not root.exists()


def test_demo_run_refuses_a_home_that_archives_another_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(tmp_path / "home")]
    other = _fake_survey(tmp_path / "other") / "repo"
    assert (
        main(
            [
                *home,
                "backbone",
                "endpoint",
                "add",
                "archive",
                "--kind",
                "archive",
                "--root",
                str(other),
            ]
        )
        == 0
    )
    target = tmp_path / "survey"
    assert main([*home, "demo", "run", str(target), "--visits", "1", "--detectors", "1"]) == 2
    err = capsys.readouterr().err
    assert "already archives" in err and "--home" in err
    assert not target.exists()


@pytest.mark.parametrize("option", [["-j", "0"], ["--seeing-limit", "0"], ["--seeing-limit", "-1"]])
def test_demo_run_rejects_a_non_positive_worker_count_or_seeing_limit(
    tmp_path: Path, option: list[str]
) -> None:
    root = tmp_path / "survey"
    assert main(["--home", str(tmp_path / "home"), "demo", "run", str(root), *option]) == 2
    assert not root.exists()


def test_demo_run_reports_a_failing_pipetask_with_its_log(
    tiny_survey_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skybatch.demo.driver import run_with_pipetask
    from skybatch.demo.survey import Survey
    from skybatch.errors import ExternalToolError

    bad = tmp_path / "bad.yaml"
    bad.write_text("description: broken\ntasks:\n  isr: skybatch.demo.tasks.isr.NoSuchTask\n")
    with pytest.raises(ExternalToolError) as info:
        run_with_pipetask(Survey(tiny_survey_root), pipeline=bad, show_progress=False)
    assert info.value.returncode != 0
    assert info.value.where is not None and Path(info.value.where).exists()
    assert "NoSuchTask" in Path(info.value.where).read_text()
