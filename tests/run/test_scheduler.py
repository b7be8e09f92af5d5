"""The scheduler on the real local engine, with the engines' test runner as the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from schedulerworld import job_spec, new_run
from sqlalchemy import select

from skybatch.engines.base import FailureKind, JobState, JobStatus
from skybatch.engines.testing import InstantEngine
from skybatch.graph.workflow import JobNode, ResourceRequest, Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobAttemptRow, JobRow
from skybatch.run.scheduler import RetryPolicy, Scheduler, SchedulerHooks


def _workflow(jobs: list[JobNode]) -> Workflow:
    return Workflow.of_jobs("test/run", jobs, pipeline="p.yaml")


def _node(name: str, deps: list[str] | None = None, memory_mb: int = 300) -> JobNode:
    return JobNode(
        name=name,
        label=name.split("-")[0],
        quanta=[name],
        task_labels=[name.split("-")[0]],
        data_ids=[{}],
        resources=ResourceRequest(memory_mb=memory_mb, walltime_s=60),
        depends_on=deps or [],
    )


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    sessions, run_id = new_run(tmp_path)
    order: list[str] = []

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        order.append(job.name)
        spec = job_spec(tmp_path, job, row)
        (Path(spec.report_path).parent / "spec.json").write_text(spec.model_dump_json())
        return spec

    return sessions, run_id, make_spec, order


def _engine():  # type: ignore[no-untyped-def]
    from skybatch.engines.local import LocalEngine, LocalSettings

    return LocalEngine(
        LocalSettings(max_workers=2, runner="skybatch.engines.testing:behave", preload=[])
    )


def _jobs(sessions) -> dict[str, JobRow]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return {j.name: j for j in session.scalars(select(JobRow))}


def test_jobs_run_after_their_dependencies_and_all_succeed(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, order = setup
    workflow = _workflow(
        [
            _node("ok-a"),
            _node("ok-b", ["ok-a"]),
            _node("ok-c", ["ok-a"]),
            _node("ok-d", ["ok-b", "ok-c"]),
        ]
    )
    with _engine() as engine:
        scheduler = Scheduler(sessions, run_id, workflow, engine, SchedulerHooks(make_spec))
        assert scheduler.create_jobs() == 4
        assert scheduler.create_jobs() == 0  # idempotent
        result = scheduler.run()
    assert result.succeeded and result.counts == {"succeeded": 4}
    assert order[0] == "ok-a" and order[-1] == "ok-d"


def test_a_failing_job_is_retried_then_held_and_its_dependents_never_run(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, order = setup
    # ok-later is two levels below the failure: the run must still end, not wait on it.
    workflow = _workflow(
        [
            _node("fail-x"),
            _node("ok-after", ["fail-x"]),
            _node("ok-later", ["ok-after", "ok-free"]),
            _node("ok-free"),
        ]
    )
    with _engine() as engine:
        scheduler = Scheduler(
            sessions, run_id, workflow, engine, SchedulerHooks(make_spec), RetryPolicy(3)
        )
        scheduler.create_jobs()
        result = scheduler.run()
    jobs = _jobs(sessions)
    assert jobs["fail-x"].state == JobState.HELD and jobs["fail-x"].attempts == 3
    assert jobs["fail-x"].exit_code == 3
    assert jobs["ok-after"].state == JobState.PENDING
    assert jobs["ok-later"].state == JobState.PENDING
    assert jobs["ok-free"].state == JobState.SUCCEEDED
    assert not result.succeeded
    assert order.count("fail-x") == 3 and "ok-after" not in order


def test_releasing_held_jobs_gives_them_a_fresh_budget_of_attempts(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, order = setup
    workflow = _workflow([_node("fail-x"), _node("ok-after", ["fail-x"])])
    with _engine() as engine:
        scheduler = Scheduler(
            sessions, run_id, workflow, engine, SchedulerHooks(make_spec), RetryPolicy(2)
        )
        scheduler.create_jobs()
        scheduler.run()
        assert scheduler.release_held() == ["fail-x"]
        assert _jobs(sessions)["fail-x"].state == JobState.PENDING
        scheduler.run()
        assert scheduler.release_held() == ["fail-x"]
    jobs = _jobs(sessions)
    # Held again after its second budget (attempts 3 and 4); released once more.
    assert jobs["fail-x"].attempts == 4 and jobs["fail-x"].attempt_limit == 6
    assert order.count("fail-x") == 4 and "ok-after" not in order


def test_out_of_memory_is_retried_with_escalated_memory_up_to_the_cap(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, _order = setup
    workflow = _workflow([_node("oom-big", memory_mb=100)])
    policy = RetryPolicy(max_attempts=3, memory_factor=2.0, memory_cap_mb=300)
    with _engine() as engine:
        scheduler = Scheduler(sessions, run_id, workflow, engine, SchedulerHooks(make_spec), policy)
        scheduler.create_jobs()
        scheduler.run()
    with sessions() as session:
        attempts = session.scalars(select(JobAttemptRow).order_by(JobAttemptRow.attempt)).all()
        memory = [a.memory_mb for a in attempts]
        failures = {a.failure for a in attempts}
    assert memory == [100, 200, 300]  # x2, then capped
    assert failures == {"out_of_memory"}
    assert _jobs(sessions)["oom-big"].memory_mb == 300  # kept for restarts


def test_resume_treats_jobs_of_a_dead_driver_as_lost_and_finishes(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, _order = setup
    workflow = _workflow([_node("ok-a"), _node("ok-b", ["ok-a"])])
    with _engine() as engine:
        scheduler = Scheduler(sessions, run_id, workflow, engine, SchedulerHooks(make_spec))
        scheduler.create_jobs()
    # A previous driver had submitted ok-a and then died.
    with sessions.begin() as session:
        row = session.scalars(select(JobRow).where(JobRow.name == "ok-a")).one()
        row.state, row.attempts, row.engine_id = JobState.SUBMITTED.value, 1, "local-gone"
    with _engine() as engine:
        scheduler = Scheduler(sessions, run_id, workflow, engine, SchedulerHooks(make_spec))
        assert scheduler.recover_orphans() == 1
        result = scheduler.run()
    assert result.succeeded
    assert _jobs(sessions)["ok-a"].attempts == 2  # the lost attempt keeps its number


def test_thousands_of_jobs_are_recorded_with_one_attempt_row_each(setup) -> None:  # type: ignore[no-untyped-def]
    from skybatch.engines.testing import InstantEngine
    from skybatch.run.models import JobAttemptRow

    sessions, run_id, make_spec, order = setup
    nodes = [_node(f"ok-{i}") for i in range(1500)]
    nodes += [_node(f"ok-gather-{i}", [f"ok-{j}" for j in range(i, 1500, 50)]) for i in range(50)]
    nodes.append(_node("fail-one", ["ok-0"]))
    workflow = _workflow(nodes)
    scheduler = Scheduler(
        sessions, run_id, workflow, InstantEngine(), SchedulerHooks(make_spec), RetryPolicy(2)
    )
    scheduler.create_jobs()
    result = scheduler.run()
    assert result.counts == {"succeeded": 1550, "held": 1}
    with sessions() as session:
        rows = session.scalars(select(JobAttemptRow)).all()
    assert len(rows) == 1550 + 2  # the failing job had two attempts
    assert all(r.finished_at is not None for r in rows)
    failing = _jobs(sessions)["fail-one"].id
    states = sorted((r.attempt, r.state) for r in rows if r.job_id == failing)
    assert states == [(1, "failed"), (2, "failed")]
    assert order.index("ok-0") < order.index("fail-one")
    # The engine was told to forget every job once its end was read: nothing of the
    # 1,552 attempts stays in it (an execution pool's engine serves a manager's life).
    engine = scheduler.engine
    assert isinstance(engine, InstantEngine) and engine.submitted == 1552
    ids = [f"instant-{i}" for i in range(1, engine.submitted + 1)]
    assert {status.failure for status in engine.poll(ids)} == {FailureKind.LOST}


def test_max_in_flight_caps_the_jobs_in_the_engine(setup) -> None:  # type: ignore[no-untyped-def]
    """A campaign's max_running_jobs holds on any engine, whatever it could take."""
    sessions, run_id, make_spec, _ = setup
    engine = InstantEngine(max_parallel_jobs=100)
    sizes: list[int] = []
    submit = engine.submit

    def recording(specs):  # type: ignore[no-untyped-def]
        sizes.append(len(specs))
        return submit(specs)

    engine.submit = recording  # type: ignore[method-assign]
    workflow = _workflow([_node(f"ok-{i}") for i in range(20)])
    scheduler = Scheduler(
        sessions, run_id, workflow, engine, SchedulerHooks(make_spec), max_in_flight=3
    )
    scheduler.create_jobs()
    assert scheduler.run().succeeded
    assert sum(sizes) == 20 and max(sizes) == 3


