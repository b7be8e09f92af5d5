"""The execution pool (seed steps 10, 11 for a campaign): one engine and one scheduler
loop for every run a campaign manager has in flight.

A run is a unit of bookkeeping, not of resources. The pool owns, per engine
configuration, **one** engine (local: one set of warm workers started once; Slurm: one
submitter, one set of pilots) and drives the schedulers of all its runs
(:class:`~skybatch.run.scheduler.Scheduler`, one per run) a step at a time in one loop
(:meth:`ExecutionPool.tick`), writing all their state changes in one transaction.

A run's **set-up** (expansion into the quantum graph, the workflow, provenance,
init-outputs, input registration, its jobs: :func:`~skybatch.run.driver.set_up_run`)
and its **finish** (stage-back, Butler ingest, catalogs, clean-up:
:func:`~skybatch.run.driver.finish_run_in_process`) run in a bookkeeping process
beside the loop, so the engine keeps executing the jobs of the other runs meanwhile.
Where set-ups and finishes run is the pool's :class:`Bookkeeping`: by default
:class:`DriverBookkeeping` (the driver's functions in a spawned process); stand-ins
(tests, ``benchmarks/manager_scale.py``) write their rows in the pool's process, and an
``engine_factory`` can build the engines (an instant one) instead of the registry.
:class:`DriverBookkeeping` has one such process per core (at most 4): with one, a
campaign of many small groups left the engine idle 40% of the time waiting for
set-ups (``benchmarks/campaign_throughput.py``). The bookkeeping takes set-ups first
while fewer jobs wait for a slot than twice the engine's slots, finishes otherwise:
the engine never runs dry for want of set-up runs, and finished runs do not wait
long for their finish. (Concurrent set-ups and finishes write the Butler registry at
once: daf_butler's SQLite registry takes write transactions with ``BEGIN IMMEDIATE``
and waits up to 5 minutes for a lock; PostgreSQL registries take concurrent writers.)

Which run's jobs go to the engine when slots free up (:func:`allocate`): the highest
``priority`` first (a tuple: step priority, then campaign priority); among equals the
run whose ``share`` (its campaign) has the fewest jobs in the engine, so campaigns of
equal priority progress together and none starves; then the oldest run. A share
never has more than its ``share_limit`` jobs in the engine (a campaign's
``max_running_jobs``); a paused share gets no new job (its jobs in the engine run to
their end).

Restart safety is the run's own: every state change is in the state database before
the work it allows; a run found with jobs is resumed
(:func:`~skybatch.run.driver.prepare_execution` with ``resume``), a run found
without is set up again (what a killed set-up left is discarded).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import multiprocessing
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sqlalchemy import func, select

from skybatch.backbone.service import Backbone
from skybatch.engines.base import Engine, engine_capacity
from skybatch.engines.registry import EngineRegistry
from skybatch.errors import SkybatchError
from skybatch.graph.workflow import Workflow
from skybatch.settings import Settings

from .context import RunContext, RunEnd, RunOptions, RunSummary, engine_settings
from .models import JobRow, RunRow, RunState
from .runlog import RunLogFile
from .scheduler import Scheduler, flush_all
from .states import change_run_state

if TYPE_CHECKING:
    from .driver import SetUp

__all__ = [
    "Bookkeeping",
    "DriverBookkeeping",
    "EngineFactory",
    "ExecutionPool",
    "InlineExecutor",
    "PoolRun",
    "RunOutcome",
    "allocate",
    "default_bookkeeping_workers",
]

#: ``factory(engine name, raw settings)`` builds an engine of the pool (by default
#: the registry's, validated against the engine's settings model).
EngineFactory = Callable[[str, dict[str, Any]], Engine]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolRun:
    """A run the pool is asked to carry to its end.

    ``key`` names it to the caller (a campaign group's id); ``options.output_run`` is
    the run's name. ``share``: who its jobs count against (its campaign);
    ``share_limit``: most jobs of the share in the engine at once. ``after_restart``:
    the caller found the run in flight after a restart, so a run that had already
    failed or been cancelled only has that reported (a failed run is not resumed: that
    would retry its held jobs, which is the operator's ``retry``). ``engine_workers``:
    parallel jobs of the engine the run goes to (local engine), whatever the run's own
    ``workers`` (which a campaign caps by its ``max_running_jobs``).
    """

    key: Hashable
    options: RunOptions
    share: Hashable = None
    priority: tuple[int, ...] = (0,)
    share_limit: int | None = None
    after_restart: bool = False
    engine_workers: int | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run of the pool ended: ``succeeded``, ``failed`` or ``stopped``."""

    key: Hashable
    state: str
    message: str
    resumed: bool = False
    summary: RunSummary | None = None


@dataclass
class _Entry:
    run: PoolRun
    seq: int
    phase: str = "setup"  # setup -> execute -> finish
    resumed: bool = False
    stop: bool = False
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)
    engine_key: str = ""
    ctx: RunContext | None = None
    scheduler: Scheduler | None = None
    log: RunLogFile | None = None
    #: Times its set-up or finish was started again after its process died.
    requeued: int = 0
    finish_args: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        run = self.run.options.output_run
        assert run is not None
        return run


class Bookkeeping(ABC):
    """A pool's set-ups and finishes (see the module): what they do and where they run.

    The pool hands them, at most :attr:`workers` at a time, to the :meth:`executor`
    (made on first use)
    and collects their results in its loop. A :class:`~skybatch.errors.SkybatchError`
    they raise is the run's failure as it says ("could not run"); any other exception
    fails the run as unexpected.
    """

    @abstractmethod
    def set_up(self, settings: Settings, options: RunOptions) -> SetUp:
        """Set the new run ``options.output_run`` up to its jobs: its row in the state
        database (``running``), ``workflow.json`` in the returned work directory, a
        row per job (:func:`~skybatch.run.driver.set_up_run`)."""

    @abstractmethod
    def finish(self, settings: Settings, end: RunEnd) -> RunSummary:
        """End run ``end.run`` whose jobs ended with ``end.counts`` (jobs per state):
        its outputs, then its state (through
        :func:`~skybatch.run.states.change_run_state`) and summary
        (:func:`~skybatch.run.driver.finish_run_in_process`)."""

    #: Set-ups and finishes under way at once.
    workers: int = 1

    def executor(self) -> Executor:
        """Where set-ups and finishes run: by default in the pool's loop as it hands
        them over (:class:`InlineExecutor`; nothing else moves meanwhile)."""
        return InlineExecutor()


class DriverBookkeeping(Bookkeeping):
    """The real set-ups and finishes: the driver's functions, in a spawned process
    (graph building is CPU-bound Python; the engine keeps executing meanwhile). A kill
    point reached there kills the whole manager (a crash of the node).

    ``workers``: bookkeeping processes (default :func:`default_bookkeeping_workers`).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_bookkeeping_workers()

    def set_up(self, settings: Settings, options: RunOptions) -> SetUp:
        from .driver import set_up_run

        return set_up_run(settings, options)

    def finish(self, settings: Settings, end: RunEnd) -> RunSummary:
        from .driver import finish_run_in_process

        return finish_run_in_process(settings, end)

    def executor(self) -> Executor:
        level = logging.getLogger().getEffectiveLevel()
        executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_bookkeeping_init,
            initargs=(os.getpid(), level),
        )
        for _ in range(self.workers):
            executor.submit(_warm)
        return executor


class InlineExecutor(Executor):
    """Runs what it is given at once, in the caller's thread; the future it returns
    is done (stand-in bookkeeping that writes a few rows)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class ExecutionPool:
    """See the module. Use as a context manager, or :meth:`close` it.

    ``bookkeeping``: the runs' set-ups and finishes (default: :class:`DriverBookkeeping`);
    ``engine_factory``: builds the engines (default: ``registry``'s).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        flush_s: float = 0.25,
        registry: EngineRegistry | None = None,
        bookkeeping: Bookkeeping | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.settings = settings
        self.flush_s = flush_s
        self.registry = registry or EngineRegistry.default()
        self.bookkeeping: Bookkeeping = bookkeeping or DriverBookkeeping()
        self.engine_factory = engine_factory
        self.backbone = Backbone.from_settings(settings)
        self.sessions = self.backbone.catalog.sessions
        self._entries: dict[Hashable, _Entry] = {}
        self._seq = 0
        self._engines: dict[str, Engine] = {}
        self._outcomes: list[RunOutcome] = []
        self._todo: list[tuple[_Entry, str, tuple[Any, ...]]] = []  # bookkeeping to do
        self._busy: list[tuple[_Entry, str, Future[Any]]] = []
        self._executor: Executor | None = None
        self._last_flush = -math.inf
        #: Engines built since the pool started (one per engine configuration).
        self.engines_built = 0
        #: Wall seconds of set-ups and finishes in the bookkeeping process.
        self.bookkeeping_s = 0.0
        #: Set-ups and finishes done.
        self.bookkeeping_done = 0

    # -- the caller's side ----------------------------------------------------------
    def add(self, run: PoolRun) -> None:
        """Carry ``run`` to its end: set it up (in the bookkeeping process), resume it,
        or only report it, depending on what the state database holds of it."""
        if run.key in self._entries:
            raise ValueError(f"run {run.key!r} is already in the pool")
        self._seq += 1
        entry = _Entry(run, self._seq)
        self._entries[run.key] = entry
        name = entry.name
        with self.sessions() as session:
            row = session.scalar(select(RunRow).where(RunRow.name == name))
            jobs = (
                session.scalar(
                    select(func.count()).select_from(JobRow).where(JobRow.run_id == row.id)
                )
                if row is not None
                else 0
            )
            stored = (row.state, row.message, dict(row.options), Path(row.workdir)) if row else None
        if stored is not None and stored[0] == RunState.SUCCEEDED.value:
            self._end(entry, "succeeded", f"run {name} had already succeeded", resumed=True)
        elif stored is not None and run.after_restart and stored[0] in ("failed", "cancelled"):
            why = f": {stored[1]}" if stored[1] else ""
            self._end(entry, "failed", f"run {name} had already {stored[0]}{why}", resumed=True)
        elif stored is not None and jobs:
            entry.resumed = True
            try:
                self._resume(entry, RunOptions.from_json(stored[2]), stored[3])
            except SkybatchError as exc:
                self._end(entry, "failed", f"run {name} could not run: {exc}")
            except Exception as exc:
                _log.exception("run %s could not be resumed", name)
                self._end(entry, "failed", f"run {name} failed unexpectedly: {_what(exc)}")
        else:  # new, or killed while being set up (discarded and set up again)
            self._todo.append((entry, "setup", (self.settings, run.options)))

    def stop(self, key: Hashable) -> None:
        """Stop a run (its campaign group was cancelled): its jobs in the engine are
        cancelled, the rest never start; what its succeeded jobs made is ingested."""
        entry = self._entries.get(key)
        if entry is None or entry.stop:
            return
        entry.stop = True
        if entry.phase == "setup" and any(e is entry for e, _, _ in self._todo):
            self._todo = [t for t in self._todo if t[0] is not entry]
            self._end(
                entry, "stopped", f"run {entry.name} was not started: the group was cancelled"
            )
        elif entry.phase == "execute":
            assert entry.scheduler is not None
            entry.scheduler.cancel("its campaign group was cancelled")

    def outcomes(self) -> list[RunOutcome]:
        """The runs that ended since the last call."""
        out, self._outcomes = self._outcomes, []
        return out

    def in_flight(self) -> list[Hashable]:
        return list(self._entries)

    def jobs_in_engine(self, share: Hashable = None) -> int:
        """Jobs of ``share`` (every share: None) handed to the engine and not ended."""
        return sum(
            e.scheduler.n_in_flight
            for e in self._entries.values()
            if e.scheduler is not None and (share is None or e.run.share == share)
        )

    def jobs_waiting(self) -> int:
        """Jobs ready to run that wait for a slot."""
        return sum(e.scheduler.n_ready for e in self._entries.values() if e.scheduler)

    def slots(self) -> int:
        """Jobs the pool's engines run at once."""
        return sum(e.capabilities.max_parallel_jobs for e in self._engines.values())

    def stalled(self, paused: Iterable[Hashable]) -> bool:
        """Nothing can change without an operator: every run left belongs to a paused
        share and has no job in the engine and no bookkeeping under way."""
        paused = set(paused)
        return all(
            e.phase == "execute"
            and e.run.share in paused
            and e.scheduler is not None
            and e.scheduler.n_in_flight == 0
            for e in self._entries.values()
        )

    def wait(self, timeout_s: float) -> None:
        """Pause the loop for ``timeout_s`` seconds at most: less when a set-up or
        finish under way ends meanwhile (its run goes on at once, not a pause later)."""
        if self._busy:
            wait([task[2] for task in self._busy], timeout=timeout_s, return_when=FIRST_COMPLETED)
        else:
            time.sleep(timeout_s)

    # -- the loop -------------------------------------------------------------------
    def tick(self, paused: Iterable[Hashable] = ()) -> bool:
        """One turn: collect finished bookkeeping, step every executing run's scheduler
        (new jobs only for runs of shares not ``paused``), write the state changes,
        hand the bookkeeping process its next task. Returns whether anything changed."""
        paused = set(paused)
        changed = self._collect()
        running = [e for e in self._entries.values() if e.phase == "execute"]
        for engine_key, engine in self._engines.items():
            entries = [e for e in running if e.engine_key == engine_key]
            if not entries:
                continue
            share_jobs: dict[Hashable, int] = {}
            for e in entries:
                n = e.scheduler.n_in_flight if e.scheduler is not None else 0
                share_jobs[e.run.share] = share_jobs.get(e.run.share, 0) + n
            room = engine_capacity(engine.capabilities) - sum(share_jobs.values())
            given = allocate(
                room,
                [e for e in entries if e.run.share not in paused and not e.stop],
                share_jobs,
            )
            # Every run's submissions are written ahead in one transaction, then
            # handed to the engine (Scheduler.step in two halves).
            planned = []
            for e in entries:
                assert e.scheduler is not None and e.log is not None
                try:
                    with e.log.current():
                        changed |= e.scheduler.plan(given.get(e.run.key, 0))
                    planned.append(e)
                except Exception as exc:  # one run's fault: it fails, the others go on
                    self._break(e, exc)
                    changed = True
            if any(e.scheduler is not None and e.scheduler.staged for e in planned):
                self._flush(force=True)
            for e in planned:
                assert e.scheduler is not None and e.log is not None
                if e.run.key not in self._entries:
                    continue  # ended meanwhile
                try:
                    with e.log.current():
                        changed |= e.scheduler.launch()
                except Exception as exc:
                    self._break(e, exc)
                    changed = True
        done = [
            e
            for e in running
            if e.scheduler is not None
            and e.run.key in self._entries
            and (e.scheduler.finished or (e.stop and not e.scheduler.n_in_flight))
        ]
        self._flush(force=bool(done))
        for e in done:
            self._to_finish(e)
            changed = True
        self._dispatch()
        return changed

    def _break(self, entry: _Entry, exc: Exception) -> None:
        """A run whose scheduler raised (its engine refused a submission, its inputs
        could not be staged, a bug): its jobs in the engine are cancelled and what it
        recorded so far is written, and it ends failed with the error, as a run of
        its own would; its group can be retried (the run resumes)."""
        name = entry.name
        if isinstance(exc, SkybatchError):
            message = f"run {name} could not run: {exc}"
        else:
            _log.error("run %s failed unexpectedly", name, exc_info=exc)
            message = f"run {name} failed unexpectedly: {_what(exc)}"
        scheduler = entry.scheduler
        if scheduler is not None:
            try:
                scheduler.cancel(f"stopped: {message}")
                with self.sessions.begin() as session:
                    scheduler.flush_into(session)
                scheduler.flushed()
            except Exception:
                _log.exception("run %s: its jobs could not all be stopped and recorded", name)
        self._end(entry, "failed", message)

    def _flush(self, *, force: bool = False) -> None:
        dirty = [
            e.scheduler
            for e in self._entries.values()
            if e.scheduler is not None and e.scheduler.dirty()
        ]
        if not dirty or (not force and time.monotonic() - self._last_flush < self.flush_s):
            return
        self._last_flush = time.monotonic()
        with self.sessions.begin() as session:
            flush_all(session, dirty)
        for scheduler in dirty:
            scheduler.flushed()

    # -- execution in this process ------------------------------------------------
    def _engine(self, run: PoolRun) -> tuple[str, Engine]:
        options = run.options
        if run.engine_workers:
            options = replace(options, workers=run.engine_workers)
        raw = engine_settings(options)
        key = hashlib.sha256(
            json.dumps([options.engine, raw], sort_keys=True, default=str).encode()
        ).hexdigest()[:12]
        engine = self._engines.get(key)
        if engine is None:
            if self.engine_factory is not None:
                engine = self.engine_factory(options.engine, raw)
            else:
                model = self.registry.get(options.engine).settings_model
                if "script_dir" in model.model_fields and "script_dir" not in raw:
                    # Its files (job scripts, logs, the pilots' queue) in a place a
                    # restarted manager finds again.
                    home = self.settings.home
                    raw["script_dir"] = str(home / "pool" / f"{options.engine}-{key}")
                engine = self.registry.create(options.engine, raw)
            engine.warm_up()
            self._engines[key] = engine
            self.engines_built += 1
        return key, engine

    def _execute(self, entry: _Entry, options: RunOptions, workdir: Path, *, resume: bool) -> None:
        from .driver import prepare_execution

        entry.engine_key, engine = self._engine(entry.run)
        ctx = RunContext(
            self.settings, options, entry.name, backbone=self.backbone, workdir=workdir
        )
        workflow = Workflow.load(workdir / "workflow.json")
        ctx.butler_config = workflow.butler_config
        entry.ctx = ctx
        entry.log = RunLogFile(workdir)
        with entry.log.current():
            entry.scheduler = prepare_execution(ctx, engine, workflow, None, resume=resume)
            entry.scheduler.start()
        entry.phase = "execute"
        entry.phases["execute_start"] = time.perf_counter()
        if entry.stop:
            entry.scheduler.cancel("its campaign group was cancelled")

    def _resume(self, entry: _Entry, options: RunOptions, workdir: Path) -> None:
        with self.sessions.begin() as session:
            live = session.scalar(select(RunRow).where(RunRow.name == entry.name))
            assert live is not None
            change_run_state(live, RunState.RUNNING)
            live.message = None
        entry.run = replace(entry.run, options=options)
        self._execute(entry, options, workdir, resume=True)

    def _to_finish(self, entry: _Entry) -> None:
        assert entry.scheduler is not None and entry.ctx is not None and entry.log is not None
        counts = entry.scheduler.result().counts
        entry.log.close()
        start = entry.phases.pop("execute_start", entry.started)
        phases = {**entry.phases, "execute": time.perf_counter() - start}
        entry.phase = "finish"
        end = RunEnd(
            entry.ctx.options,
            entry.name,
            entry.ctx.workdir,
            entry.ctx.via_archive,
            counts,
            phases,
            time.perf_counter() - entry.started,
        )
        args = (self.settings, end)
        entry.scheduler = None  # its memory goes with it
        entry.finish_args = args
        self._todo.append((entry, "finish", args))

    # -- the bookkeeping process ----------------------------------------------------
    def _dispatch(self) -> None:
        while len(self._busy) < self.bookkeeping.workers and self._todo:
            slots = self.slots() or 1
            setups = [t for t in self._todo if t[1] == "setup"]
            finishes = [t for t in self._todo if t[1] == "finish"]
            if setups and (not finishes or self.jobs_waiting() < 2 * slots):
                task = min(setups, key=lambda t: (tuple(-p for p in t[0].run.priority), t[0].seq))
            else:
                task = finishes[0]
            self._todo.remove(task)
            entry, kind, args = task
            fn = _set_up if kind == "setup" else _finish
            future = self._process().submit(fn, self.bookkeeping, *args)
            self._busy.append((entry, kind, future))

    def _restart_bookkeeping(self) -> None:
        """Drop a broken executor (its process died); the next task makes a new one.
        Tasks it still held fail with BrokenExecutor and are requeued in turn."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _process(self) -> Executor:
        if self._executor is None:
            self._executor = self.bookkeeping.executor()
        return self._executor

    def _collect(self) -> bool:
        done = [task for task in self._busy if task[2].done()]
        for task in done:
            self._busy.remove(task)
            self._collected(*task)
        return bool(done)

    def _collected(self, entry: _Entry, kind: str, future: Future[Any]) -> None:
        try:
            result = future.result()
        except BrokenExecutor as exc:  # a bookkeeping process died (the OOM killer, say)
            self._restart_bookkeeping()
            if entry.requeued < 2:  # set-ups and finishes are idempotent: do it again
                entry.requeued += 1
                _log.warning("run %s: its %s is started again: %s", entry.name, kind, exc)
                args = (self.settings, entry.run.options) if kind == "setup" else entry.finish_args
                self._todo.append((entry, kind, args))
                return
            result = _Failed(f"{kind} failed: its process died twice: {_what(exc)}", False)
        except Exception as exc:
            result = _Failed(f"{kind} failed: {_what(exc)}", False)
        self.bookkeeping_done += 1
        if isinstance(result, _Failed):
            self.bookkeeping_s += result.seconds
            prefix = "could not run" if result.expected else "failed unexpectedly"
            self._end(entry, "failed", f"run {entry.name} {prefix}: {result.message}")
            return
        if kind == "setup":
            self.bookkeeping_s += result.seconds
            entry.phases.update(result.value.phases)
            try:  # a run stopped meanwhile is cancelled at once (and finished)
                self._execute(entry, entry.run.options, result.value.workdir, resume=False)
            except SkybatchError as exc:
                self._end(entry, "failed", f"run {entry.name} could not run: {exc}")
            except Exception as exc:
                _log.exception("run %s could not start executing", entry.name)
                self._end(entry, "failed", f"run {entry.name} failed unexpectedly: {_what(exc)}")
            return
        self.bookkeeping_s += result.seconds
        summary: RunSummary = result.value
        jobs = ", ".join(f"{k}={v}" for k, v in sorted(summary.jobs.items())) or "no jobs"
        if entry.stop:
            self._end(entry, "stopped", f"run {entry.name} was stopped: the group was cancelled")
        elif summary.state == RunState.SUCCEEDED.value:
            warnings = "".join(f"; warning: {w}" for w in summary.warnings)
            message = f"run {entry.name} succeeded: {summary.quanta} quanta ({jobs}){warnings}"
            self._end(entry, "succeeded", message, summary=summary)
        else:
            message = f"run {entry.name} {summary.state}: jobs {jobs}"
            self._end(entry, "failed", message, summary=summary)

    def _end(
        self,
        entry: _Entry,
        state: str,
        message: str,
        *,
        resumed: bool | None = None,
        summary: RunSummary | None = None,
    ) -> None:
        if entry.log is not None:
            entry.log.close()
        if entry.ctx is not None:
            entry.ctx.close()
        self._entries.pop(entry.run.key, None)
        self._outcomes.append(
            RunOutcome(
                entry.run.key,
                state,
                message,
                entry.resumed if resumed is None else resumed,
                summary,
            )
        )

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the engines (their workers end; jobs still running are lost, and a
        restarted manager retries them) and the bookkeeping process."""
        for entry in list(self._entries.values()):
            if entry.log is not None:
                entry.log.close()
        if self._executor is not None:
            for process in list(getattr(self._executor, "_processes", {}).values()):
                if self._busy and process.is_alive():
                    process.terminate()  # a set-up or finish under way: redone after restart
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for engine in self._engines.values():
            try:
                engine.close()
            except Exception:
                _log.exception("closing an engine of the pool failed")
        self._engines.clear()
        self.backbone.close()

    def __enter__(self) -> ExecutionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_bookkeeping_workers() -> int:
    """Bookkeeping processes of a pool by default: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _ended(scheduler: Scheduler, stopped: bool) -> bool:
    return scheduler.finished or (stopped and not scheduler.n_in_flight)


def allocate(room: int, entries: list[Any], share_jobs: dict[Hashable, int]) -> dict[Hashable, int]:
    """Give ``room`` free engine slots to runs (see the module): each slot to the run
    with the highest priority, then whose share has the fewest jobs in the engine
    (``share_jobs``, updated as slots are given), then the oldest; a run takes at most
    its ready jobs, a share at most its ``share_limit``. Returns run key -> slots.

    Runs of one priority and share wait in one queue, oldest first; the queues' heads
    are in a heap by rank, so a slot costs O(log queues), not a look at every run (a
    manager with hundreds of runs in flight gives thousands of slots a second)."""
    given: dict[Hashable, int] = {}
    jobs = dict(share_jobs)
    queues: dict[tuple[tuple[int, ...], Hashable], deque[Any]] = {}
    for e in sorted(entries, key=lambda e: e.seq):
        if e.scheduler.n_ready > 0:
            queues.setdefault((e.run.priority, e.run.share), deque()).append(e)
    keys = list(queues)
    # (rank: -priority, the share's jobs when pushed, the head's seq; queue index)
    heap = [
        (tuple(-p for p in pri), jobs.get(share, 0), queues[pri, share][0].seq, i)
        for i, (pri, share) in enumerate(keys)
    ]
    heapq.heapify(heap)
    while room > 0 and heap:
        rank, n, seq, i = heapq.heappop(heap)
        share = keys[i][1]
        queue = queues[keys[i]]
        now = jobs.get(share, 0)
        if n != now:  # the share got slots since: ranked again
            heapq.heappush(heap, (rank, now, seq, i))
            continue
        head = queue[0]
        limit = head.run.share_limit
        if limit is not None and now >= limit:
            queue.popleft()  # its share is full: no more slots for it
        else:
            key = head.run.key
            given[key] = given.get(key, 0) + 1
            jobs[share] = now + 1
            room -= 1
            if given[key] >= head.scheduler.n_ready:
                queue.popleft()
        if queue:
            heapq.heappush(heap, (rank, jobs.get(share, 0), queue[0].seq, i))
    return given


# -- in the bookkeeping process ---------------------------------------------------------
@dataclass
class _Done:
    value: Any
    seconds: float


@dataclass
class _Failed:
    message: str
    expected: bool
    seconds: float = 0.0


def _what(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _bookkeeping_init(root_pid: int, level: int) -> None:
    from skybatch.faults import ROOT_ENV

    os.environ[ROOT_ENV] = str(root_pid)  # a kill point here kills the whole manager
    logging.basicConfig(
        level=max(level, logging.WARNING), format="%(levelname)s %(name)s: %(message)s"
    )
    threading.Thread(
        target=_exit_with_parent, args=(root_pid,), name="parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """End this bookkeeping process within ``interval_s`` of its manager's death.

    Its task queue never reports the end of the manager (the process holds both ends
    of the queue's pipe), so after a ``kill -9`` of the manager it waited forever,
    with its memory and open repository files, or went on finishing a run that the
    restarted manager finishes too. Leaving mid-task is what a node crash does, which
    every set-up and finish phase survives (:mod:`skybatch.run.setup`)."""
    while True:
        time.sleep(interval_s)
        if os.getppid() != parent:
            os._exit(70)  # EX_SOFTWARE; nobody reads it


def _warm() -> None:
    """Import what set-ups need while the first runs are looked at."""
    import lsst.pipe.base.all_dimensions_quantum_graph_builder  # noqa: F401

    import skybatch.graph.build
    import skybatch.ingest.butler
    import skybatch.run.driver  # noqa: F401


def _set_up(bookkeeping: Bookkeeping, settings: Settings, options: RunOptions) -> _Done | _Failed:
    start = time.perf_counter()
    try:
        return _Done(bookkeeping.set_up(settings, options), time.perf_counter() - start)
    except SkybatchError as exc:
        return _Failed(str(exc), True, time.perf_counter() - start)
    except Exception as exc:
        logging.getLogger(__name__).exception("set-up of run %s failed", options.output_run)
        return _Failed(_what(exc), False, time.perf_counter() - start)


def _finish(bookkeeping: Bookkeeping, settings: Settings, end: RunEnd) -> _Done | _Failed:
    run = end.run
    start = time.perf_counter()
    try:
        summary = bookkeeping.finish(settings, end)
        return _Done(summary, time.perf_counter() - start)
    except SkybatchError as exc:
        return _Failed(str(exc), True, time.perf_counter() - start)
    except Exception as exc:
        logging.getLogger(__name__).exception("finish of run %s failed", run)
        return _Failed(_what(exc), False, time.perf_counter() - start)
