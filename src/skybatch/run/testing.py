"""Stand-ins for an execution pool's set-ups, finishes and engines (seed steps 10, 11
at scale, without a Butler).

The campaign manager's pass and its execution pool (:mod:`skybatch.run.pool`) run
for real on them: runs' schedulers in the pool's loop, their job rows, the state
changes of jobs, runs, groups, steps and campaigns. What stands in:

* :class:`SyntheticBookkeeping` (in the pool's loop, or in a spawned process as the
  real bookkeeping runs) sets a run up from a workflow made by hand (no quantum
  graph): the run's row (``pending`` -> ``running``, as the driver's set-up), its
  ``workflow.json`` and a row per job; its finish records one executed quantum per
  job and attempt (as ingesting the job reports would: CPU seconds, peak memory) and
  ends the run through :func:`~skybatch.run.states.change_run_state`, as the driver's
  finish does, without staging or ingesting anything;
* :func:`instant_engine` builds an :class:`~skybatch.engines.testing.InstantEngine`
  (every job succeeds at its first poll; ``fail-`` jobs fail) whatever engine a run
  names.

Used by the manager's stand-in tests and ``benchmarks/manager_scale.py``.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.state import open_state_db
from skybatch.engines.base import Engine, JobState
from skybatch.engines.testing import InstantEngine
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.settings import Settings

from .context import RunEnd, RunOptions, RunSummary, run_workdir
from .driver import SetUp
from .models import JobRow, QuantumRunRow, RunRow, RunState
from .pool import Bookkeeping, InlineExecutor
from .scheduler import create_jobs
from .states import INITIAL, change_run_state

__all__ = ["IndependentJobs", "SyntheticBookkeeping", "WorkflowMaker", "instant_engine"]

#: The state database's sessions of this process, by URL.
_SESSIONS: dict[str, sessionmaker[Session]] = {}

#: ``maker(options)`` gives the workflow of run ``options.output_run`` (picklable, for
#: bookkeeping in a process of its own: a module-level class or function).
WorkflowMaker = Callable[[RunOptions], Workflow]


@dataclass(frozen=True)
class IndependentJobs:
    """Workflows of ``n_jobs`` jobs of task ``label`` that depend on nothing (each
    ready as soon as its run is set up)."""

    n_jobs: int
    label: str = "task"

    def __call__(self, options: RunOptions) -> Workflow:
        assert options.output_run is not None
        jobs = [
            JobNode(
                name=f"{self.label}-{i}",
                label=self.label,
                quanta=[f"q{i}"],
                task_labels=[self.label],
                data_ids=[{}],
            )
            for i in range(self.n_jobs)
        ]
        return Workflow.of_jobs(options.output_run, jobs)


def instant_engine(name: str, settings: dict[str, Any]) -> Engine:
    """An instant engine standing in for engine ``name``: as many parallel jobs as
    its settings' ``max_workers`` (the local engine's), else 1,000."""
    return InstantEngine(max_parallel_jobs=int(settings.get("max_workers") or 1000))


@dataclass
class SyntheticBookkeeping(Bookkeeping):
    """See the module. ``process``: set-ups and finishes run in a spawned process, as
    the real ones (:class:`~skybatch.run.pool.DriverBookkeeping`), so the pool's loop
    goes on meanwhile; otherwise in the loop, as it hands them over."""

    workflow: WorkflowMaker
    #: CPU seconds recorded per executed quantum.
    cpu_s: float = 1.5
    process: bool = False
    #: Runs set up and finished (their names), in order (in the process that ran them).
    set_up_runs: list[str] = field(default_factory=list)
    finished_runs: list[str] = field(default_factory=list)

    def executor(self) -> Executor:
        if not self.process:
            return InlineExecutor()
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    def _db(self, settings: Settings) -> sessionmaker[Session]:
        # Once per process: in a bookkeeping process this object is a new copy for
        # every set-up and finish (it is pickled with each).
        url = settings.database_url()
        if url not in _SESSIONS:
            _SESSIONS[url] = open_state_db(settings)
        return _SESSIONS[url]

    def set_up(self, settings: Settings, options: RunOptions) -> SetUp:
        run = options.output_run
        assert run is not None, "a pooled run is named by its caller"
        workflow = self.workflow(options)
        workdir = run_workdir(settings, run)
        workdir.mkdir(parents=True, exist_ok=True)
        workflow.save(workdir / "workflow.json")
        sessions = self._db(settings)
        with sessions.begin() as session:
            row = RunRow(
                name=run,
                repo=str(options.repo),
                pipeline=options.pipeline,
                input_collections=options.inputs,
                data_query=options.query,
                engine=options.engine,
                workdir=str(workdir),
                state=INITIAL.value,
                options=options.to_json(),
                summary={},
            )
            session.add(row)
            change_run_state(row, RunState.RUNNING)
            row.summary = {
                "quanta_per_task": workflow.quanta_per_task,
                "expansion_s": workflow.expansion_s,
            }
            session.flush()
            run_id = row.id
        create_jobs(sessions, run_id, workflow)
        self.set_up_runs.append(run)
        return SetUp(run, run_id, workdir, {})

    def finish(self, settings: Settings, end: RunEnd) -> RunSummary:
        run, counts, elapsed_s = end.run, end.counts, end.elapsed_s
        if set(counts) <= {JobState.SUCCEEDED.value}:
            state = RunState.SUCCEEDED
        elif JobState.CANCELLED.value in counts:
            state = RunState.CANCELLED
        else:
            state = RunState.FAILED
        with self._db(settings).begin() as session:
            live = session.scalar(select(RunRow).where(RunRow.name == run))
            assert live is not None
            jobs = session.execute(
                select(JobRow.id, JobRow.label, JobRow.attempts, JobRow.state).where(
                    JobRow.run_id == live.id, JobRow.attempts > 0
                )
            ).all()
            quanta = []
            for job in jobs:
                quantum_id = str(uuid.uuid4())
                for attempt in range(1, job.attempts + 1):
                    # The newest attempt of a succeeded job succeeded.
                    ok = job.state == JobState.SUCCEEDED.value and attempt == job.attempts
                    quanta.append(
                        {
                            "run_id": live.id,
                            "job_id": job.id,
                            "attempt": attempt,
                            "quantum_id": quantum_id,
                            "task_label": job.label,
                            "data_id": {},
                            "status": "succeeded" if ok else "failed",
                            "cpu_s": self.cpu_s,
                            "max_rss_mb": 512.0 + (job.id % 512),
                            "error": None if ok else "RuntimeError: synthetic failure",
                        }
                    )
            if quanta:
                session.execute(insert(QuantumRunRow), quanta)
            change_run_state(live, state)
            n_quanta = sum(live.summary.get("quanta_per_task", {}).values())
            live.summary = {
                **live.summary,
                "jobs": counts,
                "wall_s": elapsed_s,
                "phases_s": {k: round(v, 3) for k, v in end.phases.items()},
            }
        self.finished_runs.append(run)
        return RunSummary(
            run=run,
            state=state.value,
            workdir=end.workdir,
            quanta=n_quanta,
            jobs=counts,
            expansion_s=0.0,
            wall_s=elapsed_s,
        )
