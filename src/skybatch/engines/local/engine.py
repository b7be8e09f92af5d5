"""The local engine: jobs on this machine, in warm workers or fresh processes.

One manager thread owns every child: it starts workers as jobs queue up (so
:meth:`LocalEngine.submit` returns at once), hands queued jobs out in FIFO order,
collects results and deaths, and every ``memory_poll_s`` samples the RSS of running
jobs to enforce ``memory_mb`` and ``walltime_s``. Callers' threads only touch the
bookkeeping under one lock, except :meth:`LocalEngine.cancel`, which kills at once
so a cancelled job is CANCELLED when the call returns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import multiprocessing
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from skybatch.engines.base import Engine, EngineCapabilities, FailureKind, JobState, JobStatus
from skybatch.engines.errors import EngineClosedError, EngineConfigError, JobSpecConflictError
from skybatch.engines.local.jobs import LocalJob, job_files, write_spec
from skybatch.engines.local.pools import ProcessPool, WarmPool
from skybatch.engines.local.settings import LocalSettings
from skybatch.engines.local.slots import TreeSampler

if TYPE_CHECKING:
    from skybatch.job.spec import JobSpec

__all__ = ["LocalEngine"]

log = logging.getLogger(__name__)

#: Seconds a stopping worker or process gets before it is killed at close().
STOP_TIMEOUT_S = 5.0


class LocalEngine(Engine):
    """Runs jobs on this machine; see the module docstring and :class:`LocalSettings`.

    Each job gets ``spec-<attempt>.json`` (written by :meth:`submit`, with
    ``engine_job_id`` set) and ``engine-<attempt>.log`` (its stdout and stderr) in the
    directory of its ``report_path``, which is created if needed; the runner is called
    with the spec file's path. Ids (``local-<instance>-<n>``) are never reused by
    another engine instance; jobs do not survive the engine (``reattach=False``).
    """

    name: ClassVar[str] = "local"
    #: The settings model a registry or CLI builds from configuration for this engine.
    settings_model: ClassVar[type[LocalSettings]] = LocalSettings

    def __init__(self, settings: LocalSettings | None = None) -> None:
        self.settings = settings or LocalSettings()
        _check_runner(self.settings.runner)
        self._pool: WarmPool | ProcessPool
        if self.settings.isolation == "warm":
            ctx = multiprocessing.get_context(self.settings.start_method)
            self._pool = WarmPool(self.settings, ctx)
        else:
            self._pool = ProcessPool(self.settings, self._wake)
        self._lock = threading.Lock()
        self._sampler = TreeSampler()
        self._jobs: dict[str, LocalJob] = {}
        self._queue: deque[LocalJob] = deque()
        self._spec_owner: dict[Path, LocalJob] = {}  # spec file -> last job using it
        # Ids name the engine instance too, so a later engine never answers for them.
        self._instance = secrets.token_hex(3)
        self._ids = itertools.count(1)
        self._closed = False
        self._crashed: str | None = None  # the manager thread died of this
        self._close_deadline = 0.0
        self._wake_lock = threading.Lock()
        self._wake_open = True
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(
            max_parallel_jobs=self.settings.max_workers,
            enforces_memory=self.settings.enforce_memory,
            warm_workers=self.settings.isolation == "warm",
            isolation_modes=("warm", "process"),
            reattach=False,
            shared_filesystem=True,
        )

    # -- the Engine interface --------------------------------------------------------

    def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        """Queue the jobs (FIFO) and return at once; writes each job's spec file."""
        jobs: list[LocalJob] = []
        with self._lock:
            self._check_open()
            for spec in specs:
                spec_path, log_path = job_files(spec)
                owner = self._spec_owner.get(spec_path)
                if (owner is not None and owner.active) or any(
                    job.spec_path == spec_path for job in jobs
                ):
                    raise JobSpecConflictError(
                        f"job {spec.job} attempt {spec.attempt} would share its spec file "
                        "with another active job",
                        where=str(spec_path),
                        hint="give each job its own report directory, or raise the attempt",
                    )
                engine_id = f"local-{self._instance}-{next(self._ids)}"
                jobs.append(LocalJob(engine_id, spec, spec_path, log_path))
            for job in jobs:  # claimed before the files are written, outside the lock
                self._spec_owner[job.spec_path] = job
        try:
            for job in jobs:
                write_spec(job.spec, job.engine_id, job.spec_path)
        except BaseException:
            with self._lock:
                for job in jobs:
                    job.finish(JobState.CANCELLED, failure=FailureKind.CANCELLED)
            raise
        with self._lock:
            self._check_open()
            for job in jobs:
                self._jobs[job.engine_id] = job
                self._queue.append(job)
            self._start_thread()
        self._wake()
        return [job.engine_id for job in jobs]

    def warm_up(self) -> None:
        """Start the warm workers now: their imports overlap the caller's own work."""
        with self._lock:
            self._check_open()
            self._pool.warm_up()
            self._start_thread()
        self._wake()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"skybatch-local-engine-{id(self):x}", daemon=True
            )
            self._thread.start()

    def poll(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        with self._lock:
            return [self._status(engine_id) for engine_id in engine_ids]

    def cancel(self, engine_ids: Sequence[str]) -> None:
        with self._lock:
            for engine_id in engine_ids:
                job = self._jobs.get(engine_id)
                if job is not None and job.active:
                    self._end(job, JobState.CANCELLED, FailureKind.CANCELLED, "cancelled")
        self._wake()

    def forget(self, engine_ids: Sequence[str]) -> None:
        """Drop the ended jobs among ``engine_ids`` (their specs with them)."""
        with self._lock:
            for engine_id in engine_ids:
                job = self._jobs.get(engine_id)
                if job is not None and not job.active:
                    del self._jobs[engine_id]

    def close(self) -> None:
        """Cancel every job, stop the workers and wait until every child is gone."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for job in list(self._jobs.values()):
                if job.active:
                    self._end(job, JobState.CANCELLED, FailureKind.CANCELLED, "engine closed")
            self._pool.stop_all()
            self._close_deadline = time.monotonic() + STOP_TIMEOUT_S
        self._wake()
        if self._thread is not None:
            self._thread.join()
        self._pool.reap_all(STOP_TIMEOUT_S)
        with self._wake_lock:
            self._wake_open = False
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- bookkeeping (caller holds the lock) ---------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(
                "the local engine is closed", hint="create a new engine to submit jobs"
            )
        if self._crashed is not None:
            raise EngineClosedError(
                f"the local engine stopped after an internal error: {self._crashed}",
                hint="close it and create a new engine; please report the error",
            )

    def _status(self, engine_id: str) -> JobStatus:
        job = self._jobs.get(engine_id)
        if job is None:
            return JobStatus(
                engine_id=engine_id,
                state=JobState.FAILED,
                failure=FailureKind.LOST,
                message=f"{engine_id} is unknown to this local engine "
                "(local jobs do not survive the engine that ran them)",
            )
        return job.status()

    def _end(self, job: LocalJob, state: JobState, failure: FailureKind, message: str) -> None:
        """End an active job now; kill whatever runs it (a warm worker is replaced)."""
        slot = job.slot
        if job.state is JobState.SUBMITTED:
            self._queue.remove(job)
        job.finish(state, failure=failure, message=message)
        if slot is not None:
            slot.kill()

    # -- the manager thread ------------------------------------------------------------

    def _wake(self) -> None:
        # Process waiter threads may call this after close(): never write to a closed
        # (possibly reused) descriptor.
        with self._wake_lock:
            if self._wake_open:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending
                    os.write(self._wake_w, b"\0")

    def _loop(self) -> None:
        try:
            self._manage()
        except BaseException as exc:  # a bug here must not leave jobs hanging unseen
            log.exception("local engine manager thread failed")
            with self._lock:
                self._crashed = f"{type(exc).__name__}: {exc}"
                for job in list(self._jobs.values()):
                    if job.active:
                        message = f"the local engine failed: {self._crashed}"
                        self._end(job, JobState.FAILED, FailureKind.ERROR, message)
                self._pool.kill_all()

    def _manage(self) -> None:
        next_sample = 0.0
        while True:
            with self._lock:
                if self._closed:
                    if self._pool.empty:
                        return
                    if time.monotonic() > self._close_deadline:
                        self._pool.kill_all()
                self._schedule()
                waitables: list[Any] = [self._wake_r, *self._pool.waitables()]
                busy = bool(self._pool.running())
            timeout = max(0.0, next_sample - time.monotonic()) if busy else None
            if self._closed:  # also wake up to notice children that are gone
                timeout = min(timeout or 0.05, 0.05)
            wait(waitables, timeout)
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            with self._lock:
                self._pool.collect()
            if busy and time.monotonic() >= next_sample:
                self._sample()
                next_sample = time.monotonic() + self.settings.memory_poll_s

    def _schedule(self) -> None:
        broken = self._pool.broken
        if broken is not None:
            while self._queue:
                self._end(self._queue[0], JobState.FAILED, FailureKind.ERROR, broken)
        elif not self._closed:
            self._pool.schedule(self._queue)

    def _sample(self) -> None:
        """Sample memory of running jobs (outside the lock); enforce memory and walltime."""
        with self._lock:
            targets = [(job, job.slot) for job in self._pool.running()]
        samples = []
        for job, slot in targets:
            proc = slot.ps if slot is not None else None
            samples.append((job, slot, self._sampler.rss_mb(proc) if proc is not None else None))
        self._sampler.forget({slot.ps.pid for _, slot in targets if slot and slot.ps})
        now = time.monotonic()
        with self._lock:
            for job, slot, rss in samples:
                if job.state is not JobState.RUNNING or job.slot is not slot:
                    continue
                if rss is not None:
                    job.max_rss_mb = max(job.max_rss_mb or 0.0, rss)
                limit = job.spec.memory_mb
                if self.settings.enforce_memory and rss is not None and rss > limit:
                    self._end(
                        job,
                        JobState.FAILED,
                        FailureKind.OUT_OF_MEMORY,
                        f"job {job.spec.job} reached a peak RSS of {rss:.0f} MB (with its "
                        f"children), over its memory limit of {limit} MB; killed",
                    )
                elif job.started is not None and now - job.started > job.spec.walltime_s:
                    self._end(
                        job,
                        JobState.FAILED,
                        FailureKind.TIMEOUT,
                        f"job {job.spec.job} ran {now - job.started:.1f} s, over its "
                        f"walltime of {job.spec.walltime_s} s; killed",
                    )


def _check_runner(runner: str) -> None:
    """Fail at construction, not per job, if the runner's module does not exist."""
    module = runner.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise EngineConfigError(
            f"the runner module {module} cannot be found",
            where="local.runner",
            hint="install the package that provides it or set another 'module:function'",
        )
