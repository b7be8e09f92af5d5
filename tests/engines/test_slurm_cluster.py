"""The Slurm engine under skybatch's scheduler, against a real Slurm: retries with more
memory after out-of-memory, a job cancelled with ``scancel`` behind skybatch's back,
and a driver restarted while its jobs are in Slurm (reattached, not submitted twice).

Skipped, with the reason, when no Slurm controller answers (``scripts/slurm/up.sh``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from slurmworld import SchedulerSetup, require_slurm, scheduler_setup
from sqlalchemy import select

from skybatch.engines.base import FailureKind, JobState
from skybatch.engines.slurm import SlurmEngine, SlurmSettings
from skybatch.engines.slurm.commands import SlurmCommands
from skybatch.engines.testing import BEHAVE_RUNNER, make_spec, wait_for
from skybatch.run.models import JobAttemptRow, JobRow
from skybatch.run.scheduler import RetryPolicy, Scheduler

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _slurm() -> None:
    require_slurm()


def _engine(tmp_path: Path, **values: object) -> SlurmEngine:
    settings: dict[str, object] = {
        "runner": BEHAVE_RUNNER,
        "script_dir": tmp_path / "slurm",
        "poll_interval_s": 0.2,
        "max_jobs": 2,
    }
    settings.update(values)
    return SlurmEngine(SlurmSettings(**settings))  # type: ignore[arg-type]


def test_job_over_its_memory_is_retried_with_more_memory(tmp_path: Path) -> None:
    setup = scheduler_setup(tmp_path, {"hog-1": []}, memory_mb=200)
    # Slurm's cgroup limit well above the request: the job's own watchdog stops it
    # (with its peak RSS), not the cgroup (tested below), however loaded the machine.
    with _engine(tmp_path, memory_margin_mb=1024) as engine:
        scheduler = Scheduler(
            setup.sessions,
            setup.run_id,
            setup.workflow,
            engine,
            setup.hooks,
            RetryPolicy(max_attempts=3, memory_factor=2.0, memory_cap_mb=1024),
        )
        scheduler.create_jobs()
        result = scheduler.run()
    assert result.succeeded
    with setup.sessions() as session:
        attempts = session.scalars(select(JobAttemptRow).order_by(JobAttemptRow.attempt)).all()
        job = session.scalars(select(JobRow)).one()
    assert [(a.state, a.failure, a.memory_mb) for a in attempts] == [
        ("failed", "out_of_memory", 200),
        ("succeeded", "none", 400),
    ]
    assert attempts[0].max_rss_mb is not None and attempts[0].max_rss_mb > 200
    assert job.memory_mb == 400  # the escalated request is kept


def test_slurm_itself_kills_a_job_over_its_mem_as_out_of_memory(tmp_path: Path) -> None:
    """With the job's own watchdog off, Slurm's cgroup limit (--mem) is what stops it."""
    with _engine(tmp_path, job_memory_watchdog=False, memory_margin_mb=0) as engine:
        [engine_id] = engine.submit([make_spec(tmp_path, "oom-1", memory_mb=200)])
        [status] = wait_for(engine, [engine_id], timeout_s=60)
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.OUT_OF_MEMORY
    assert "OUT_OF_MEMORY" in (status.message or "")


def test_scancel_behind_skybatchs_back_is_reported_as_such(tmp_path: Path) -> None:
    setup = scheduler_setup(tmp_path, {"sleep-1": []})
    with _engine(tmp_path) as engine:
        scheduler = Scheduler(setup.sessions, setup.run_id, setup.workflow, engine, setup.hooks)
        scheduler.create_jobs()
        outcome: dict[str, object] = {}
        thread = threading.Thread(target=lambda: outcome.update(r=scheduler.run()))
        thread.start()
        engine_id = _wait_for_state(setup, "running")
        subprocess.run(["scancel", engine_id], check=True)
        thread.join(timeout=60)
    assert not thread.is_alive()
    with setup.sessions() as session:
        job = session.scalars(select(JobRow)).one()
    assert job.state == JobState.CANCELLED.value
    assert job.failure == FailureKind.CANCELLED.value
    assert "not by skybatch" in (job.error or "")
    assert job.attempts == 1  # not retried: someone meant it


def _wait_for_state(setup: SchedulerSetup, *states: str, timeout_s: float = 60) -> str:
    """Wait until every job is in one of ``states`` with an engine id; return the first id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with setup.sessions() as session:
            rows = session.scalars(select(JobRow)).all()
        if rows and all(r.state in states and r.engine_id for r in rows):
            return str(rows[0].engine_id)
        time.sleep(0.1)
    raise TimeoutError(f"jobs not {' or '.join(states)} after {timeout_s} s")


def test_restarted_driver_reattaches_instead_of_submitting_again(tmp_path: Path) -> None:
    """A driver killed (SIGKILL) while its jobs are in Slurm; the next one polls them."""
    jobs = {f"sleep3-{i}": [] for i in range(3)}
    setup = scheduler_setup(tmp_path, jobs)
    driver = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "slurmworld.py"), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    try:
        # every job went to Slurm (2 cores: some still queued), and the driver wrote so
        _wait_for_state(setup, "submitted", "running")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    with setup.sessions() as session:
        first_ids = sorted(str(r.engine_id) for r in session.scalars(select(JobRow)))
    with _engine(tmp_path) as engine:
        scheduler = Scheduler(setup.sessions, setup.run_id, setup.workflow, engine, setup.hooks)
        scheduler.create_jobs()
        assert sorted(scheduler.reattach()) == sorted(jobs)
        assert scheduler.recover_orphans() == 0
        result = scheduler.run()
        assert engine.submitted_arrays == 0  # nothing went to Slurm a second time
    assert result.succeeded
    with setup.sessions() as session:
        rows = session.scalars(select(JobRow)).all()
        attempts = session.scalars(select(JobAttemptRow)).all()
    assert sorted(str(r.engine_id) for r in rows) == first_ids
    assert [r.attempts for r in rows] == [1, 1, 1]
    assert len(attempts) == 3 and {a.state for a in attempts} == {"succeeded"}
    known = SlurmCommands().squeue()
    assert all(known[i].state == "COMPLETED" for i in first_ids)
