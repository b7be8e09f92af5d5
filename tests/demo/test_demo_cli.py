"""`skybatch demo` from the command line: outputs reported, bad input refused cleanly."""

from __future__ import annotations

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


@pytest.mark.slow
def test_demo_run_on_an_existing_survey_prints_where_outputs_are(tiny_survey_root: Path) -> None:
    proc = subprocess.run(
        [SKYBATCH, "demo", "run", str(tiny_survey_root), "--output", "cli/run"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    repo = re.search(r"Butler repository: (\S+)", out)
    files = re.search(r"files under:\s+(\S+)", out)
    assert repo and Path(repo.group(1)).joinpath("butler.yaml").exists()
    assert files and Path(files.group(1)).is_dir()
    assert "output collection: cli/run" in out
    assert re.search(r"datasets: .*calexp=4", out)
    # One visit line per visit in the summary table.
    assert len(re.findall(r"^\s+10\d\d\s+[gr]\s+epoch[12]", out, flags=re.M)) == 2


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
