"""The README's pilot commands finish on a real Slurm, and jobs no allocation can take
fail clearly and quickly instead of waiting forever.

Skipped, with the reason, when no Slurm controller answers (``scripts/slurm/up.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from skybatch.db.state import open_state_db
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.run.models import RunRow
from skybatch.settings import load_settings

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))
from slurmworld import require_slurm

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
SKYBATCH = str(Path(sys.executable).parent / "skybatch")


@pytest.fixture(autouse=True)
def _slurm() -> None:
    require_slurm()


def _skybatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SKYBATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a run that waits forever fails the test here
        env={**os.environ, **(env or {})},
    )


def _run_args(home: Path, survey: Survey, run: str) -> list[str]:
    return [
        "--home",
        str(home),
        "run",
        "--repo",
        str(survey.repo),
        "--pipeline",
        str(pipeline_path()),
        "--input",
        DEFAULTS,
        "--output-run",
        run,
        "--engine",
        "slurm",
    ]


def test_readme_pilot_run_with_the_defaults_finishes_and_resume_takes_new_settings(
    survey: Survey, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    done = _skybatch(*_run_args(home, survey, "t/pilot"), "--engine-setting", "mode=pilot")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "run t/pilot: succeeded" in done.stdout
    # New engine settings on --resume are checked, then used and kept with the run.
    refused = _skybatch(
        "--home",
        str(home),
        "run",
        "--resume",
        "t/pilot",
        "--engine-setting",
        "pilot.walltime_s=600",
    )
    assert refused.returncode == 2
    assert "exceeds the pilots' walltime 600 s" in refused.stderr
    resumed = _skybatch(
        "--home",
        str(home),
        "run",
        "--resume",
        "t/pilot",
        "--engine-setting",
        "pilot.walltime_s=10800",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open_state_db(load_settings(home=home))() as session:
        options = session.scalars(select(RunRow.options).where(RunRow.name == "t/pilot")).one()
    assert options["engine_settings"]["pilot"]["walltime_s"] == 10800
    assert options["engine_settings"]["mode"] == "pilot"


def test_pilots_too_short_for_the_jobs_are_refused_at_once(survey: Survey, tmp_path: Path) -> None:
    home = tmp_path / "home"
    started = time.monotonic()
    done = _skybatch(
        *_run_args(home, survey, "t/short"),
        "--engine-setting",
        "mode=pilot",
        "--engine-setting",
        "pilot.walltime_s=3600",
        timeout=120,
    )
    assert time.monotonic() - started < 120
    assert done.returncode == 2
    assert (
        "walltime 3600 s plus the pilots' end margin 120 s exceeds the pilots' walltime 3600 s"
        in done.stderr
    )
    assert not home.exists(), "nothing written"


def test_job_larger_than_any_node_fails_as_unschedulable_without_waiting(
    survey: Survey, tmp_path: Path
) -> None:
    """Beyond what the settings say: the partition's largest node (from sinfo)."""
    home = tmp_path / "home"
    done = _skybatch(
        *_run_args(home, survey, "t/huge"),
        "--resources",
        "isr=memory_mb:100000000",
        "--memory-cap-mb",
        "200000000",
        timeout=300,
    )
    assert done.returncode != 0
    report = _skybatch("--home", str(home), "report", "t/huge")
    assert "unschedulable" in report.stdout
    assert (
        "memory 100000000 MB (+ memory_margin_mb 64 MB) exceeds the largest node" in report.stdout
    )


def test_readme_demo_pilot_command_finishes(tmp_path: Path) -> None:
    """``DEMO_SLURM_MODE=pilot skybatch demo run --engine slurm`` on a tiny survey."""
    done = _skybatch(
        "--home",
        str(tmp_path / "home"),
        "demo",
        "run",
        str(tmp_path / "demo-survey"),
        "--visits",
        "2",
        "--detectors",
        "2",
        "--size",
        "128",
        "--engine",
        "slurm",
        env={"DEMO_SLURM_MODE": "pilot"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
