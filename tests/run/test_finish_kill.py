"""A run killed at any step of its finish (stage-back, Butler ingest, catalogs, the
intermediates' clean-up inside and around the Butler's prune, unpinning) is finished
by ``--resume`` with the outputs of an uninterrupted run: nothing lost, nothing
duplicated, every catalog md5 true to its file, no temporary file left."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.faults import ENV
from skybatch.run.driver import RunOptions, submit_run
from skybatch.run.finish import FINISH_POINTS
from skybatch.settings import load_settings
from skybatch.testing.outcomes import compare, snapshot
from skybatch.testing.processes import run_until

pytestmark = pytest.mark.slow
SKYBATCH = str(Path(sys.executable).parent / "skybatch")
QUERY = "visit = 1000"


def _same(run: str) -> str:
    return "run"


@pytest.mark.parametrize("point", FINISH_POINTS)
def test_a_run_killed_during_its_finish_is_finished_by_resume(
    point: str, survey: Survey, tmp_path: Path
) -> None:
    reference = submit_run(
        load_settings(home=tmp_path / "ref-home"),
        RunOptions(
            repo=survey.repo,
            pipeline=str(pipeline_path()),
            inputs=[DEFAULTS],
            query=QUERY,
            output_run="t/ref",
            workers=2,
            intermediates=["postISRCCD"],
        ),
    )
    assert reference.state == "succeeded"
    expected = snapshot(tmp_path / "ref-home", survey.repo, ["t/ref"], family=_same)
    assert expected.problems == [] and expected.total > 0

    home = tmp_path / "home"
    log = tmp_path / "run.log"
    command = [
        SKYBATCH, "--home", str(home), "run", "--repo", str(survey.repo),
        "--pipeline", str(pipeline_path()), "--input", DEFAULTS, "--query", QUERY,
        "--output-run", "t/killed", "--workers", "2", "--intermediate", "postISRCCD",
    ]  # fmt: skip
    first = run_until(command, log=log, env={**os.environ, ENV: point})
    assert first.returncode == -signal.SIGKILL, log.read_text()[-3000:]

    resumed = run_until(
        [SKYBATCH, "--home", str(home), "run", "--resume", "t/killed"], log=log, env=os.environ
    )
    assert resumed.returncode == 0, log.read_text()[-3000:]
    got = snapshot(home, survey.repo, ["t/killed"], family=_same)
    assert got.problems == []
    assert compare(expected, got).ok, compare(expected, got)