class _PreemptingEngine(InstantEngine):
    """Jobs named ``preempt-N-...`` are preempted (or, ``nodefail-N-...``, lose their
    node) at their first N submissions, then succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, int] = {}

    def submit(self, specs):  # type: ignore[no-untyped-def]
        for spec in specs:
            self.seen[spec.job] = self.seen.get(spec.job, 0) + 1
        return super().submit(specs)

    def _status(self, engine_id: str) -> JobStatus:
        job = self._jobs.get(engine_id, "")
        kind, _, rest = job.partition("-")
        if kind in ("preempt", "nodefail") and self.seen[job] <= int(rest.split("-")[0]):
            failure = FailureKind.PREEMPTED if kind == "preempt" else FailureKind.NODE_FAILURE
            return JobStatus(engine_id=engine_id, state=JobState.FAILED, failure=failure)
        return super()._status(engine_id)


def test_preemption_and_node_failure_do_not_use_up_the_jobs_attempts(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, _order = setup
    workflow = _workflow(
        [
            _node("preempt-2-a"),  # twice preempted, then runs: within the extra budget
            _node("nodefail-1-b"),
            _node("preempt-9-c"),  # preempted more often than the extra attempts allow
            _node("ok-after", ["preempt-2-a", "nodefail-1-b"]),
        ]
    )
    policy = RetryPolicy(max_attempts=1, infrastructure_retries=3)
    engine = _PreemptingEngine()
    scheduler = Scheduler(sessions, run_id, workflow, engine, SchedulerHooks(make_spec), policy)
    scheduler.create_jobs()
    result = scheduler.run()
    jobs = _jobs(sessions)
    # One attempt of its own (max_attempts=1), yet the preempted job ran to the end.
    assert jobs["preempt-2-a"].state == JobState.SUCCEEDED and jobs["preempt-2-a"].attempts == 3
    assert jobs["nodefail-1-b"].state == JobState.SUCCEEDED
    assert jobs["ok-after"].state == JobState.SUCCEEDED
    # 1 + 3 extra attempts, then held: a job that is always preempted does not loop.
    assert jobs["preempt-9-c"].state == JobState.HELD and jobs["preempt-9-c"].attempts == 4
    assert jobs["preempt-9-c"].failure == "preempted"
    assert jobs["preempt-9-c"].attempt_limit == 4  # stored: a restarted driver keeps it
    assert engine.seen["preempt-9-c"] == 4 and not result.succeeded
    # Memory is not escalated after such failures (a plain retry).
    with sessions() as session:
        memory = set(session.scalars(select(JobAttemptRow.memory_mb)))
    assert memory == {300}


def test_a_job_failing_on_its_own_still_gets_max_attempts_only(setup) -> None:  # type: ignore[no-untyped-def]
    sessions, run_id, make_spec, _order = setup
    workflow = _workflow([_node("fail-x")])
    policy = RetryPolicy(max_attempts=2, infrastructure_retries=3)
    scheduler = Scheduler(
        sessions, run_id, workflow, InstantEngine(), SchedulerHooks(make_spec), policy
    )
    scheduler.create_jobs()
    scheduler.run()
    assert _jobs(sessions)["fail-x"].attempts == 2
