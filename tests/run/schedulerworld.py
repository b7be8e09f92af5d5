"""The scheduler tests' world: a run row in a fresh state database, job nodes and the
specs a scheduler hands its engine (the engines' test runner reads only what it needs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.state import open_state_db
from skybatch.graph.workflow import JobNode, ResourceRequest
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobRow, RunRow
from skybatch.settings import load_settings

RUN = "test/run"


def new_run(tmp_path: Path) -> tuple[sessionmaker[Session], int]:
    """Sessions on a new home's state database under ``tmp_path`` and a run row's id."""
    sessions = open_state_db(load_settings(home=tmp_path / "home"))
    with sessions.begin() as session:
        row = RunRow(name=RUN, repo="/nowhere", pipeline="p", workdir=str(tmp_path))
        session.add(row)
        session.flush()
        return sessions, row.id


def job_spec(tmp_path: Path, job: JobNode, row: JobRow) -> JobSpec:
    """The spec of ``row``'s current attempt of ``job``, its directory made."""
    job_dir = tmp_path / job.name / f"attempt-{row.attempts}"
    job_dir.mkdir(parents=True, exist_ok=True)
    return JobSpec(
        run=RUN,
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


def job_node(
    name: str, deps: Sequence[str] = (), *, label: str | None = None, memory_mb: int = 300
) -> JobNode:
    """A one-quantum job; its label (the test runner's behaviour) is the name's prefix."""
    label = label or name.split("-")[0]
    return JobNode(
        name=name,
        label=label,
        quanta=[name],
        task_labels=[label],
        data_ids=[{}],
        resources=ResourceRequest(memory_mb=memory_mb, walltime_s=60),
        depends_on=list(deps),
    )
