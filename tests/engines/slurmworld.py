"""Helpers for tests against a real Slurm: skip with the reason when none answers.

``scripts/slurm/up.sh`` starts a single-node Slurm on this machine (``.ci/run`` runs
it before the tests); ``SKYBATCH_TEST_SLURM=require`` turns the skip into a failure,
so CI cannot pass by silently skipping the Slurm tests.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.state import open_state_db
from skybatch.engines.slurm.commands import SlurmCommands
from skybatch.graph.workflow import JobNode, ResourceRequest, Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobRow, RunRow
from skybatch.run.scheduler import SchedulerHooks
from skybatch.settings import load_settings


@functools.cache
def slurm_answers() -> str | None:
    """None if a Slurm controller answers, else why not."""
    if not SlurmCommands.installed():
        return "Slurm's commands are not installed (scripts/slurm/up.sh installs and starts one)"
    if not SlurmCommands().ping():
        return "no Slurm controller answers `scontrol ping` (start one: scripts/slurm/up.sh)"
    return None


def require_slurm() -> None:
    reason = slurm_answers()
    if reason is None:
        return
    if os.environ.get("SKYBATCH_TEST_SLURM") == "require":
        pytest.fail(f"SKYBATCH_TEST_SLURM=require but {reason}")
    pytest.skip(reason)


@dataclass
class SchedulerSetup:
    """A run row, a workflow of behave jobs and the scheduler's hooks, in tmp_path."""

    sessions: sessionmaker[Session]
    run_id: int
    workflow: Workflow
    hooks: SchedulerHooks


def scheduler_setup(
    tmp_path: Path, jobs: dict[str, list[str]] | None = None, memory_mb: int = 300
) -> SchedulerSetup:
    """Create (with ``jobs``: name -> dependencies) or reopen (without) the test run."""
    sessions = open_state_db(load_settings(home=tmp_path / "home"))
    saved = tmp_path / "workflow.json"
    if jobs is not None:
        nodes = [
            JobNode(
                name=name,
                label=name.split("-")[0],
                quanta=[name],
                task_labels=[name.split("-")[0]],
                data_ids=[{}],
                resources=ResourceRequest(memory_mb=memory_mb, walltime_s=120),
                depends_on=deps,
            )
            for name, deps in jobs.items()
        ]
        workflow = Workflow.of_jobs("test/run", nodes, pipeline="p.yaml")
        workflow.save(saved)
        with sessions.begin() as session:
            row = RunRow(name="test/run", repo="/nowhere", pipeline="p", workdir=str(tmp_path))
            session.add(row)
    workflow = Workflow.load(saved)
    with sessions() as session:
        run_id = session.scalars(select(RunRow.id).where(RunRow.name == "test/run")).one()

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        job_dir = tmp_path / "jobs" / job.name / f"attempt-{row.attempts}"
        job_dir.mkdir(parents=True, exist_ok=True)
        return JobSpec(
            run="test/run",
            job=job.name,
            attempt=row.attempts,
            qgraph="/nowhere/graph.qg",
            quantum_ids=job.quanta,
            butler_config="/nowhere/butler.yaml",
            workdir=str(job_dir / "work"),
            report_path=str(job_dir / "report.json"),
            memory_mb=row.memory_mb,
            walltime_s=row.walltime_s,
        )

    return SchedulerSetup(sessions, run_id, workflow, SchedulerHooks(make_spec))


if __name__ == "__main__":  # a driver to kill: runs the saved test run on Slurm
    from skybatch.engines.slurm import SlurmEngine, SlurmSettings
    from skybatch.engines.testing import BEHAVE_RUNNER
    from skybatch.run.scheduler import Scheduler

    directory = Path(sys.argv[1])
    setup = scheduler_setup(directory)
    settings = SlurmSettings(
        runner=BEHAVE_RUNNER, script_dir=directory / "slurm", poll_interval_s=0.2, max_jobs=4
    )
    engine = SlurmEngine(settings)
    scheduler = Scheduler(setup.sessions, setup.run_id, setup.workflow, engine, setup.hooks)
    scheduler.create_jobs()
    scheduler.run()
