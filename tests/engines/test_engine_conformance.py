"""The conformance suite every engine passes, driven by skybatch.engines.testing.behave.

An engine joins by adding a parameter to the ``engine_factory`` fixture. The Slurm
engine runs it in per-job and pilot mode against a real Slurm (``scripts/slurm/up.sh``
starts one on this machine; ``.ci/run`` does so in CI) and is skipped, with the
reason, where no Slurm controller answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from slurmworld import require_slurm

from skybatch.engines.base import Engine, FailureKind, JobState
from skybatch.engines.local import LocalEngine, LocalSettings
from skybatch.engines.testing import BEHAVE_RUNNER, make_spec, wait_for
from skybatch.errors import SkybatchError

EngineFactory = Callable[..., Engine]


def _local(isolation: str) -> EngineFactory:
    def make(max_workers: int = 2) -> Engine:
        settings = LocalSettings(
            max_workers=max_workers,
            isolation=isolation,
            runner=BEHAVE_RUNNER,
            preload=[],
            memory_poll_s=0.05,
        )
        return LocalEngine(settings)

    return make


def _slurm(mode: str, script_dir: Path) -> EngineFactory:
    def make(max_workers: int = 2) -> Engine:
        from skybatch.engines.slurm import PilotSettings, SlurmEngine, SlurmSettings

        pilot = PilotSettings(
            cores=max_workers,
            max_pilots=1,
            memory_mb=4096,
            walltime_s=600,
            idle_timeout_s=5,
            end_margin_s=0,
            heartbeat_s=1,
            preload=[],
        )
        settings = SlurmSettings(
            mode=mode,  # type: ignore[arg-type]
            max_jobs=max_workers,
            runner=BEHAVE_RUNNER,
            script_dir=script_dir,
            poll_interval_s=0.2,
            pilot=pilot,
        )
        return SlurmEngine(settings)

    return make


FACTORIES: dict[str, Callable[[Path], EngineFactory]] = {
    "local-warm": lambda _: _local("warm"),
    "local-process": lambda _: _local("process"),
    "slurm-per-job": lambda d: _slurm("per_job", d),
    "slurm-pilot": lambda d: _slurm("pilot", d),
}


@pytest.fixture(params=sorted(FACTORIES))
def engine_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineFactory]:
    """Makes engines of one kind; closes whatever the test left open."""
    if request.param.startswith("slurm"):
        require_slurm()
    factory = FACTORIES[request.param](tmp_path_factory.mktemp("engine"))
    made: list[Engine] = []

    def make(**kwargs: int) -> Engine:
        engine = factory(**kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def engine(engine_factory: EngineFactory) -> Engine:
    return engine_factory()


def _submit_one(engine: Engine, tmp_path: Path, job: str, **fields: int) -> str:
    return engine.submit([make_spec(tmp_path, job, **fields)])[0]


def test_success(engine: Engine, tmp_path: Path) -> None:
    engine_id = _submit_one(engine, tmp_path, "ok-1")
    [status] = wait_for(engine, [engine_id])
    assert status.state is JobState.SUCCEEDED
    assert status.exit_code == 0
    assert status.failure is FailureKind.NONE
    assert status.engine_id == engine_id
    assert (tmp_path / "ok-1" / "report.json").exists()


def test_submit_returns_ids_in_order_and_at_once(engine: Engine, tmp_path: Path) -> None:
    ids = engine.submit([make_spec(tmp_path, f"ok-{i}") for i in range(3)])
    assert len(set(ids)) == 3
    first = engine.poll(ids)
    assert [s.engine_id for s in first] == ids
    assert all(s.state in {JobState.SUBMITTED, JobState.RUNNING} for s in first)
    assert all(s.state is JobState.SUCCEEDED for s in wait_for(engine, ids))


def test_failure_exit_code(engine: Engine, tmp_path: Path) -> None:
    [status] = wait_for(engine, [_submit_one(engine, tmp_path, "fail-1")])
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.ERROR
    assert status.exit_code == 3


def test_raising_job_fails_with_the_error(engine: Engine, tmp_path: Path) -> None:
    [status] = wait_for(engine, [_submit_one(engine, tmp_path, "raise-1")])
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.ERROR
    assert status.exit_code not in (None, 0)
    assert "RuntimeError" in (status.message or "")


def test_crash_fails_the_job_and_the_engine_keeps_working(engine: Engine, tmp_path: Path) -> None:
    [crashed] = wait_for(engine, [_submit_one(engine, tmp_path, "crash-1")])
    assert crashed.state is JobState.FAILED
    assert crashed.failure in {FailureKind.ERROR, FailureKind.LOST}
    assert "9" in (crashed.message or "")
    ids = engine.submit([make_spec(tmp_path, f"ok-after-{i}") for i in range(3)])
    assert all(s.state is JobState.SUCCEEDED for s in wait_for(engine, ids))


def test_out_of_memory(engine: Engine, tmp_path: Path) -> None:
    if not engine.capabilities.enforces_memory:
        pytest.skip("engine does not enforce memory")
    engine_id = _submit_one(engine, tmp_path, "oom-1", memory_mb=200)
    [status] = wait_for(engine, [engine_id])
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.OUT_OF_MEMORY
    assert "200 MB" in (status.message or "")
    assert status.max_rss_mb is not None and status.max_rss_mb > 200
    [after] = wait_for(engine, [_submit_one(engine, tmp_path, "ok-after")])
    assert after.state is JobState.SUCCEEDED


def test_walltime(engine: Engine, tmp_path: Path) -> None:
    [status] = wait_for(engine, [_submit_one(engine, tmp_path, "sleep-1", walltime_s=1)])
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.TIMEOUT


def test_cancel_queued_and_running(engine_factory: EngineFactory, tmp_path: Path) -> None:
    engine = engine_factory(max_workers=1)
    specs = [make_spec(tmp_path, "sleep-a"), make_spec(tmp_path, "sleep-b")]
    running, queued = engine.submit(specs)
    wait_for(engine, [running], states=frozenset({JobState.RUNNING}))
    assert engine.poll([queued])[0].state is JobState.SUBMITTED
    engine.cancel([running, queued])
    statuses = wait_for(engine, [running, queued], timeout_s=5)
    assert [s.state for s in statuses] == [JobState.CANCELLED, JobState.CANCELLED]
    assert all(s.failure is FailureKind.CANCELLED for s in statuses)
    engine.cancel([running, queued, "no-such-job"])  # idempotent
    [after] = wait_for(engine, [_submit_one(engine, tmp_path, "ok-after")])
    assert after.state is JobState.SUCCEEDED


def test_cancel_finished_job_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    engine_id = _submit_one(engine, tmp_path, "ok-1")
    wait_for(engine, [engine_id])
    engine.cancel([engine_id])
    assert engine.poll([engine_id])[0].state is JobState.SUCCEEDED


def test_more_jobs_than_workers_all_complete(engine: Engine, tmp_path: Path) -> None:
    limit = engine.capabilities.max_parallel_jobs
    ids = engine.submit([make_spec(tmp_path, f"ok-{i}") for i in range(3 * limit + 1)])
    seen_running = 0
    while True:
        statuses = engine.poll(ids)
        running = sum(s.state is JobState.RUNNING for s in statuses)
        seen_running = max(seen_running, running)
        if all(s.state is JobState.SUCCEEDED for s in statuses):
            break
        assert not any(s.state in {JobState.FAILED, JobState.CANCELLED} for s in statuses)
    assert 1 <= seen_running <= limit


def test_poll_unknown_id_is_lost(engine: Engine) -> None:
    [status] = engine.poll(["no-such-job"])
    assert status.engine_id == "no-such-job"
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.LOST


def test_close_cancels_and_leaves_no_children(
    engine_factory: EngineFactory, tmp_path: Path
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine = engine_factory()
    ids = engine.submit([make_spec(tmp_path, f"sleep-{i}") for i in range(3)])
    wait_for(engine, ids[:1], states=frozenset({JobState.RUNNING}))
    engine.close()
    assert all(s.state is JobState.CANCELLED for s in engine.poll(ids))
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert left == []
    with pytest.raises(SkybatchError):
        engine.submit([make_spec(tmp_path, "ok-late")])
    engine.close()  # idempotent


def test_capabilities_match_behaviour(engine_factory: EngineFactory, tmp_path: Path) -> None:
    """max_parallel_jobs and enforces_memory are checked by the tests above."""
    first = engine_factory()
    caps = first.capabilities
    assert caps.max_parallel_jobs >= 1
    assert caps.isolation_modes
    [engine_id] = first.submit([make_spec(tmp_path, "ok-1")])
    wait_for(first, [engine_id])
    second = engine_factory()
    if caps.reattach:  # the later engine follows the job to its end (the batch system
        # may take a moment to record what the first engine saw in the exit file)
        [status] = wait_for(second, [engine_id], timeout_s=10)
        assert status.state is JobState.SUCCEEDED
        return
    [status] = second.poll([engine_id])  # ids are not reused by a later engine instance
    assert status.failure is FailureKind.LOST
