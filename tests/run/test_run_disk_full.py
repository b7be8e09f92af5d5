"""The scheduler takes the failure kind a job's report proves (disk full) over the
engine's plain "error", and the run report says what to do about it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from schedulerworld import job_node, job_spec, new_run
from sqlalchemy import select

from skybatch.engines.base import FailureKind
from skybatch.engines.testing import InstantEngine
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.job.spec import JobReport, JobSpec, RuntimeStats
from skybatch.read.runs import run_report
from skybatch.run.models import JobAttemptRow, JobRow
from skybatch.run.scheduler import RetryPolicy, Scheduler, SchedulerHooks

ERROR = (
    "isr {'visit': 1}: RuntimeError: Failed to serialize dataset postISRCCD "
    "[root cause: OSError: [Errno 28] No space left on device: '/scratch/x.fits']"
)


def _report(spec: JobSpec) -> JobReport:
    now = datetime.now(UTC)
    return JobReport(
        run=spec.run,
        job=spec.job,
        attempt=spec.attempt,
        status="failed",
        exit_code=1,
        error=ERROR,
        failure="disk_full",
        host="h",
        platform="p",
        python="3.11",
        packages={},
        environment={},
        stats=RuntimeStats(start=now, end=now, wall_s=0, cpu_s=0, max_rss_mb=0),
        quanta=[],
        outputs=[],
    )


def test_a_job_whose_report_proves_a_full_disk_is_recorded_as_disk_full_with_advice(
    tmp_path: Path,
) -> None:
    sessions, run_id = new_run(tmp_path)

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        spec = job_spec(tmp_path, job, row)
        # What the job wrapper writes on a full disk (the engine only sees exit code 3).
        Path(spec.report_path).write_text(_report(spec).model_dump_json())
        return spec

    node = job_node("fail-full", label="isr")
    workflow = Workflow.of_jobs("test/run", [node], pipeline="p.yaml")
    scheduler = Scheduler(
        sessions, run_id, workflow, InstantEngine(), SchedulerHooks(make_spec), RetryPolicy(2)
    )
    scheduler.create_jobs()
    assert not scheduler.run().succeeded
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
        attempts = session.scalars(select(JobAttemptRow.failure)).all()
    assert job.failure == FailureKind.DISK_FULL.value
    assert job.error == ERROR
    assert attempts == ["disk_full", "disk_full"]
    with sessions() as session:
        (failure,) = run_report(session, "test/run").failures
    assert failure.failure == "disk_full"
    assert failure.error and "No space left on device" in failure.error
    assert failure.advice and "free space there, then `skybatch run --resume RUN`" in failure.advice


def test_a_full_disk_when_specs_are_written_holds_the_jobs_instead_of_crashing_the_run(
    tmp_path: Path,
) -> None:
    sessions, run_id = new_run(tmp_path)

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        # What writing the spec into the job's directory meets on a full disk.
        raise OSError(28, "No space left on device", str(tmp_path / job.name / "spec-1.json"))

    workflow = Workflow.of_jobs(
        "test/run",
        [
            job_node("ok-a", label="isr"),
            job_node("ok-b", label="isr"),
            job_node("ok-c", ["ok-a"], label="isr"),
        ],
        pipeline="p",
    )
    scheduler = Scheduler(
        sessions, run_id, workflow, InstantEngine(), SchedulerHooks(make_spec), RetryPolicy(3)
    )
    scheduler.create_jobs()
    result = scheduler.run()  # ends; does not raise
    assert result.counts == {"held": 2, "pending": 1}
    with sessions() as session:
        (failure, *_) = run_report(session, "test/run").failures
    assert failure.failure == "disk_full" and failure.attempts == 1
    assert failure.error
    assert failure.error.startswith("submit: OSError: [Errno 28] No space left on device")
    assert failure.advice and "free space" in failure.advice
    with sessions() as session:
        states = session.execute(select(JobAttemptRow.state, JobAttemptRow.failure)).all()
    assert sorted(states) == [("failed", "disk_full"), ("failed", "disk_full")]


def test_a_job_that_could_not_even_write_its_report_is_disk_full(tmp_path: Path) -> None:
    """The job wrapper's exit code 28 (EXIT_DISK_FULL) alone classifies it."""
    from skybatch.engines.local import LocalEngine, LocalSettings
    from skybatch.engines.testing import BEHAVE_RUNNER

    sessions, run_id = new_run(tmp_path)

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        return job_spec(tmp_path, job, row)

    node = job_node("full-a", label="isr")
    workflow = Workflow.of_jobs("test/run", [node], pipeline="p.yaml")
    engine = LocalEngine(LocalSettings(max_workers=1, runner=BEHAVE_RUNNER, preload=[]))
    with engine:
        scheduler = Scheduler(
            sessions, run_id, workflow, engine, SchedulerHooks(make_spec), RetryPolicy(1)
        )
        scheduler.create_jobs()
        scheduler.run()
    with sessions() as session:
        job = session.scalars(select(JobRow)).one()
    assert (job.state, job.failure, job.exit_code) == ("held", "disk_full", 28)
