"""How the local engine runs queued jobs: a pool of warm workers or one process per job.

Both pools are driven by the engine's manager thread with the engine's lock held:
``schedule`` takes jobs off the FIFO queue while there is room, ``collect`` finishes
the jobs whose worker or process reported or died. A pool never decides a job's
fate beyond "it exited with this code" or "what ran it died"; the engine enforces
memory and walltime for both the same way.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

import psutil

from skybatch.engines.base import FailureKind, JobState
from skybatch.engines.local.jobs import LocalJob, describe_exit, killed_from_outside
from skybatch.engines.local.settings import LocalSettings
from skybatch.engines.local.slots import ProcessRun, WarmWorker, tree_rss_mb

__all__ = ["MAX_START_FAILURES", "ProcessPool", "WarmPool"]

log = logging.getLogger("skybatch.engines.local")

#: Workers dying before they are ready this many times in a row: stop replacing them.
MAX_START_FAILURES = 3


class WarmPool:
    """Up to ``max_workers`` long-lived workers, started as jobs queue up."""

    def __init__(self, settings: LocalSettings, ctx: BaseContext) -> None:
        self._settings = settings
        self._ctx = ctx
        self._names = itertools.count(1)
        self._start_failures = 0
        self._preload_warned = False
        self.workers: list[WarmWorker] = []
        self.broken: str | None = None  # why no job can run here

    @property
    def empty(self) -> bool:
        return not self.workers

    def running(self) -> list[LocalJob]:
        return [worker.job for worker in self.workers if worker.job is not None]

    def waitables(self) -> list[Any]:
        return [item for worker in self.workers for item in worker.waitables()]

    def schedule(self, queue: deque[LocalJob]) -> None:
        live = [worker for worker in self.workers if not worker.retiring]
        for worker in live:
            if not queue:
                break
            if worker.available:
                job = queue.popleft()
                if worker.run(job):
                    job.start(worker, time.monotonic())
                else:  # died meanwhile: the job goes to the next worker
                    worker.job = None
                    queue.appendleft(job)
        starting = sum(1 for worker in live if not worker.ready)
        idle = sum(1 for worker in live if worker.ready and worker.available)
        missing = min(len(queue) - starting - idle, self._settings.max_workers - len(live))
        self._start(missing)

    def warm_up(self) -> None:
        """Start every worker ahead of the first job, while the caller still builds the
        work: a worker started only when jobs arrive leaves its core idle for the
        seconds of its imports (on 2 cores that cost more than the caller's share of
        CPU the imports take during the build)."""
        live = [worker for worker in self.workers if not worker.retiring]
        self._start(self._settings.max_workers - len(live))

    def _start(self, n: int) -> None:
        settings = self._settings
        for _ in range(max(0, n)):
            name = f"skybatch-local-worker-{next(self._names)}"
            try:
                worker = WarmWorker(
                    self._ctx, settings.preload, settings.runner, name, settings.worker_nice
                )
            except Exception as exc:  # e.g. spawn from an unguarded __main__, no fds left
                self.broken = f"cannot start a local worker: {type(exc).__name__}: {exc}"
                log.error("local engine cannot run jobs: %s", self.broken)
                return
            self.workers.append(worker)

    def collect(self) -> None:
        for worker in list(self.workers):
            while (message := worker.receive()) is not None:
                self._on_message(worker, message)
            if worker.gone:
                self._on_gone(worker)

    def stop_all(self) -> None:
        """Ask ready workers to exit; kill those still importing their preload modules."""
        for worker in self.workers:
            if worker.ready:
                worker.stop()
            else:
                worker.kill()

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()

    def reap_all(self, timeout: float) -> None:
        for worker in self.workers:
            worker.reap(timeout)
        self.workers.clear()

    def _on_message(self, worker: WarmWorker, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            worker.ready = True
            self._start_failures = 0
            if worker.ps is not None:
                worker.baseline_rss_mb = tree_rss_mb(worker.ps)
            errors: dict[str, str] = message.get("preload_errors") or {}
            if errors and not self._preload_warned:  # once per engine, not per worker
                self._preload_warned = True
                for module, error in errors.items():
                    log.warning("local engine: preload module %s not imported: %s", module, error)
        elif op == "fatal":
            self.broken = str(message.get("error"))
            log.error("local engine cannot run jobs: %s", self.broken)
            worker.retiring = True
        elif op == "done" and worker.job is not None:
            job, worker.job = worker.job, None
            if job.state is JobState.RUNNING:
                job.finish_exited(int(message["exit_code"]), message.get("error"))
            self._maybe_recycle(worker)

    def _maybe_recycle(self, worker: WarmWorker) -> None:
        """Replace a worker that kept much more memory than it started with."""
        growth = self._settings.recycle_rss_growth_mb
        if growth is None or worker.ps is None or worker.baseline_rss_mb is None:
            return
        try:  # an idle worker has no children: its own RSS is one small /proc read
            rss: float | None = worker.ps.memory_info().rss / (1024 * 1024)
        except psutil.Error:
            rss = None
        if rss is not None and rss - worker.baseline_rss_mb > growth:
            log.info("local engine: recycling %s (idle RSS %.0f MB)", worker.process.name, rss)
            worker.stop()

    def _on_gone(self, worker: WarmWorker) -> None:
        worker.eof = True
        worker.process.join(1.0)
        code = worker.process.exitcode
        job = worker.job
        if job is not None and job.state is JobState.RUNNING:
            what = "died" if code is None else describe_exit(code)
            lost = code is None or killed_from_outside(code)  # not the job's doing
            job.finish(
                JobState.FAILED,
                failure=FailureKind.WORKER_LOST if lost else FailureKind.ERROR,
                exit_code=code,
                message=f"worker {worker.process.name} (pid {worker.process.pid}) running "
                f"job {job.spec.job} {what}" + (" (a lost worker)" if lost else ""),
            )
        elif not worker.ready and not worker.retiring:
            self._start_failures += 1
            if self._start_failures >= MAX_START_FAILURES:
                self.broken = (
                    f"{self._start_failures} local workers died while starting (last "
                    f"{describe_exit(code or 0)}); check the preload modules"
                )
                log.error("local engine cannot run jobs: %s", self.broken)
        self.workers.remove(worker)
        worker.reap(1.0)


class ProcessPool:
    """One fresh interpreter per job, at most ``max_workers`` at a time."""

    def __init__(self, settings: LocalSettings, wake: Callable[[], None]) -> None:
        self._settings = settings
        self._wake = wake
        self.runs: list[ProcessRun] = []
        self.broken: str | None = None

    @property
    def empty(self) -> bool:
        return not self.runs

    def running(self) -> list[LocalJob]:
        return [run.job for run in self.runs if run.job.state is JobState.RUNNING]

    def waitables(self) -> list[Any]:
        return []  # each run's waiter thread wakes the engine when its child exits

    def warm_up(self) -> None:
        """Nothing to start ahead: each job gets a fresh interpreter."""

    def schedule(self, queue: deque[LocalJob]) -> None:
        while queue and len(self.runs) < self._settings.max_workers:
            job = queue.popleft()
            try:
                run = ProcessRun(job, self._settings.runner, self._wake)
            except OSError as exc:
                job.finish(
                    JobState.FAILED,
                    failure=FailureKind.ERROR,
                    message=f"cannot start job {job.spec.job}: {exc}",
                )
                continue
            job.start(run, time.monotonic())
            self.runs.append(run)

    def collect(self) -> None:
        for run in list(self.runs):
            code = run.returncode()
            if code is not None:
                self.runs.remove(run)
                if run.job.state is JobState.RUNNING:
                    run.job.finish_exited(code)

    def stop_all(self) -> None:
        """Nothing to ask: running jobs were cancelled (killed) before."""

    def kill_all(self) -> None:
        for run in self.runs:
            run.kill()

    def reap_all(self, timeout: float) -> None:
        for run in self.runs:
            run.reap(timeout)
        self.runs.clear()
