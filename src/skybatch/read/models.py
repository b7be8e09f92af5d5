"""Read models: what operators read about campaigns, runs, jobs and files (seed steps
3, 11-13 as seen from outside).

These pydantic models are the one shape of every read: the repository functions of
:mod:`skybatch.read` return them, the CLI's ``--json`` prints
``model_dump(mode="json")`` of them and the text output is drawn from them, and the
REST service returns the same JSON. Times are timezone-aware UTC; sizes are in bytes,
memory in MB, CPU in hours, as the field names say.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from skybatch.campaign.selection import StepSelection

__all__ = [
    "Activity",
    "CampaignEvent",
    "CampaignInfo",
    "CampaignReport",
    "CampaignStatus",
    "CampaignSummary",
    "CleanupSummary",
    "Endpoint",
    "EndpointList",
    "EndpointUsage",
    "FailedJob",
    "FailureSignature",
    "FileEntry",
    "FileLocation",
    "FileLocations",
    "FileProvenance",
    "Group",
    "GroupReport",
    "Job",
    "ReadModel",
    "Replica",
    "ReplicaCount",
    "RunReport",
    "RunSummary",
    "RunTaskCounts",
    "StepReport",
    "StepStatus",
    "TaskCounts",
    "UsageRow",
    "jsonable",
    "to_json",
]

#: Count per state (``{"succeeded": 3, "failed": 1}``).
StateCounts = dict[str, int]


class ReadModel(BaseModel):
    """Base of the read models: immutable, and no field a caller did not define."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def jsonable(data: ReadModel | Sequence[ReadModel]) -> Any:
    """``model_dump(mode="json")`` of a read model or of each of a list of them: what
    ``--json`` prints and the service returns."""
    if isinstance(data, ReadModel):
        return data.model_dump(mode="json")
    return [item.model_dump(mode="json") for item in data]


def to_json(data: ReadModel | Sequence[ReadModel]) -> str:
    """:func:`jsonable` as indented JSON text."""
    return json.dumps(jsonable(data), indent=2)


# -- campaigns -----------------------------------------------------------------------------
class CampaignSummary(ReadModel):
    """A campaign in the campaign list."""

    id: int
    name: str
    state: str
    priority: int
    groups: StateCounts = Field(description="the campaign's groups per state")
    created: datetime
    finished: datetime | None
    message: str | None


class CleanupSummary(ReadModel):
    """What the end-of-campaign cleanup freed (``None``: that target was not cleaned)."""

    targets: list[str] = Field(description="what policies.cleanup_at_end listed")
    site: str | None = Field(default=None, description="the site caches cleaned")
    unpinned: int | None = None
    evicted: int | None = None
    evicted_bytes: int | None = None
    kept_shared: int | None = Field(default=None, description="kept for other campaigns")
    kept_last_copy: int | None = Field(default=None, description="kept as the only copy")
    workdirs_removed: int | None = None
    workdir_bytes: int | None = None
    intermediates_removed: int | None = Field(
        default=None, description="leftover intermediate datasets removed"
    )


class CampaignInfo(ReadModel):
    """What status and report say of the campaign itself."""

    id: int
    name: str
    state: str
    priority: int
    source: str = Field(description="the campaign file as submitted")
    created: datetime
    started: datetime | None
    finished: datetime | None
    message: str | None
    cleanup: CleanupSummary | None = Field(
        description="what the end-of-campaign cleanup freed (None: not cleaned up yet)"
    )
    provenance: list[str] = Field(description="archived submission files (backbone paths)")


class StepStatus(ReadModel):
    """A step in the campaign status."""

    name: str
    state: str
    priority: int
    groups: StateCounts
    jobs: StateCounts
    overrides: dict[str, Any] = Field(description="operator overrides from `campaign retry`")
    selection: StepSelection | None = Field(
        description="what the step's select kept and dropped (None: no select)"
    )
    message: str | None


class CampaignStatus(CampaignInfo):
    """``skybatch campaign status``: the campaign and per step its groups and jobs."""

    steps: list[StepStatus]


class Group(ReadModel):
    """A group of a campaign step (a data partition run as one skybatch run)."""

    step: str
    name: str
    state: str
    run: str = Field(description="the group's run, its Butler output RUN collection")
    query: str
    attempts: int = Field(description="how often the manager started or resumed its run")
    created: datetime
    started: datetime | None
    finished: datetime | None
    message: str | None


class TaskCounts(ReadModel):
    """Quanta of a task (or a sum of tasks): the newest attempt of each quantum decides
    whether it succeeded or failed; CPU time of every attempt; peak memory (None: not
    measured)."""

    expected: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    cpu_hours: float = 0.0
    peak_memory_mb: float | None = None


class GroupReport(ReadModel):
    """A group in the campaign report; ``tasks`` only for groups that did not succeed
    (a succeeded group's counts are in its step's)."""

    name: str
    state: str
    run: str
    query: str
    attempts: int
    message: str | None
    total: TaskCounts
    tasks: dict[str, TaskCounts] | None


class FailedJob(ReadModel):
    """A held or failed job (or one that recorded an error), with what to do."""

    step: str | None = Field(description="the job's campaign step (None outside campaigns)")
    group: str | None = Field(description="the job's campaign group (None outside campaigns)")
    run: str
    job: str
    label: str
    state: str
    attempts: int
    exit_code: int | None
    failure: str | None = Field(description="failure kind (oom, disk_full, timeout, ...)")
    error: str | None = Field(description="first line of the error")
    advice: str | None = Field(description="what the operator does about this failure kind")
    memory_mb: int


