"""Reads the dashboard draws (issue 14, item 4): a campaign's step graph, its progress
over time, the CPU time and peak memory of each task's quanta, and the storage of the
Data Backbone (pinned and cached bytes, files waiting on a tape recall).

Each function takes a session and returns read models, as the rest of
:mod:`skybatch.read`; the service draws them as SVG (:mod:`skybatch.service.plots`).
Whatever the campaign's size, each is a fixed number of queries: the progress is
binned and the distributions reduced to quantiles here, not in the browser.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from skybatch.backbone.models import (
    EndpointRow,
    FileRow,
    ReplicaRow,
    ReplicaState,
    RequestState,
    StageRequest,
    StageRequestFile,
)
from skybatch.campaign.actions import get_campaign
from skybatch.campaign.models import CampaignGroupRow, CampaignStepRow
from skybatch.db.models import utcnow
from skybatch.run.models import QuantumRunRow, RunRow

from .models import ReadModel

__all__ = [
    "BackboneStorage",
    "Distribution",
    "EndpointStorage",
    "Progress",
    "StepNode",
    "TaskResources",
    "backbone_storage",
    "campaign_progress",
    "step_graph",
    "task_resources",
]

#: Points of a progress curve at most (the quanta's end times are binned to these).
PROGRESS_BINS = 120


class StepNode(ReadModel):
    """A step of the campaign graph: its state and the steps it waits for."""

    name: str
    state: str
    depends_on: list[str] = Field(description="steps it waits for (depends_on and select)")
    layer: int = Field(description="0 for a step that waits for none, else 1 + its deepest")


def step_graph(session: Session, campaign_id: int) -> list[StepNode]:
    """The campaign's steps in their order with their dependencies from the campaign's
    configuration (``depends_on``, and ``select.from_step`` of a dynamic step).

    Raises:
        NotFoundError: no campaign has this id.
    """
    row = get_campaign(session, campaign_id)
    steps = list(
        session.scalars(
            select(CampaignStepRow)
            .where(CampaignStepRow.campaign_id == campaign_id)
            .order_by(CampaignStepRow.position)
        )
    )
    names = {s.name for s in steps}
    configured = {
        str(s.get("name")): s for s in (row.config or {}).get("steps", []) if isinstance(s, dict)
    }
    layers: dict[str, int] = {}
    nodes = []
    for step in steps:
        config = configured.get(step.name, {})
        waits = [str(d) for d in config.get("depends_on") or []]
        chosen = config.get("select")
        if isinstance(chosen, dict) and chosen.get("from_step"):
            waits.append(str(chosen["from_step"]))
        waits = [d for d in dict.fromkeys(waits) if d in names and d != step.name]
        layers[step.name] = 1 + max((layers.get(d, 0) for d in waits), default=-1)
        nodes.append(
            StepNode(name=step.name, state=step.state, depends_on=waits, layer=layers[step.name])
        )
    return nodes


class Progress(ReadModel):
    """Quanta ended over time: cumulative counts at the end of each time bin."""

    times: list[datetime]
    succeeded: list[int]
    failed: list[int]


def _campaign_runs(campaign_id: int) -> Select[tuple[int]]:
    return (
        select(RunRow.id)
        .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
        .where(CampaignGroupRow.campaign_id == campaign_id)
    )


def campaign_progress(session: Session, campaign_id: int, bins: int = PROGRESS_BINS) -> Progress:
    """Succeeded and failed quantum attempts of the campaign's runs, cumulative over
    time, in at most ``bins`` points.

    Raises:
        NotFoundError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    q = QuantumRunRow
    rows = session.execute(
        select(q.end, q.status)
        .where(q.run_id.in_(_campaign_runs(campaign_id)), q.end.is_not(None))
        .order_by(q.end)
    ).all()
    if not rows:
        return Progress(times=[], succeeded=[], failed=[])
    first, last = rows[0][0], rows[-1][0]
    span = (last - first).total_seconds()
    n = max(1, min(bins, len(rows)))
    times, succeeded, failed = [], [], []
    done = bad = 0
    index = 0
    for b in range(1, n + 1):
        edge = first + (last - first) * (b / n) if span > 0 else last
        while index < len(rows) and (rows[index][0] <= edge or b == n):
            if rows[index][1] == "succeeded":
                done += 1
            else:
                bad += 1
            index += 1
        times.append(edge)
        succeeded.append(done)
        failed.append(bad)
    return Progress(times=times, succeeded=succeeded, failed=failed)


class Distribution(ReadModel):
    """Quantiles of a sample (None when it is empty)."""

    count: int
    min: float | None = None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None
    max: float | None = None


def _distribution(values: list[float]) -> Distribution:
    if not values:
        return Distribution(count=0)
    values.sort()
    if len(values) == 1:
        q1 = median = q3 = values[0]
    else:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return Distribution(
        count=len(values), min=values[0], q1=q1, median=median, q3=q3, max=values[-1]
    )


