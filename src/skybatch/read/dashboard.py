"""Reads the dashboard draws (issue 14, item 4): a campaign's step graph, its progress
over time, the CPU time and peak memory of each task's quanta, and the storage of the
Data Backbone (pinned and cached bytes, files waiting on a tape recall).

Each function takes a session and returns read models, as the rest of
:mod:`skybatch.read`; the service draws them as SVG (:mod:`skybatch.service.plots`).
Whatever the campaign's size, each is a fixed number of queries: the progress is
binned and the distributions reduced to quantiles here, not in the browser.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import Integer, Select, case, cast, func, select
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
from skybatch.run.models import JobRow, QuantumRunRow, RunRow

from .campaigns import list_campaigns
from .models import CampaignSummary, ReadModel

__all__ = [
    "RATE_WINDOW_S",
    "BackboneStorage",
    "CampaignCard",
    "Distribution",
    "EndpointStorage",
    "Progress",
    "StepNode",
    "TaskResources",
    "backbone_storage",
    "campaign_cards",
    "campaign_progress",
    "quanta_version",
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


def _epoch_s(session: Session, column: Any) -> Any:
    """SQL for the seconds since 1970 of a timestamp column."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(column) - 2440587.5) * 86400.0
    return func.extract("epoch", column)


def _bin(session: Session, value: Any, low: float, width: float, bins: int) -> Any:
    """SQL for the bin (0 to ``bins - 1``) of ``value`` in bins of ``width`` from ``low``."""
    scaled = (value - low) / width
    whole = (
        cast(scaled, Integer) if session.get_bind().dialect.name == "sqlite" else func.floor(scaled)
    )
    return case((whole >= bins, bins - 1), else_=whole)


def quanta_version(session: Session, campaign_id: int) -> tuple[int, int]:
    """The newest quantum run's id and the campaign's quantum runs: the figures of the
    campaign change only when this does (quantum runs are only added or deleted)."""
    q = QuantumRunRow
    newest = session.scalar(select(func.max(q.id)))
    count = session.scalar(
        select(func.count()).select_from(q).where(q.run_id.in_(_campaign_runs(campaign_id)))
    )
    return int(newest or 0), int(count or 0)


