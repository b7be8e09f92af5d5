"""What a job is told (:class:`JobSpec`) and what it reports (:class:`JobReport`).

Both are versioned JSON files: the scheduler writes the spec, the engine hands its
path to ``python -m skybatch.job`` (or runs :func:`skybatch.job.main.run_job` in a
warm worker), and the job writes its report next to it. No pickle crosses a process.

Paths in the catalog and in ``inputs``/``outputs`` are *logical*: relative to the
Butler datastore root, identical on the archive and on site caches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "FileSpec",
    "JobReport",
    "JobSpec",
    "OutputFileReport",
    "QuantumReport",
    "RuntimeStats",
]

SCHEMA_VERSION = 1


class FileSpec(BaseModel):
    """One dataset file a job reads or writes."""

    model_config = ConfigDict(frozen=True)

    dataset_id: str
    dataset_type: str
    data_id: dict[str, Any] = Field(default_factory=dict)
    path: str  # logical path (datastore-relative)
    file_id: int | None = None  # backbone catalog id, when registered
    size_bytes: int | None = None
    md5: str | None = None


class JobSpec(BaseModel):
    """Everything a job needs; written by the scheduler, read by the job wrapper."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run: str  # the Butler output run (unique per submission)
    job: str  # job name, unique in the workflow
    attempt: int = 1
    qgraph: str  # path of the predicted quantum graph file (.qg)
    quantum_ids: list[str]  # the quanta of this job, in execution order
    butler_config: str  # central repo's butler.yaml: datastore/formatter config for the QBB
    workdir: str  # job scratch directory (created by the job)
    report_path: str  # where the JobReport JSON goes
    inputs: list[FileSpec] = Field(default_factory=list)
    outputs: list[FileSpec] = Field(default_factory=list)  # predicted
    # Staging
    site_endpoint: str | None = None  # backbone endpoint name of the site cache
    site_root: str | None = None  # its root on this host (shared filesystem)
    archive_endpoint: str = "archive"
    archive_root: str = ""  # archive root (= datastore root), for fetch/push
    stage_in: Literal["symlink", "copy", "archive"] = "symlink"
    stage_out: Literal["site", "archive"] = "site"
    db_url: str | None = None  # state/catalog database for stage-out registration
    # Resources and policy
    memory_mb: int = 2048
    cores: int = 1
    walltime_s: int = 3600
    junk_tarball: bool = False
    env_allow_list: list[str] = Field(
        default_factory=lambda: ["PATH", "HOSTNAME", "SLURM_JOB_ID", "OMP_NUM_THREADS"]
    )
    engine_job_id: str | None = None
    #: The job's id in the state database (``db_url``): stage-out writes and registers
    #: only while ``attempt`` is that job's current attempt (see
    #: :func:`skybatch.job.stageout.check_current_attempt`). None: no such check.
    job_id: int | None = None


class RuntimeStats(BaseModel):
    start: datetime
    end: datetime
    wall_s: float
    cpu_s: float
    max_rss_mb: float


class QuantumReport(BaseModel):
    quantum_id: str
    task_label: str
    data_id: dict[str, Any]
    status: Literal["succeeded", "failed", "skipped"]
    stats: RuntimeStats | None = None
    error: str | None = None  # first line of the error, with its root cause
    failure: str | None = None  # a FailureKind the error proves (e.g. "disk_full")
    traceback: str | None = None


class OutputFileReport(BaseModel):
    dataset_id: str
    dataset_type: str
    storage_class: str
    data_id: dict[str, Any]
    run: str
    path: str  # logical path
    size_bytes: int
    md5: str
    metadata: dict[str, Any] = Field(default_factory=dict)  # science metadata
    generated_by: str  # quantum id
    used: list[str] = Field(default_factory=list)  # input dataset ids of that quantum
    file_id: int | None = None  # backbone id after stage-out


class JobReport(BaseModel):
    """Everything a job learned; ingested into the state database after the run."""

    schema_version: int = SCHEMA_VERSION
    run: str
    job: str
    attempt: int
    status: Literal["succeeded", "failed"]
    exit_code: int
    error: str | None = None  # first error line, with its root cause
    failure: str | None = None  # a FailureKind the error proves (e.g. "disk_full")
    engine_job_id: str | None = None
    host: str
    platform: str
    python: str
    packages: dict[str, str]
    environment: dict[str, str]
    stats: RuntimeStats
    quanta: list[QuantumReport]
    outputs: list[OutputFileReport]
    inputs_staged: int = 0
    #: Inputs whose site-cache replica was corrupt: read from the archive instead.
    inputs_replaced: list[str] = Field(default_factory=list)
    stage_in_mode: str = ""
    junk_tarball: str | None = None
    junk_files: list[str] = Field(default_factory=list)
    log_path: str | None = None
    #: Wall seconds per phase of the job wrapper (``skybatch.job.stats.PHASES``):
    #: where a job's time goes. Empty in reports of versions before it was recorded.
    phases_s: dict[str, float] = Field(default_factory=dict)
