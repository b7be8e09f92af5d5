"""Campaign reads (seed steps 3, 13): list, status, report and history.

Every function takes a session and returns read models (:mod:`skybatch.read.models`).
Everything is computed with SQL aggregates over the state tables (a fixed number of
``GROUP BY`` queries per call, whatever the number of jobs), so ``status`` and
``report`` stay fast for campaigns of 100,000 jobs:

- **status**: the campaign and per step its state, its groups per state and its
  jobs per state;
- **report**: per step and task, and per group, the quanta expected, succeeded,
  failed (the newest attempt of each quantum decides) and running, the CPU hours of
  every attempt and the peak memory (per group and task only for groups that did not
  succeed); the groups per state; and the failed (held) jobs with exit code and
  first error line. The quanta are summed per run and task in one pass; the rest is
  one loop over the groups (measured by ``benchmarks/manager_scale.py``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, case, exists, func, select
from sqlalchemy.orm import Session, aliased

from skybatch.campaign.actions import get_campaign
from skybatch.campaign.models import (
    CampaignEventRow,
    CampaignGroupRow,
    CampaignRow,
    CampaignStepRow,
)
from skybatch.campaign.states import State
from skybatch.engines.base import JobState
from skybatch.run.models import JobRow, QuantumRunRow, RunRow

from .failures import failed_job
from .models import (
    CampaignEvent,
    CampaignInfo,
    CampaignReport,
    CampaignStatus,
    CampaignSummary,
    CleanupSummary,
    FailedJob,
    Group,
    GroupReport,
    StepReport,
    StepStatus,
    TaskCounts,
)

__all__ = [
    "MAX_FAILURES",
    "campaign_history",
    "campaign_report",
    "campaign_status",
    "list_campaigns",
    "list_groups",
]

#: Failed jobs listed in a report (the total is always given).
MAX_FAILURES = 50


def list_campaigns(
    session: Session,
    *,
    states: Sequence[str] | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[CampaignSummary]:
    """The campaigns (in ``states`` if given), oldest first, one page at a time, with
    their groups per state."""
    query = select(CampaignRow).order_by(CampaignRow.id).offset(offset).limit(limit)
    if states:
        query = query.where(CampaignRow.state.in_(states))
    rows = list(session.scalars(query))
    groups: dict[int, dict[str, int]] = {}
    for campaign_id, state, n in session.execute(
        select(CampaignGroupRow.campaign_id, CampaignGroupRow.state, func.count())
        .where(CampaignGroupRow.campaign_id.in_([r.id for r in rows]))
        .group_by(CampaignGroupRow.campaign_id, CampaignGroupRow.state)
    ):
        groups.setdefault(campaign_id, {})[state] = n
    return [
        CampaignSummary(
            id=row.id,
            name=row.name,
            state=row.state,
            priority=row.priority,
            groups=groups.get(row.id, {}),
            created=row.created_at,
            finished=row.finished_at,
            message=row.message,
        )
        for row in rows
    ]


def _campaign_fields(row: CampaignRow) -> dict[str, Any]:
    """The fields of :class:`CampaignInfo`, for the models that extend it."""
    return CampaignInfo(
        id=row.id,
        name=row.name,
        state=row.state,
        priority=row.priority,
        source=row.source_path,
        created=row.created_at,
        started=row.started_at,
        finished=row.finished_at,
        message=row.message,
        cleanup=_cleanup(row.summary.get("cleanup")),
        provenance=row.summary.get("provenance", []),
    ).model_dump()


def _cleanup(stored: Any) -> CleanupSummary | None:
    """The stored cleanup summary as a model (keys this version does not know are
    left out, so a summary a newer manager wrote still reads)."""
    if not isinstance(stored, dict):
        return None
    known = {k: v for k, v in stored.items() if k in CleanupSummary.model_fields}
    return CleanupSummary.model_validate(known)


def _run_ids(campaign_id: int) -> Select[tuple[int, int]]:
    """``(run id, group id)`` of the campaign's groups that have a run."""
    return (
        select(RunRow.id.label("run_id"), CampaignGroupRow.id.label("group_id"))
        .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
        .where(CampaignGroupRow.campaign_id == campaign_id)
    )


