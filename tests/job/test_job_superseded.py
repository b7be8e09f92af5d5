"""An attempt that is no longer its job's current one stages nothing out.

The scheduler commits each attempt before the engine gets it; a job's stage-out
checks (before its copies) and claims (in its registration transaction) that its
attempt is the job's current one, submitted or running. An attempt that outlived a
killed driver, whose job a restart has since retried, or whose job was cancelled,
leaves the site cache and the catalog as the current attempt made them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jobworld import JobWorld
from sqlalchemy import select, update

from skybatch.backbone.models import FileRow
from skybatch.db.state import open_state_db
from skybatch.job.main import run_job
from skybatch.run.models import JobRow, RunRow
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job_id(world: JobWorld) -> int:
    sessions = open_state_db(load_settings(home=world.root / "home"))
    with sessions.begin() as session:
        run = RunRow(name="t/superseded", repo=str(world.repo), pipeline="p", workdir="w")
        session.add(run)
        session.flush()
        job = JobRow(
            run_id=run.id, name="isr", label="isr", state="running", attempts=2, memory_mb=1,
            walltime_s=60,
        )  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


def _set(world: JobWorld, job_id: int, **values: object) -> None:
    sessions = open_state_db(load_settings(home=world.root / "home"))
    with sessions.begin() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))


def _registered(world: JobWorld) -> list[str]:
    sessions = open_state_db(load_settings(home=world.root / "home"))
    with sessions() as session:
        return list(session.scalars(select(FileRow.path).where(FileRow.producer == "job:isr")))


def _site_files(world: JobWorld) -> dict[Path, bytes]:
    return {
        p: p.read_bytes() for p in world.site_root.rglob("*") if p.is_file() and "isr" in str(p)
    }


def test_a_superseded_attempt_writes_and_registers_nothing(world: JobWorld, job_id: int) -> None:
    before = _site_files(world)
    spec = world.spec("isr", [world.isr], inputs=world.inputs(world.isr), job_id=job_id, attempt=1)
    report = run_job(spec)
    assert report.status == "failed"
    assert report.error and "attempt 1 is no longer current (attempt 2 is running)" in report.error
    assert _site_files(world) == before and _registered(world) == []


def test_the_current_attempt_stages_out_and_a_cancelled_job_does_not(
    world: JobWorld, job_id: int
) -> None:
    _set(world, job_id, state="cancelled")
    spec = world.spec("isr", [world.isr], inputs=world.inputs(world.isr), job_id=job_id, attempt=2)
    refused = run_job(spec.model_copy(update={"report_path": spec.report_path + ".1"}))
    assert refused.status == "failed" and "attempt 2 is cancelled" in (refused.error or "")
    assert _registered(world) == []
    _set(world, job_id, state="running")
    done = run_job(spec)
    assert done.status == "succeeded", done.error
    assert _registered(world) and _site_files(world)
