"""A worker killed under a running job (SIGKILL from outside) is a lost worker: the job
is retried from the infrastructure budget, not charged to its own attempts, and succeeds.
On the real local engine, warm workers and one process per job."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from schedulerworld import job_node, job_spec, new_run
from sqlalchemy import select

from skybatch.engines.base import FailureKind, JobState
from skybatch.engines.local import LocalEngine, LocalSettings
from skybatch.engines.testing import BEHAVE_RUNNER
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobAttemptRow, JobRow
from skybatch.run.scheduler import RetryPolicy, Scheduler, SchedulerHooks


def _kill_first_attempt(pid_file: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL whatever runs attempt 1 once it has started (it writes its pid first)."""
    while not stop.is_set():
        try:
            pid = int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        return


@pytest.mark.parametrize("isolation", ["warm", "process"])
def test_a_worker_killed_mid_job_does_not_use_up_the_jobs_attempts(
    tmp_path: Path, isolation: str
) -> None:
    sessions, run_id = new_run(tmp_path)

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        return job_spec(tmp_path, job, row)

    node = job_node("pidsleep3-a")
    workflow = Workflow.of_jobs("test/run", [node], pipeline="p.yaml")
    # One attempt of its own: a lost worker charged to the job would hold it.
    policy = RetryPolicy(max_attempts=1, infrastructure_retries=3)
    killed: list[int] = []
    stop = threading.Event()
    pid_file = tmp_path / "pidsleep3-a" / "attempt-1" / "report.json.pid"
    killer = threading.Thread(target=_kill_first_attempt, args=(pid_file, killed, stop))
    killer.start()
    engine = LocalEngine(
        LocalSettings(max_workers=1, runner=BEHAVE_RUNNER, preload=[], isolation=isolation)
    )
    try:
        with engine:
            scheduler = Scheduler(
                sessions, run_id, workflow, engine, SchedulerHooks(make_spec), policy
            )
            scheduler.create_jobs()
            result = scheduler.run()
    finally:
        stop.set()
        killer.join()
    assert killed, "the first attempt never started"
    assert result.succeeded
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
        attempts = session.execute(
            select(JobAttemptRow.attempt, JobAttemptRow.state, JobAttemptRow.failure).order_by(
                JobAttemptRow.attempt
            )
        ).all()
    assert job.state == JobState.SUCCEEDED
    assert attempts[0][1:] == ("failed", FailureKind.WORKER_LOST.value)
    assert attempts[-1][1] == "succeeded"
    # The lost attempt came from the infrastructure budget: the job's own is intact.
    assert job.attempt_limit == policy.max_attempts + 1


@pytest.mark.parametrize("infrastructure_retries", [1, 0])
def test_jobs_killed_with_their_driver_are_not_charged_within_the_budget(
    tmp_path: Path, infrastructure_retries: int
) -> None:
    """The manager and its workers killed mid-job: on restart the job is retried from
    the infrastructure budget (stored, so it holds across restarts), not held."""
    from skybatch.engines.testing import InstantEngine

    sessions, run_id = new_run(tmp_path)

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        return job_spec(tmp_path, job, row)

    node = job_node("ok-a")
    workflow = Workflow.of_jobs("test/run", [node], pipeline="p.yaml")
    policy = RetryPolicy(max_attempts=1, infrastructure_retries=infrastructure_retries)
    scheduler = Scheduler(
        sessions, run_id, workflow, InstantEngine(), SchedulerHooks(make_spec), policy
    )
    scheduler.create_jobs()
    # A previous driver submitted its one attempt and was killed with it.
    with sessions.begin() as session:
        row = session.scalars(select(JobRow)).one()
        row.state, row.attempts, row.engine_id = JobState.SUBMITTED.value, 1, "gone-1"
        session.add(JobAttemptRow(job_id=row.id, attempt=1, state="submitted", memory_mb=300))
    scheduler = Scheduler(
        sessions, run_id, workflow, InstantEngine(), SchedulerHooks(make_spec), policy
    )
    assert scheduler.recover_orphans() == 1
    result = scheduler.run()
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
    if infrastructure_retries:
        assert result.succeeded and job.attempts == 2
    else:  # no budget: the lost attempt is the job's own, as before
        assert job.state == JobState.HELD and job.failure == FailureKind.LOST.value