def campaign_progress(session: Session, campaign_id: int, bins: int = PROGRESS_BINS) -> Progress:
    """Succeeded and failed quantum attempts of the campaign's runs, cumulative over
    time, in ``bins`` equal time bins (counted by the database: two aggregate queries).

    Raises:
        NotFoundError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    q = QuantumRunRow
    ended = (q.run_id.in_(_campaign_runs(campaign_id)), q.end.is_not(None))
    seconds = _epoch_s(session, q.end)
    first, last, low, high = session.execute(
        select(func.min(q.end), func.max(q.end), func.min(seconds), func.max(seconds)).where(*ended)
    ).one()
    if first is None:
        return Progress(times=[], succeeded=[], failed=[])
    span = max(float(high) - float(low), 1e-6)
    width = span / bins
    which = _bin(session, seconds, float(low), width, bins).label("bin")
    counted = {
        int(b): (int(ok or 0), int(n))
        for b, ok, n in session.execute(
            select(which, func.sum(case((q.status == "succeeded", 1), else_=0)), func.count())
            .where(*ended)
            .group_by(which)
        )
    }
    times, succeeded, failed = [], [], []
    done = bad = 0
    for b in range(bins):
        ok, n = counted.get(b, (0, 0))
        done += ok
        bad += n - ok
        times.append(last if b == bins - 1 else first + timedelta(seconds=width * (b + 1)))
        succeeded.append(done)
        failed.append(bad)
    return Progress(times=times, succeeded=succeeded, failed=failed)


class Distribution(ReadModel):
    """A sample's count, minimum, quartiles and maximum (None when it is empty). The
    minimum, maximum and count are exact; the quartiles are read off a histogram of
    :data:`HISTOGRAM_BINS` bins over the range of every task (within a 500th of it:
    finer than the figure's pixels, whose axis spans the same range)."""

    count: int
    min: float | None = None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None
    max: float | None = None


#: Bins of the histograms the quartiles are read from.
HISTOGRAM_BINS = 500


def _quartiles(low: float, width: float, counts: dict[int, int], total: int) -> list[float]:
    """The quartiles of a histogram whose bin ``b`` spans ``low + b * width`` to the next,
    interpolated within the bin that holds each."""
    out = []
    for fraction in (0.25, 0.5, 0.75):
        wanted = fraction * total
        seen = 0
        for b in sorted(counts):
            n = counts[b]
            if seen + n >= wanted:
                out.append(low + width * (b + (wanted - seen) / n))
                break
            seen += n
        else:
            out.append(low + width * HISTOGRAM_BINS)
    return out


class TaskResources(ReadModel):
    """The CPU time (s) and peak memory (MB) of a task's quantum attempts that measured
    them."""

    task: str
    cpu_s: Distribution
    peak_memory_mb: Distribution


def task_resources(session: Session, campaign_id: int) -> list[TaskResources]:
    """Per task label (sorted), the distribution of CPU time and peak memory over the
    quantum attempts of the campaign's runs (counted by the database: one query for
    the ranges, one histogram query per measure).

    Raises:
        NotFoundError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    q = QuantumRunRow
    ours = q.run_id.in_(_campaign_runs(campaign_id))
    # the range of each measure over every task (one pass, no grouping) ...
    cpu_lo, cpu_hi, rss_lo, rss_hi = session.execute(
        select(
            func.min(q.cpu_s), func.max(q.cpu_s), func.min(q.max_rss_mb), func.max(q.max_rss_mb)
        ).where(ours)
    ).one()
    labels: set[str] = set()
    found: dict[str, dict[str, Distribution]] = {}
    for measure, column, low, high in (
        ("cpu", q.cpu_s, cpu_lo, cpu_hi),
        ("rss", q.max_rss_mb, rss_lo, rss_hi),
    ):
        # ... then per task a histogram over it, with each bin's exact extremes
        bins: dict[str, list[tuple[int, int, float, float]]] = {}
        if low is not None and high is not None:
            low, high = float(low), float(high)
            width = max(high - low, 1e-9) / HISTOGRAM_BINS
            which = _bin(session, column, low, width, HISTOGRAM_BINS).label("bin")
            for label, b, n, lo, hi in session.execute(
                select(q.task_label, which, func.count(), func.min(column), func.max(column))
                .where(ours, column.is_not(None))
                .group_by(q.task_label, which)
            ):
                bins.setdefault(label, []).append((int(b), int(n), float(lo), float(hi)))
        else:
            low, width = 0.0, 1.0
        labels.update(bins)
        for label, histogram in bins.items():
            n = sum(h[1] for h in histogram)
            lo, hi = min(h[2] for h in histogram), max(h[3] for h in histogram)
            q1, median, q3 = _quartiles(low, width, {h[0]: h[1] for h in histogram}, n)
            found.setdefault(label, {})[measure] = Distribution(
                count=n,
                min=lo,
                q1=min(max(q1, lo), hi),
                median=min(max(median, lo), hi),
                q3=min(max(q3, lo), hi),
                max=hi,
            )
    if not labels:  # tasks that measured nothing are still listed
        labels.update(
            session.scalars(select(q.task_label).where(ours).group_by(q.task_label)).all()
        )
    empty = Distribution(count=0)
    return [
        TaskResources(
            task=label,
            cpu_s=found.get(label, {}).get("cpu", empty),
            peak_memory_mb=found.get(label, {}).get("rss", empty),
        )
        for label in sorted(labels)
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


#: The window over which a campaign's quanta per second are counted.
RATE_WINDOW_S = 600.0


class CampaignCard(ReadModel):
    """A campaign as the overview shows it: its list entry, its jobs' quanta done of
    those known so far (steps not yet expanded have none), held and failed jobs, its
    rate and, while it runs, when the known quanta would be done at that rate."""

    campaign: CampaignSummary
    started: datetime | None
    quanta_expected: int = Field(description="quanta of the jobs created so far")
    quanta_done: int = Field(description="quanta of succeeded jobs")
    failed_jobs: int = Field(description="held or failed jobs")
    quanta_per_s: float = Field(
        description=f"quanta succeeded per second, last {RATE_WINDOW_S:g} s"
    )
    eta: datetime | None = Field(description="the known quanta done at that rate (running only)")


def campaign_cards(
    session: Session, *, states: list[str] | None = None, offset: int = 0, limit: int | None = None
) -> list[CampaignCard]:
    """The campaigns of :func:`~skybatch.read.campaigns.list_campaigns` with their
    quanta, failures, rate and ETA (an aggregate query over their jobs and one over the
    recent quanta of their runs that may have some, whatever their number)."""
    from skybatch.campaign.models import CampaignRow

    summaries = list_campaigns(session, states=states, offset=offset, limit=limit)
    ids = [c.id for c in summaries]
    g = CampaignGroupRow
    quanta: dict[int, list[int]] = {i: [0, 0, 0] for i in ids}
    campaign_of: dict[int, int] = {
        run_id: campaign_id
        for run_id, campaign_id in session.execute(
            select(RunRow.id, g.campaign_id)
            .join(g, g.run_name == RunRow.name)
            .where(g.campaign_id.in_(ids))
        )
    }
    # per run and job state, in the order of the jobs' (run, state) index: no sort
    for run_id, state, n_quanta, n_jobs in session.execute(
        select(JobRow.run_id, JobRow.state, func.sum(JobRow.n_quanta), func.count())
        .where(JobRow.run_id.in_(list(campaign_of)))
        .group_by(JobRow.run_id, JobRow.state)
    ):
        tally = quanta[campaign_of[run_id]]
        tally[0] += int(n_quanta or 0)
        if state == "succeeded":
            tally[1] += int(n_quanta or 0)
        elif state in ("held", "failed"):
            tally[2] += int(n_jobs)
    now = utcnow()
    running = [c.id for c in summaries if c.state == "running"]
    since = now - timedelta(seconds=RATE_WINDOW_S)
    recent: dict[int, int] = {}
    if running:
        q = QuantumRunRow
        for campaign_id, n in session.execute(
            select(g.campaign_id, func.count())
            .join(RunRow, RunRow.name == g.run_name)
            .join(q, q.run_id == RunRow.id)
            .where(
                g.campaign_id.in_(running),
                # a run that ended before the window has no quantum in it: skip its rows
                # (a resumed run's finished_at is cleared; its state is checked too, for
                # rows written before that was so)
                (RunRow.state == "running")
                | RunRow.finished_at.is_(None)
                | (RunRow.finished_at >= since),
                q.status == "succeeded",
                q.end >= since,
            )
            .group_by(g.campaign_id)
        ):
            recent[campaign_id] = int(n)
    started = {
        row_id: at
        for row_id, at in session.execute(
            select(CampaignRow.id, CampaignRow.started_at).where(CampaignRow.id.in_(ids))
        )
    }
    cards = []
    for c in summaries:
        expected, done, failed = quanta[c.id]
        rate = recent.get(c.id, 0) / RATE_WINDOW_S
        eta = None
        if c.state == "running" and rate > 0 and expected > done:
            eta = now + timedelta(seconds=(expected - done) / rate)
        cards.append(
            CampaignCard(
                campaign=c,
                started=started.get(c.id),
                quanta_expected=expected,
                quanta_done=done,
                failed_jobs=failed,
                quanta_per_s=rate,
                eta=eta,
            )
        )
    return cards
