"""A driver killed right after the engine took jobs, before it wrote their engine ids.

The scheduler commits each attempt as ``submitted`` before the engine gets the job
(write-ahead), so the killed driver's jobs are all counted: ``--resume`` retries them
as new attempts, and on Slurm (whose jobs outlive the driver) first cancels the
killed driver's array tasks that no row names (``Engine.strays``). A stray attempt
that reaches its stage-out after the restart has taken the job over is refused
(``check_current_attempt``): the outputs are those of an uninterrupted run and the
catalog's checksums match the files.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from runworld import SKYBATCH, Outputs, run_command, run_outputs, skybatch_killed_at
from sqlalchemy import select

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import FileRow
from skybatch.db.state import open_state_db
from skybatch.demo.survey import Survey
from skybatch.engines.slurm.commands import SlurmCommands
from skybatch.engines.slurm.engine import job_name
from skybatch.engines.slurm.states import FINISHED
from skybatch.run.models import JobAttemptRow, JobRow, RunRow
from skybatch.settings import load_settings

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))
from slurmworld import require_slurm

pytestmark = pytest.mark.slow
RUN = "t/kill-submitted"


@pytest.fixture
def expected(uninterrupted_outputs: Outputs) -> Outputs:
    return uninterrupted_outputs


def _kill_then_resume(home: Path, survey: Survey, *options: str) -> str:
    killed = skybatch_killed_at(run_command(home, survey, RUN, *options), "execute:submitted")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    sessions = open_state_db(load_settings(home=home))
    with sessions() as session:
        written = session.execute(
            select(JobRow.state, JobRow.attempts, JobRow.engine_id).where(JobRow.state != "pending")
        ).all()
    # Written ahead: the jobs the engine took are in the database, with no engine id.
    assert written and {tuple(r) for r in written} == {("submitted", 1, None)}, written
    resumed = skybatch_killed_at([SKYBATCH, "--home", str(home), "run", "--resume", RUN])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"run {RUN}: succeeded" in resumed.stdout
    return resumed.stderr


def _check(home: Path, survey: Survey, expected: Outputs) -> None:
    assert run_outputs(survey.repo, RUN) == expected
    sessions = open_state_db(load_settings(home=home))
    with sessions() as session:
        assert session.scalar(select(RunRow.state).where(RunRow.name == RUN)) == "succeeded"
        attempts = session.execute(
            select(JobRow.name, JobAttemptRow.attempt, JobAttemptRow.state, JobAttemptRow.failure)
            .join(JobAttemptRow, JobAttemptRow.job_id == JobRow.id)
            .order_by(JobRow.name, JobAttemptRow.attempt)
        ).all()
        files = session.execute(select(FileRow.path, FileRow.md5).where(FileRow.run == RUN)).all()
    lost = {name for name, attempt, state, failure in attempts if failure == "lost"}
    assert lost, "the killed driver's jobs were counted as lost attempts"
    for name in lost:  # each was retried under a new attempt number, which succeeded
        mine = [(a, s) for n, a, s, _ in attempts if n == name]
        assert mine[0] == (1, "failed") and mine[-1][1] == "succeeded" and mine[-1][0] >= 2
    # What the catalog says of each output is what the Butler holds.
    assert files and len({p for p, _ in files}) == len(files)
    for path, md5 in files:
        assert md5_file(survey.repo / path)[1] == md5, path


def test_local_engine_kill_after_submit_then_resume(
    survey: Survey, tmp_path: Path, expected: Outputs
) -> None:
    home = tmp_path / "home"
    _kill_then_resume(home, survey, "--workers", "2")
    _check(home, survey, expected)


@pytest.mark.slurm
def test_slurm_kill_after_submit_cancels_the_strays_and_resume_finishes(
    survey: Survey, tmp_path: Path, expected: Outputs
) -> None:
    require_slurm()
    home = tmp_path / "home"
    _kill_then_resume(home, survey, "--engine", "slurm")
    # The killed driver's array was in Slurm with no id in the database: the restart
    # found it by its name and cancelled what of it was still queued or running, and
    # the run's own retries ended: nothing of the run is left in Slurm.
    left = SlurmCommands().squeue()
    active = [
        r
        for r in left.values()
        if r.name == job_name(RUN) and r.state.split(" ")[0] not in FINISHED
    ]
    assert not active, active
    _check(home, survey, expected)