def campaign_status(session: Session, campaign_id: int) -> CampaignStatus:
    """The campaign and per step its state, groups per state and jobs per state.

    Raises:
        InputError: no campaign has this id.
    """
    row = get_campaign(session, campaign_id)
    steps = _step_rows(session, campaign_id)
    groups: dict[int, dict[str, int]] = {}
    for step_id, state, n in session.execute(
        select(CampaignGroupRow.step_id, CampaignGroupRow.state, func.count())
        .where(CampaignGroupRow.campaign_id == campaign_id)
        .group_by(CampaignGroupRow.step_id, CampaignGroupRow.state)
    ):
        groups.setdefault(step_id, {})[state] = n
    runs = _run_ids(campaign_id).subquery()
    jobs: dict[int, dict[str, int]] = {}
    for step_id, state, n in session.execute(
        select(CampaignGroupRow.step_id, JobRow.state, func.count())
        .join(runs, runs.c.run_id == JobRow.run_id)
        .join(CampaignGroupRow, CampaignGroupRow.id == runs.c.group_id)
        .group_by(CampaignGroupRow.step_id, JobRow.state)
    ):
        jobs.setdefault(step_id, {})[state] = n
    return CampaignStatus(
        **_campaign_fields(row),
        steps=[
            StepStatus(
                name=s.name,
                state=s.state,
                priority=s.priority,
                groups=groups.get(s.id, {}),
                jobs=jobs.get(s.id, {}),
                overrides=s.overrides,
                selection=s.selection,
                message=s.message,
            )
            for s in steps
        ],
    )


