"""Helpers for the engine conformance suite: a scripted runner, specs, waiting.

Every engine (local now, Slurm and Parsl later) runs the same conformance tests
with :func:`behave` as its runner, so what a job does is chosen by its name and
each engine is judged on the same behaviours:

==========  =========================================================
``ok-``     sleep 0.05 s, write a tiny report, exit 0
``fail-``   exit 3
``raise-``  raise RuntimeError (the runner's exception, not a crash)
``oom-``    allocate and touch 2 x ``memory_mb``, then hold it
``sleep-``  sleep 30 s (walltime and cancel tests)
``sleep3-`` sleep 3 s, then succeed (jobs still running at a restart)
``crash-``  ``os._exit(9)``: the process dies without cleanup
``full-``   exit 28, no report: the job wrapper on a disk too full for its report
``pid-``    write the process id to the report (warm worker reuse)
``pidsleep3-`` write the process id to ``REPORT.pid``, sleep 3 s, then
            succeed (a test kills what runs the job meanwhile)
``hog-``    hold 300 MB for 0.5 s, then succeed (fits after a retry
            with more memory)
==========  =========================================================

This module ships with the package (engine plugins outside skybatch can use it)
and imports nothing heavy, so workers preloading it stay cheap.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skybatch.engines.base import (
    Engine,
    EngineCapabilities,
    FailureKind,
    JobState,
    JobStatus,
)
from skybatch.job.spec import JobSpec

__all__ = ["BEHAVE_RUNNER", "FINAL_STATES", "InstantEngine", "behave", "make_spec", "wait_for"]

#: The ``runner`` setting that selects :func:`behave`.
BEHAVE_RUNNER = "skybatch.engines.testing:behave"

#: States an engine reports for a job that will not change any more.
FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

_CHUNK = 16 * 1024 * 1024


def behave(spec_path: str) -> int:
    """Do what the job's name asks (see the module docstring); return the exit code."""
    spec = JobSpec.model_validate_json(Path(spec_path).read_text())
    report = Path(spec.report_path)
    name = spec.job
    if name.startswith("ok-"):
        time.sleep(0.05)
        report.write_text(json.dumps({"job": name, "status": "succeeded"}))
        return 0
    if name.startswith("fail-"):
        return 3
    if name.startswith("raise-"):
        raise RuntimeError(f"job {name} raised on purpose")
    if name.startswith("oom-"):
        hoard = []
        for _ in range(2 * spec.memory_mb * 1024 * 1024 // _CHUNK):
            hoard.append(b"\x01" * _CHUNK)  # written, so resident, not just reserved
            time.sleep(0.005)
        time.sleep(30)
        return 0
    if name.startswith("sleep3-"):
        time.sleep(3)
        report.write_text(json.dumps({"job": name, "status": "succeeded"}))
        return 0
    if name.startswith("sleep-"):
        time.sleep(30)
        return 0
    if name.startswith("crash-"):
        os._exit(9)
    if name.startswith("full-"):
        return 28  # the job wrapper's EXIT_DISK_FULL: not even its report was written
    if name.startswith("hog-"):
        hoard = [b"\x01" * _CHUNK for _ in range(300 * 1024 * 1024 // _CHUNK)]
        time.sleep(0.5)
        report.write_text(json.dumps({"job": name, "held_mb": len(hoard) * _CHUNK // 2**20}))
        return 0
    if name.startswith("pid-"):
        report.write_text(str(os.getpid()))
        return 0
    if name.startswith("pidsleep3-"):
        Path(f"{report}.pid").write_text(str(os.getpid()))
        time.sleep(3)
        report.write_text(json.dumps({"job": name, "status": "succeeded"}))
        return 0
    raise ValueError(f"job name {name!r} has no behaviour prefix (see skybatch.engines.testing)")


def make_spec(directory: Path, job: str, **fields: Any) -> JobSpec:
    """A minimal spec whose report goes to ``directory/job/report.json``."""
    jobdir = directory / job
    values: dict[str, Any] = {
        "run": "test/run",
        "job": job,
        "qgraph": str(directory / "graph.qg"),
        "quantum_ids": [],
        "butler_config": str(directory / "butler.yaml"),
        "workdir": str(jobdir / "work"),
        "report_path": str(jobdir / "report.json"),
        "memory_mb": 1024,
        "walltime_s": 60,
    }
    values.update(fields)
    return JobSpec(**values)


def wait_for(
    engine: Engine,
    engine_ids: Sequence[str],
    timeout_s: float = 20.0,
    states: frozenset[JobState] = FINAL_STATES,
    interval_s: float = 0.02,
) -> list[JobStatus]:
    """Poll until every job is in one of ``states``; raise TimeoutError with the last states."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = engine.poll(engine_ids)
        if all(status.state in states for status in statuses):
            return statuses
        if time.monotonic() > deadline:
            pending = {s.engine_id: str(s.state) for s in statuses if s.state not in states}
            raise TimeoutError(f"jobs not in {sorted(states)} after {timeout_s} s: {pending}")
        time.sleep(interval_s)


class InstantEngine(Engine):
    """An engine whose jobs succeed at their first poll without running anything.

    It drives the scheduler's and the campaign manager's state machines at scale (a
    benchmark of 100,000 jobs measures skybatch's bookkeeping, not job execution);
    jobs whose name starts with ``fail-`` fail with exit code 3 instead.
    """

    name = "instant"

    def __init__(self, max_parallel_jobs: int = 1000) -> None:
        self._max = max_parallel_jobs
        self._jobs: dict[str, str] = {}
        self._ids = 0
        self.submitted = 0

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(max_parallel_jobs=self._max)

    def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        ids = []
        for spec in specs:
            self._ids += 1
            engine_id = f"instant-{self._ids}"
            self._jobs[engine_id] = spec.job
            ids.append(engine_id)
        self.submitted += len(specs)
        return ids

    def poll(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        return [self._status(engine_id) for engine_id in engine_ids]

    def _status(self, engine_id: str) -> JobStatus:
        job = self._jobs.get(engine_id)
        if job is None:
            return JobStatus(
                engine_id=engine_id,
                state=JobState.FAILED,
                failure=FailureKind.LOST,
                message=f"{engine_id} is unknown to this engine",
            )
        if job == "":  # cancelled
            return JobStatus(
                engine_id=engine_id, state=JobState.CANCELLED, failure=FailureKind.CANCELLED
            )
        if job.startswith("fail-"):
            return JobStatus(
                engine_id=engine_id, state=JobState.FAILED, exit_code=3, failure=FailureKind.ERROR
            )
        return JobStatus(engine_id=engine_id, state=JobState.SUCCEEDED, exit_code=0)

    def cancel(self, engine_ids: Sequence[str]) -> None:
        for engine_id in engine_ids:
            if engine_id in self._jobs:
                self._jobs[engine_id] = ""

    def forget(self, engine_ids: Sequence[str]) -> None:
        for engine_id in engine_ids:
            self._jobs.pop(engine_id, None)  # every job has ended once submitted

    def close(self) -> None:
        self._jobs.clear()
