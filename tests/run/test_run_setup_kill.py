"""`skybatch run` killed with kill -9 at every boundary of its set-up can be finished.

Each trial runs the real CLI in a subprocess that SIGKILLs itself right after one
set-up phase (``SKYBATCH_FAULT_KILL_AT=setup:PHASE``), then finishes the run with ``--resume``
(or with the same command again): the outputs are those of an uninterrupted run, with
no duplicate file and no leftover of the killed attempt.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from runworld import SKYBATCH, Outputs, run_command, run_outputs, skybatch_killed_at
from sqlalchemy import func, select

from skybatch.backbone.models import FileRow
from skybatch.demo.survey import Survey
from skybatch.run.models import RunRow
from skybatch.run.setup import SETUP_PHASES
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow
RUN = "t/setup-kill"


def _command(home: Path, survey: Survey) -> list[str]:
    return run_command(home, survey, RUN, "--workers", "2")


def _skybatch(cmd: list[str], kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return skybatch_killed_at(cmd, None if kill_at is None else f"setup:{kill_at}")


@pytest.fixture
def expected(uninterrupted_outputs: Outputs) -> Outputs:
    return uninterrupted_outputs


def _check_finished(home: Path, survey: Survey, expected: Outputs) -> None:
    assert run_outputs(survey.repo, RUN) == expected
    from skybatch.db.state import open_state_db

    sessions = open_state_db(load_settings(home=home))
    with sessions() as session:
        assert session.scalars(select(RunRow.state).where(RunRow.name == RUN)).all() == [
            "succeeded"
        ]
        paths = session.scalars(select(FileRow.path).where(FileRow.run == RUN)).all()
        n_files = session.scalar(select(func.count()).select_from(FileRow))
    assert len(paths) == len(set(paths)), "no output registered twice"
    with Butler.from_config(str(survey.repo)) as butler:
        refs = butler.query_all_datasets(RUN, find_first=False, limit=None)
    assert len(refs) == len(expected), "no duplicate dataset in the Butler"
    assert n_files is not None and n_files >= len(refs)
    assert not list((home / "site-cache").rglob("*.tmp*")), "no temporary file left"


@pytest.mark.parametrize("phase", SETUP_PHASES)
def test_kill_after_a_setup_phase_then_resume_gives_the_uninterruptedrun_outputs(
    phase: str, survey: Survey, tmp_path: Path, expected: Outputs
) -> None:
    home = tmp_path / "home"
    killed = _skybatch(_command(home, survey), kill_at=phase)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = _skybatch([SKYBATCH, "--home", str(home), "run", "--resume", RUN])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"run {RUN}: succeeded" in resumed.stdout
    _check_finished(home, survey, expected)


@pytest.mark.parametrize("phase", ["record", "provenance", "inputs"])
def test_the_same_command_again_sets_a_half_made_run_up_again(
    phase: str, survey: Survey, tmp_path: Path, expected: Outputs
) -> None:
    home = tmp_path / "home"
    cmd = _command(home, survey)
    assert _skybatch(cmd, kill_at=phase).returncode == -signal.SIGKILL
    again = _skybatch(cmd)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "already exists" not in again.stderr
    _check_finished(home, survey, expected)


def test_a_finished_setup_is_resumed_not_redone(survey: Survey, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cmd = _command(home, survey)
    assert _skybatch(cmd, kill_at="jobs").returncode == -signal.SIGKILL
    again = _skybatch(cmd)
    assert again.returncode == 2
    assert f"skybatch run --resume {RUN}" in again.stderr
