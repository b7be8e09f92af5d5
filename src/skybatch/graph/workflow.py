"""The WMS-neutral workflow: jobs (clusters of quanta) and their dependencies, as JSON.

A workflow is plain data (pydantic models), saved as versioned JSON beside the quantum
graph file. Engines never see it; the scheduler turns ready jobs into
:class:`skybatch.job.spec.JobSpec` files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from skybatch import limits
from skybatch.job.spec import FileSpec

__all__ = ["SCHEMA_VERSION", "ClusterRule", "JobNode", "ResourceRequest", "Workflow"]

SCHEMA_VERSION = 1


class ResourceRequest(BaseModel):
    """Resources a job asks for (per task; a cluster takes the maximum of its tasks)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_mb: int = Field(2048, gt=0, le=limits.MAX_DATABASE_INTEGER)
    cores: int = Field(1, gt=0, le=limits.MAX_DATABASE_INTEGER)
    walltime_s: int = Field(3600, gt=0, le=limits.MAX_DATABASE_INTEGER)


class ClusterRule(BaseModel):
    """Group the quanta of ``tasks`` that share values of ``dimensions`` into one job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    tasks: list[str]
    dimensions: list[str] = Field(default_factory=list)


class JobNode(BaseModel):
    """One job: quanta run in order in one process, with their files and resources."""

    name: str
    label: str  # task label, or the cluster rule name
    quanta: list[str]  # quantum ids, in execution order
    task_labels: list[str]
    data_ids: list[dict[str, Any]]
    inputs: list[FileSpec] = Field(default_factory=list)  # produced outside this job
    outputs: list[FileSpec] = Field(default_factory=list)  # predicted, unique paths
    resources: ResourceRequest = Field(default_factory=ResourceRequest)
    depends_on: list[str] = Field(default_factory=list)


class Workflow(BaseModel):
    """A group's expanded pipeline as jobs; ``skybatch workflow show`` prints it."""

    schema_version: int = SCHEMA_VERSION
    run: str
    repo: str
    butler_config: str
    pipeline: str
    input_collections: list[str]
    data_query: str
    qgraph: str  # path of the .qg file
    created: datetime
    quanta_per_task: dict[str, int]
    expansion_s: float
    jobs: list[JobNode]

    @classmethod
    def of_jobs(cls, run: str, jobs: list[JobNode], *, pipeline: str = "") -> Workflow:
        """A workflow of jobs made by hand, not expanded from a quantum graph.

        It names no repository or graph file (``/nowhere``): only a scheduler and an
        engine whose jobs do not run the job wrapper can execute it, which is what
        engine and scheduler tests and the scale benchmarks drive.
        """
        quanta: dict[str, int] = {}
        for job in jobs:
            quanta[job.label] = quanta.get(job.label, 0) + len(job.quanta)
        return cls(
            run=run,
            repo="/nowhere",
            butler_config="/nowhere/butler.yaml",
            pipeline=pipeline,
            input_collections=[],
            data_query="",
            qgraph="/nowhere/graph.qg",
            created=datetime.now(UTC),
            quanta_per_task=quanta,
            expansion_s=0.0,
            jobs=jobs,
        )

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: Path) -> Workflow:
        from skybatch.errors import InputError

        try:
            workflow = cls.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot read workflow {path}: {exc}", where=str(path), hint="re-run expansion"
            ) from None
        if workflow.schema_version != SCHEMA_VERSION:
            raise InputError(
                f"workflow {path} has schema version {workflow.schema_version}, "
                f"this skybatch reads {SCHEMA_VERSION}",
                where=str(path),
            )
        return workflow