def list_groups(
    session: Session,
    campaign_id: int,
    *,
    step: str | None = None,
    states: Sequence[str] | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[Group]:
    """The campaign's groups in step and group order (of ``step``, in ``states``, if
    given), one page at a time.

    Raises:
        InputError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    g = CampaignGroupRow
    query = (
        select(g, CampaignStepRow.name)
        .join(CampaignStepRow, CampaignStepRow.id == g.step_id)
        .where(g.campaign_id == campaign_id)
        .order_by(CampaignStepRow.position, g.position)
        .offset(offset)
        .limit(limit)
    )
    if step is not None:
        query = query.where(CampaignStepRow.name == step)
    if states:
        query = query.where(g.state.in_(states))
    return [
        Group(
            step=step_name,
            name=row.name,
            state=row.state,
            run=row.run_name,
            query=row.data_query,
            attempts=row.attempts,
            created=row.created_at,
            started=row.started_at,
            finished=row.finished_at,
            message=row.message,
        )
        for row, step_name in session.execute(query)
    ]


def _step_rows(session: Session, campaign_id: int) -> list[CampaignStepRow]:
    return list(
        session.scalars(
            select(CampaignStepRow)
            .where(CampaignStepRow.campaign_id == campaign_id)
            .order_by(CampaignStepRow.position)
        )
    )


@dataclass(slots=True)
class _Tally:
    """A task's counts while the report is summed up (peak None: not measured)."""

    expected: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    cpu_s: float = 0.0
    peak: float | None = None

    def add(self, part: _Tally) -> None:
        self.expected += part.expected
        self.succeeded += part.succeeded
        self.failed += part.failed
        self.running += part.running
        self.cpu_s += part.cpu_s
        if part.peak is not None and (self.peak is None or part.peak > self.peak):
            self.peak = part.peak

    def copy(self) -> _Tally:
        return _Tally(
            self.expected, self.succeeded, self.failed, self.running, self.cpu_s, self.peak
        )

    def counts(self) -> TaskCounts:
        return TaskCounts(
            expected=self.expected,
            succeeded=self.succeeded,
            failed=self.failed,
            running=self.running,
            cpu_hours=round(self.cpu_s / 3600.0, 6),
            peak_memory_mb=round(self.peak, 1) if self.peak is not None else None,
        )


def campaign_report(session: Session, campaign_id: int) -> CampaignReport:
    """The report described in the module.

    Every group is listed with its state, run, query and quanta ``total``; its counts
    per task (``tasks``) only when it did not succeed (those of a succeeded group are
    in its step's ``tasks``), so a campaign of many small groups stays small and fast.

    Raises:
        InputError: no campaign has this id.
    """
    g = CampaignGroupRow
    row = get_campaign(session, campaign_id)
    steps = _step_rows(session, campaign_id)
    group_rows = session.execute(
        select(
            g.step_id,
            g.name,
            g.state,
            g.run_name,
            g.data_query,
            g.attempts,
            g.message,
            RunRow.id,
            RunRow.summary["quanta_per_task"].as_string(),
        )
        .outerjoin(RunRow, RunRow.name == g.run_name)
        .where(g.campaign_id == campaign_id)
        .order_by(g.step_id, g.position)
    ).all()
    tallies = _task_counts(session, campaign_id)
    failed_jobs, n_failures = _failures(session, campaign_id)
    # Groups of a step usually run the same quanta per task: parse each text once.
    expected_of = functools.lru_cache(maxsize=1024)(json.loads)
    step_names = {s.id: s.name for s in steps}
    step_tasks: dict[int, dict[str, _Tally]] = {s.id: {} for s in steps}
    groups_of: dict[int, list[GroupReport]] = {s.id: [] for s in steps}
    group_states: dict[int, dict[str, int]] = {s.id: {} for s in steps}
    group_of_run: dict[int, tuple[str, str]] = {}
    for step_id, name, state, run, query, attempts, message, run_id, quanta in group_rows:
        tasks = (
            {label: _Tally(expected=n) for label, n in expected_of(quanta).items()}
            if quanta
            else {}
        )
        if run_id is not None:
            group_of_run[run_id] = (step_names[step_id], name)
            for label, part in tallies.get(run_id, {}).items():
                tally = tasks.get(label)
                if tally is None:
                    tasks[label] = part
                else:
                    part.expected = tally.expected
                    tasks[label] = part
        total = _Tally()
        per_task = step_tasks[step_id]
        for label, tally in tasks.items():
            total.add(tally)
            if label in per_task:
                per_task[label].add(tally)
            else:
                per_task[label] = tally.copy()
        groups_of[step_id].append(
            GroupReport(
                name=name,
                state=state,
                run=run,
                query=query,
                attempts=attempts,
                message=message,
                total=total.counts(),
                tasks=None
                if state == State.SUCCEEDED
                else {label: tally.counts() for label, tally in tasks.items()},
            )
        )
        states = group_states[step_id]
        states[state] = states.get(state, 0) + 1
    failures = [
        job.model_copy(update=dict(zip(("step", "group"), group_of_run[run_id], strict=True)))
        for run_id, job in failed_jobs
    ]
    out_steps = []
    campaign_tasks: dict[str, _Tally] = {}
    for step in steps:
        step_total = _Tally()
        for label, tally in step_tasks[step.id].items():
            step_total.add(tally)
            campaign_tasks.setdefault(label, _Tally()).add(tally)
        out_steps.append(
            StepReport(
                name=step.name,
                state=step.state,
                message=step.message,
                selection=step.selection,
                group_states=group_states[step.id],
                groups=groups_of[step.id],
                tasks={label: t.counts() for label, t in step_tasks[step.id].items()},
                total=step_total.counts(),
            )
        )
    total = _Tally()
    for tally in campaign_tasks.values():
        total.add(tally)
    return CampaignReport(
        **_campaign_fields(row),
        steps=out_steps,
        tasks={label: t.counts() for label, t in campaign_tasks.items()},
        total=total.counts(),
        failures=failures,
        failures_total=n_failures,
    )


def _task_counts(session: Session, campaign_id: int) -> dict[int, dict[str, _Tally]]:
    """Per run id and task label, a tally without ``expected``: succeeded and failed
    quanta (the newest attempt of each quantum decides), running quanta (jobs
    submitted or running in a run that is running), CPU seconds of every attempt, peak
    memory. One pass over the campaign's quanta: an attempt is the newest when no
    later attempt of its quantum exists (an index look-up, no grouping by quantum)."""
    runs = select(_run_ids(campaign_id).subquery().c.run_id)
    q = QuantumRunRow
    later = aliased(QuantumRunRow)
    newest = ~exists().where(
        later.run_id == q.run_id, later.quantum_id == q.quantum_id, later.attempt > q.attempt
    )

    def newest_with(status: str) -> Any:
        return func.sum(case((and_(q.status == status, newest), 1), else_=0))

    out: dict[int, dict[str, _Tally]] = {}
    for run_id, label, cpu_s, peak, succeeded, failed in session.execute(
        select(
            q.run_id,
            q.task_label,
            func.sum(q.cpu_s),
            func.max(q.max_rss_mb),
            newest_with("succeeded"),
            newest_with("failed"),
        )
        .where(q.run_id.in_(runs))
        .group_by(q.run_id, q.task_label)
    ):
        out.setdefault(run_id, {})[label] = _Tally(
            succeeded=int(succeeded or 0),
            failed=int(failed or 0),
            cpu_s=float(cpu_s or 0.0),
            peak=peak,
        )
    active = [JobState.SUBMITTED.value, JobState.RUNNING.value]
    for run_id, label, n in session.execute(
        select(JobRow.run_id, JobRow.label, func.sum(JobRow.n_quanta))
        .join(RunRow, RunRow.id == JobRow.run_id)
        .where(JobRow.run_id.in_(runs), JobRow.state.in_(active), RunRow.state == "running")
        .group_by(JobRow.run_id, JobRow.label)
    ):
        tallies = out.setdefault(run_id, {})
        tallies.setdefault(label, _Tally()).running = int(n or 0)
    return out


def _failures(session: Session, campaign_id: int) -> tuple[list[tuple[int, FailedJob]], int]:
    """``(run id, failed job)`` of the first ``MAX_FAILURES`` held or failed jobs, and
    how many there are."""
    runs = _run_ids(campaign_id).subquery()
    failed = [JobState.HELD.value, JobState.FAILED.value]
    base = (
        select(JobRow, RunRow.name)
        .join(runs, runs.c.run_id == JobRow.run_id)
        .join(RunRow, RunRow.id == JobRow.run_id)
        .where(JobRow.state.in_(failed))
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(base.order_by(JobRow.run_id, JobRow.name).limit(MAX_FAILURES))
    return [(job.run_id, failed_job(job, run)) for job, run in rows], int(total)


def campaign_history(
    session: Session, campaign_id: int, limit: int | None = None
) -> list[CampaignEvent]:
    """The campaign's state changes, oldest first (the newest ``limit`` with a limit).

    Raises:
        InputError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    query = select(CampaignEventRow).where(CampaignEventRow.campaign_id == campaign_id)
    if limit is not None:
        query = query.order_by(CampaignEventRow.id.desc()).limit(limit)
    else:
        query = query.order_by(CampaignEventRow.id)
    rows = sorted(session.scalars(query), key=lambda e: e.id)
    return [
        CampaignEvent(
            time=e.created_at,
            kind=e.kind,
            what=e.what,
            from_state=e.from_state or None,
            to_state=e.to_state,
            actor=e.actor,
            action=e.action,
            reason=e.reason,
        )
        for e in rows
    ]
