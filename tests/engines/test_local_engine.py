"""What only the local engine does: warm worker reuse, preload, spec files; the state machine."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from skybatch.engines.base import (
    FailureKind,
    InvalidTransitionError,
    JobState,
    transition,
)
from skybatch.engines.errors import EngineConfigError, JobSpecConflictError
from skybatch.engines.local import LocalEngine, LocalSettings
from skybatch.engines.testing import BEHAVE_RUNNER, make_spec, wait_for


@pytest.fixture
def make_engine() -> Iterator[Any]:
    made: list[LocalEngine] = []

    def make(**overrides: Any) -> LocalEngine:
        values: dict[str, Any] = {
            "max_workers": 2,
            "runner": BEHAVE_RUNNER,
            "preload": [],
            "memory_poll_s": 0.05,
        }
        values.update(overrides)
        engine = LocalEngine(LocalSettings(**values))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def _pids(tmp_path: Path, names: list[str]) -> list[int]:
    return [int((tmp_path / name / "report.json").read_text()) for name in names]


def test_warm_workers_are_reused(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(max_workers=2)
    assert engine.capabilities.warm_workers
    sequential = [f"pid-seq-{i}" for i in range(4)]
    for name in sequential:
        [status] = wait_for(engine, engine.submit([make_spec(tmp_path, name)]))
        assert status.state is JobState.SUCCEEDED
    assert len(set(_pids(tmp_path, sequential))) == 1
    batch = [f"pid-batch-{i}" for i in range(8)]
    wait_for(engine, engine.submit([make_spec(tmp_path, name) for name in batch]))
    assert len(set(_pids(tmp_path, batch))) <= 2
    assert os.getpid() not in _pids(tmp_path, batch)


def test_warm_workers_run_at_lower_cpu_priority(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(max_workers=1, worker_nice=7)
    engine.warm_up()
    [status] = wait_for(engine, engine.submit([make_spec(tmp_path, "pid-nice")]))
    assert status.state is JobState.SUCCEEDED
    [pid] = _pids(tmp_path, ["pid-nice"])
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 7


def test_process_mode_uses_a_fresh_process_per_job(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(isolation="process")
    assert not engine.capabilities.warm_workers
    names = [f"pid-{i}" for i in range(3)]
    wait_for(engine, engine.submit([make_spec(tmp_path, name) for name in names]))
    assert len(set(_pids(tmp_path, names))) == 3


def test_preload_happens_once_per_worker(
    make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imports = tmp_path / "imports.txt"
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "skybatch_preload_probe.py").write_text(
        f"import os\nwith open({str(imports)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
    )
    monkeypatch.syspath_prepend(str(module_dir))  # spawned workers inherit sys.path
    engine = make_engine(max_workers=2, preload=["skybatch_preload_probe"])
    names = [f"pid-{i}" for i in range(6)]
    statuses = wait_for(engine, engine.submit([make_spec(tmp_path, name) for name in names]))
    assert all(s.state is JobState.SUCCEEDED for s in statuses)
    importers = [int(line) for line in imports.read_text().split()]
    assert len(importers) == len(set(importers)) <= 2  # once per worker
    assert set(_pids(tmp_path, names)) <= set(importers)


def test_failing_preload_is_a_warning(
    make_engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(preload=["skybatch_no_such_module"])
    with caplog.at_level(logging.WARNING, logger="skybatch.engines.local"):
        [status] = wait_for(engine, engine.submit([make_spec(tmp_path, "ok-1")]))
    assert status.state is JobState.SUCCEEDED
    assert "skybatch_no_such_module" in caplog.text


def test_missing_runner_module_is_a_config_error() -> None:
    with pytest.raises(EngineConfigError, match="skybatch_no_such_module"):
        LocalEngine(LocalSettings(runner="skybatch_no_such_module:run", preload=[]))


def test_unloadable_runner_fails_jobs_with_the_reason(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(runner="skybatch.engines.testing:no_such_function")
    [status] = wait_for(engine, engine.submit([make_spec(tmp_path, "ok-1")]))
    assert status.state is JobState.FAILED
    assert "no_such_function" in (status.message or "")


def test_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        LocalSettings(runner="not a dotted path")
    with pytest.raises(ValidationError):
        LocalSettings(max_workers=0)
    with pytest.raises(ValidationError):
        LocalSettings(workers=2)  # type: ignore[call-arg]
    assert LocalSettings().max_workers == (os.cpu_count() or 1)


def test_spec_and_log_files_beside_the_report(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine()
    [engine_id] = engine.submit([make_spec(tmp_path, "raise-1", attempt=2)])
    wait_for(engine, [engine_id])
    written = json.loads((tmp_path / "raise-1" / "spec-2.json").read_text())
    assert written["engine_job_id"] == engine_id
    assert "RuntimeError" in (tmp_path / "raise-1" / "engine-2.log").read_text()


def test_two_active_jobs_cannot_share_a_spec_file(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(max_workers=1)
    [first] = engine.submit([make_spec(tmp_path, "sleep-1")])
    with pytest.raises(JobSpecConflictError):
        engine.submit([make_spec(tmp_path, "sleep-1")])
    with pytest.raises(JobSpecConflictError):
        engine.submit([make_spec(tmp_path, "ok-x"), make_spec(tmp_path, "ok-x")])
    engine.cancel([first])
    [again] = engine.submit([make_spec(tmp_path, "sleep-1")])  # the first one is over
    engine.cancel([again])


def test_worker_killed_from_outside(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(max_workers=1)
    wait_for(engine, engine.submit([make_spec(tmp_path, "pid-1")]))
    [worker_pid] = _pids(tmp_path, ["pid-1"])
    [engine_id] = engine.submit([make_spec(tmp_path, "sleep-1")])
    wait_for(engine, [engine_id], states=frozenset({JobState.RUNNING}))
    os.kill(worker_pid, signal.SIGKILL)
    [status] = wait_for(engine, [engine_id])
    assert status.state is JobState.FAILED
    assert status.failure is FailureKind.WORKER_LOST  # not the job's failure
    assert "SIGKILL" in (status.message or "") and "lost worker" in (status.message or "")
    [after] = wait_for(engine, engine.submit([make_spec(tmp_path, "ok-after")]))
    assert after.state is JobState.SUCCEEDED


def test_memory_not_enforced_when_disabled(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(enforce_memory=False)
    assert not engine.capabilities.enforces_memory
    [engine_id] = engine.submit([make_spec(tmp_path, "oom-1", memory_mb=100)])
    deadline = time.monotonic() + 10
    while (status := engine.poll([engine_id])[0]).state is JobState.SUBMITTED or (
        status.max_rss_mb or 0
    ) <= 100:
        assert status.state in {JobState.SUBMITTED, JobState.RUNNING}
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    assert status.state is JobState.RUNNING  # over its limit, sampled, still running
    engine.cancel([engine_id])
    [status] = engine.poll([engine_id])
    assert status.state is JobState.CANCELLED


def test_forkserver_start_method(make_engine: Any, tmp_path: Path) -> None:
    engine = make_engine(start_method="forkserver")
    [status] = wait_for(engine, engine.submit([make_spec(tmp_path, "ok-1")]))
    assert status.state is JobState.SUCCEEDED


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (JobState.PENDING, JobState.READY),
        (JobState.READY, JobState.SUBMITTED),
        (JobState.SUBMITTED, JobState.CANCELLED),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.FAILED, JobState.READY),
        (JobState.FAILED, JobState.HELD),
        (JobState.RUNNING, JobState.RUNNING),
    ],
)
def test_transition_allowed(current: JobState, new: JobState) -> None:
    assert transition(current, new) is new


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (JobState.PENDING, JobState.RUNNING),
        (JobState.SUCCEEDED, JobState.READY),
        (JobState.CANCELLED, JobState.RUNNING),
        (JobState.RUNNING, JobState.SUBMITTED),
        (JobState.FAILED, JobState.SUCCEEDED),
    ],
)
def test_transition_rejected(current: JobState, new: JobState) -> None:
    with pytest.raises(InvalidTransitionError, match="job-7"):
        transition(current, new, job="job-7")


def test_ended_jobs_the_caller_read_are_forgotten(make_engine: Any, tmp_path: Path) -> None:
    """An execution pool's engine lives as long as its manager: it keeps no ended job
    its scheduler has read, so its memory does not grow with every job it ran."""
    engine = make_engine(max_workers=2)
    [done] = engine.submit([make_spec(tmp_path, "ok-1")])
    [running] = engine.submit([make_spec(tmp_path, "sleep-1")])
    wait_for(engine, [done])
    engine.forget([done, running])
    [gone, still] = engine.poll([done, running])
    assert gone.state is JobState.FAILED and gone.failure is FailureKind.LOST
    assert still.state in (JobState.SUBMITTED, JobState.RUNNING)  # not ended: kept