class TaskResources(ReadModel):
    """The CPU time (s) and peak memory (MB) of a task's quantum attempts that measured
    them."""

    task: str
    cpu_s: Distribution
    peak_memory_mb: Distribution


def task_resources(session: Session, campaign_id: int) -> list[TaskResources]:
    """Per task label (sorted), the distribution of CPU time and peak memory over the
    quantum attempts of the campaign's runs.

    Raises:
        NotFoundError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    q = QuantumRunRow
    cpu: dict[str, list[float]] = {}
    memory: dict[str, list[float]] = {}
    for label, cpu_s, rss in session.execute(
        select(q.task_label, q.cpu_s, q.max_rss_mb).where(q.run_id.in_(_campaign_runs(campaign_id)))
    ):
        cpu.setdefault(label, [])
        memory.setdefault(label, [])
        if cpu_s is not None:
            cpu[label].append(float(cpu_s))
        if rss is not None:
            memory[label].append(float(rss))
    return [
        TaskResources(
            task=label, cpu_s=_distribution(cpu[label]), peak_memory_mb=_distribution(memory[label])
        )
        for label in sorted(cpu)
    ]


class EndpointStorage(ReadModel):
    """What an endpoint holds and what waits for it."""

    name: str
    kind: str
    online_files: int
    online_bytes: int
    cached_bytes: int = Field(description="online bytes of a site cache (0 for an archive)")
    pinned_files: int = Field(description="replicas pinned now")
    pinned_bytes: int
    nearline_files: int = Field(description="replicas on tape only")
    nearline_bytes: int
    staging_files: int = Field(description="copies in flight to it")
    recall_waiting_files: int = Field(description="files of unfinished tape recalls to it")
    recall_waiting_bytes: int


class BackboneStorage(ReadModel):
    """The Data Backbone's endpoints and their totals."""

    endpoints: list[EndpointStorage]
    pinned_bytes: int
    cached_bytes: int
    recall_waiting_files: int


def backbone_storage(session: Session) -> BackboneStorage:
    """Per endpoint: online, pinned, nearline and staging replicas and the files of
    unfinished recalls to it (two aggregate queries)."""
    now = utcnow()
    r, f = ReplicaRow, FileRow

    def count_if(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    def bytes_if(condition: Any) -> Any:
        return func.sum(case((condition, f.size_bytes), else_=0))

    online = r.state == ReplicaState.ONLINE.value
    pinned = r.pinned_until.is_not(None) & (r.pinned_until > now)
    nearline = r.state == ReplicaState.NEARLINE.value
    held: dict[int, tuple[int, ...]] = {}
    for row in session.execute(
        select(
            r.endpoint_id,
            count_if(online),
            bytes_if(online),
            count_if(pinned),
            bytes_if(pinned),
            count_if(nearline),
            bytes_if(nearline),
            count_if(r.state == ReplicaState.STAGING.value),
        )
        .join(f, f.id == r.file_id)
        .group_by(r.endpoint_id)
    ):
        held[row[0]] = tuple(int(v or 0) for v in row[1:])
    waiting: dict[int, tuple[int, int]] = {}
    open_states = [RequestState.QUEUED.value, RequestState.RUNNING.value]
    for endpoint_id, files, size in session.execute(
        select(StageRequest.target_endpoint_id, func.count(f.id), func.sum(f.size_bytes))
        .join(StageRequestFile, StageRequestFile.request_id == StageRequest.id)
        .join(f, f.id == StageRequestFile.file_id)
        .where(
            StageRequest.kind == "recall",
            StageRequest.state.in_(open_states),
            StageRequestFile.state.in_(open_states),
        )
        .group_by(StageRequest.target_endpoint_id)
    ):
        waiting[endpoint_id] = (int(files or 0), int(size or 0))
    endpoints = []
    for e in session.scalars(select(EndpointRow).order_by(EndpointRow.name)):
        on, on_b, pin, pin_b, near, near_b, staging = held.get(e.id, (0,) * 7)
        wait, wait_b = waiting.get(e.id, (0, 0))
        endpoints.append(
            EndpointStorage(
                name=e.name,
                kind=e.kind,
                online_files=on,
                online_bytes=on_b,
                cached_bytes=0 if e.kind == "archive" else on_b,
                pinned_files=pin,
                pinned_bytes=pin_b,
                nearline_files=near,
                nearline_bytes=near_b,
                staging_files=staging,
                recall_waiting_files=wait,
                recall_waiting_bytes=wait_b,
            )
        )
    return BackboneStorage(
        endpoints=endpoints,
        pinned_bytes=sum(e.pinned_bytes for e in endpoints),
        cached_bytes=sum(e.cached_bytes for e in endpoints),
        recall_waiting_files=sum(e.recall_waiting_files for e in endpoints),
    )