class FailureSignature(ReadModel):
    """Held and failed jobs of one failure kind and error signature: one cause, one
    operator action (see :mod:`skybatch.read.failures`)."""

    failure: str | None = Field(description="failure kind (oom, disk_full, timeout, ...)")
    signature: str = Field(description="first error line with ids, paths and numbers masked")
    count: int
    tasks: list[str] = Field(description="task labels of the jobs")
    steps: list[str] = Field(description="campaign steps of the jobs")
    advice: str | None
    examples: list[FailedJob] = Field(description="the first few jobs")


class StepReport(ReadModel):
    """A step in the campaign report."""

    name: str
    state: str
    message: str | None
    selection: StepSelection | None
    group_states: StateCounts
    groups: list[GroupReport]
    tasks: dict[str, TaskCounts]
    total: TaskCounts


class CampaignReport(CampaignInfo):
    """``skybatch campaign report``: quanta, CPU and memory per step, group and task, and
    the failed jobs (at most ``MAX_FAILURES``; ``failures_total`` counts all)."""

    steps: list[StepReport]
    tasks: dict[str, TaskCounts]
    total: TaskCounts
    failures: list[FailedJob]
    failures_total: int


class CampaignEvent(ReadModel):
    """One state change of a campaign, step or group."""

    time: datetime
    kind: str = Field(description="campaign, step or group")
    what: str = Field(description="the campaign's name, STEP or STEP/GROUP")
    from_state: str | None = Field(description="None when the object was created")
    to_state: str
    actor: str
    action: str | None = Field(description="operator action, None for the manager's")
    reason: str | None


# -- runs and jobs ---------------------------------------------------------------------------
class RunSummary(ReadModel):
    """A run in the run list."""

    run: str
    state: str
    pipeline: str
    created: datetime
    finished: datetime | None


class RunTaskCounts(ReadModel):
    """Quanta of a task in a run; blocked quanta belong to jobs that never ran because
    a job upstream of them is held (counted once the run stopped)."""

    expected: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    blocked: int = 0


class RunReport(ReadModel):
    """``skybatch report RUN``: per task quanta, jobs per state, the failed jobs."""

    run: str
    state: str
    pipeline: str
    repo: str
    tasks: dict[str, RunTaskCounts]
    jobs: StateCounts
    failures: list[FailedJob]
    summary: dict[str, Any] = Field(description="what the run recorded when it finished")
    warnings: list[str]
    message: str | None


class Job(ReadModel):
    """A job of a run (a cluster of quanta) as it stands."""

    run: str
    name: str
    label: str
    state: str
    attempts: int
    attempt_limit: int | None
    n_quanta: int
    memory_mb: int
    cores: int
    walltime_s: int
    engine_id: str | None
    exit_code: int | None
    failure: str | None
    error: str | None = Field(description="first line of the error")
    updated: datetime


# -- backbone ----------------------------------------------------------------------------------
class ReplicaCount(ReadModel):
    files: int
    bytes: int


class Endpoint(ReadModel):
    """A backbone endpoint with the replicas it holds per replica state."""

    name: str
    kind: str
    root: str
    settings: dict[str, Any]
    created_at: datetime
    replicas: dict[str, ReplicaCount]


class UsageRow(ReadModel):
    """Files and bytes of one endpoint, replica state and (with ``by``) run or type."""

    endpoint: str
    key: str | None = Field(description="the run or dataset type (None when by endpoint)")
    state: str
    files: int
    bytes: int


class EndpointUsage(ReadModel):
    """``skybatch backbone usage``: files and bytes per endpoint and replica state."""

    schema_version: Literal[1] = 1
    by: Literal["endpoint", "run", "dataset_type"]
    rows: list[UsageRow]


class EndpointList(ReadModel):
    """``skybatch backbone endpoint list``."""

    schema_version: Literal[1] = 1
    endpoints: list[Endpoint]


class FileEntry(ReadModel):
    """A file of the backbone catalog."""

    id: int
    path: str
    size_bytes: int
    md5: str
    dataset_id: str | None
    dataset_type: str | None
    data_id: dict[str, Any] | None
    run: str | None
    producer: str | None
    created_at: datetime


class Replica(ReadModel):
    """A copy of a file on an endpoint."""

    endpoint: str
    state: str = Field(description="online, nearline, staging, missing or corrupt")
    on_tape: bool
    pinned_until: datetime | None
    last_access: datetime
    verified_at: datetime | None


class FileLocation(FileEntry):
    """A catalog file with every replica (by endpoint name)."""

    replicas: list[Replica]


class FileLocations(ReadModel):
    """``skybatch backbone locate``."""

    schema_version: Literal[1] = 1
    files: list[FileLocation]


class Activity(ReadModel):
    """What produced or used files: a quantum, an ingest, an export."""

    id: int
    kind: str
    name: str
    info: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


class FileProvenance(ReadModel):
    """Where a file came from and what used it."""

    file: FileEntry
    generated_by: list[Activity] = Field(description="activities that wrote the file")
    inputs: list[FileEntry] = Field(
        description="files those activities read (inputs and calibrations)"
    )
    used_by: list[Activity] = Field(description="activities that read the file")
    derived_from: list[FileEntry] = Field(description="files it was made from directly")
