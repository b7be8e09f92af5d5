"""`skybatch demo` from the command line: the pipeline run by skybatch, outputs reported,
bad input refused cleanly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
        timeout=600,
    )


@pytest.mark.slow
def test_demo_run_builds_the_survey_and_runs_the_pipeline_with_skybatch(tmp_path: Path) -> None:
    from lsst.daf.butler import Butler

    home, root = tmp_path / "home", tmp_path / "survey"
    shape = ["--visits", "2", "--detectors", "2", "--size", "128"]
    proc = _skybatch(home, "demo", "run", str(root), *shape)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"built the demo survey in {root.resolve()}" in out
    found = re.search(r"output collection: (demo/run/\d{8}T\d{6}Z)$", out, flags=re.M)
    assert found, out
    run = found.group(1)
    assert f"report:  skybatch report {run}" in out
    assert len(re.findall(r"^\s+10\d\d\s+[gr]\s+epoch[12]", out, flags=re.M)) == 2

    # The outputs are in the Butler, in the output RUN collection.
    with Butler.from_config(str(root / "repo")) as butler:
        count = {
            name: len(butler.query_datasets(name, collections=run, explain=False))
            for name in ("postISRCCD", "calexp", "src", "visitSummary", "deepCoadd")
        }
        assert count == {**count, "postISRCCD": 4, "calexp": 4, "src": 4, "visitSummary": 2}
        assert count["deepCoadd"] >= 2  # at least one patch in each band
        assert butler.registry.getCollectionType(run).name == "RUN"
    assert re.search(r"datasets: .*calexp=4.*visitSummary=2", out)

    # skybatch ran it: its report knows the run and every quantum succeeded.
    report = _skybatch(home, "report", run, "--json")
    assert report.returncode == 0, report.stderr[-3000:]
    data = json.loads(report.stdout)
    assert data["state"] == "succeeded" and data["failures"] == []
    assert set(data["tasks"]) == {"isr", "calibrate", "visitSummary", "coadd"}
    for label, counts in data["tasks"].items():
        assert counts["succeeded"] == counts["expected"] > 0, label
    assert data["tasks"]["calibrate"]["expected"] == 4


@pytest.mark.slow
def test_demo_run_on_an_existing_survey_prints_where_outputs_are(
    tiny_survey_root: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    proc = _skybatch(home, "demo", "run", str(tiny_survey_root), "--output", "cli/run", "-j", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"using the existing demo survey in {tiny_survey_root.resolve()}" in out
    repo = re.search(r"Butler repository: (\S+)", out)
    files = re.search(r"files under:\s+(\S+)", out)
    workdir = re.search(r"workdir:\s+(\S+)", out)
    assert repo and Path(repo.group(1)).joinpath("butler.yaml").exists()
    assert files and Path(files.group(1)).is_dir()
    assert workdir and Path(workdir.group(1)).is_relative_to(home)
    assert "output collection: cli/run" in out
    assert re.search(r"datasets: .*calexp=4", out)
    # One visit line per visit in the summary table.
    assert len(re.findall(r"^\s+10\d\d\s+[gr]\s+epoch[12]", out, flags=re.M)) == 2
    assert "skybatch report cli/run" in out


def _fake_survey(root: Path) -> Path:
    """Just enough of a survey for `demo run` not to build one."""
    (root / "repo").mkdir(parents=True)
    (root / "repo" / "butler.yaml").write_text("")
    return root


def test_a_failed_demo_run_exits_with_a_data_error_and_the_resume_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skybatch.demo import driver
    from skybatch.run.driver import RunSummary

    calls = []

    def failed_run(settings, survey, output, workers, progress):  # type: ignore[no-untyped-def]
        calls.append((output, workers))
        summary = RunSummary(
            run=output,
            state="failed",
            workdir=tmp_path / "work",
            quanta=18,
            jobs={"succeeded": 3, "failed": 1, "pending": 14},
            expansion_s=0.5,
            wall_s=1.0,
        )
        return driver.SkybatchResult(survey, summary, wall_s=1.5)

    monkeypatch.setattr(driver, "run_with_skybatch", failed_run)
    root = _fake_survey(tmp_path / "survey")
    argv = ["--home", str(tmp_path / "home"), "demo", "run", str(root), "--output", "t/bad"]
    assert main([*argv, "-j", "3"]) == 5
    assert calls == [("t/bad", 3)]
    captured = capsys.readouterr()
    assert "run t/bad: failed" in captured.out
    assert "jobs: succeeded=3, failed=1, pending=14" in captured.out
    assert "skybatch report t/bad" in captured.err
    assert "skybatch run --resume t/bad" in captured.err


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


def test_demo_run_rejects_a_non_positive_worker_count(tmp_path: Path) -> None:
    root = _fake_survey(tmp_path / "survey")
    assert main(["--home", str(tmp_path / "home"), "demo", "run", str(root), "-j", "0"]) == 2


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
