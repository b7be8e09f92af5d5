"""What operators read: campaign list, status, report and history.

Everything is computed with SQL aggregates over the state tables (a fixed number of
``GROUP BY`` queries per command, whatever the number of jobs), so ``status`` and
``report`` stay fast for campaigns of 100,000 jobs:

- **status**: the campaign and per step its state, its groups per state and its
  jobs per state;
- **report**: per step, group and task the quanta expected, succeeded, failed (the
  newest attempt of each quantum decides) and running, the CPU hours of every
  attempt and the peak memory; and the failed (held) jobs with exit code and first
  error line.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from .actions import get_campaign
from .models import CampaignEventRow, CampaignGroupRow, CampaignRow, CampaignStepRow

__all__ = ["campaign_history", "campaign_report", "campaign_status", "list_campaigns"]

#: Failed jobs listed in a report (the total is always given).
MAX_FAILURES = 50

_COUNTS = ("expected", "succeeded", "failed", "running")


def list_campaigns(sessions: sessionmaker[Session]) -> list[dict[str, Any]]:
    with sessions() as session:
        groups: dict[int, dict[str, int]] = {}
        for campaign_id, state, n in session.execute(
            select(CampaignGroupRow.campaign_id, CampaignGroupRow.state, func.count()).group_by(
                CampaignGroupRow.campaign_id, CampaignGroupRow.state
            )
        ):
            groups.setdefault(campaign_id, {})[state] = n
        return [
            {
                "id": row.id,
                "name": row.name,
                "state": row.state,
                "priority": row.priority,
                "groups": groups.get(row.id, {}),
                "created": row.created_at.isoformat(),
                "finished": row.finished_at.isoformat() if row.finished_at else None,
                "message": row.message,
            }
            for row in session.scalars(select(CampaignRow).order_by(CampaignRow.id))
        ]


def _campaign_fields(row: CampaignRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "state": row.state,
        "priority": row.priority,
        "source": row.source_path,
        "created": row.created_at.isoformat(),
        "started": row.started_at.isoformat() if row.started_at else None,
        "finished": row.finished_at.isoformat() if row.finished_at else None,
        "message": row.message,
        "cleanup": row.summary.get("cleanup"),
        "provenance": row.summary.get("provenance", []),
    }


def _run_ids(campaign_id: int) -> Select[tuple[int, int]]:
    """``(run id, group id)`` of the campaign's groups that have a run."""
    from skybatch.run.models import RunRow

    return (
        select(RunRow.id.label("run_id"), CampaignGroupRow.id.label("group_id"))
        .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
        .where(CampaignGroupRow.campaign_id == campaign_id)
    )


def campaign_status(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    from skybatch.run.models import JobRow

    with sessions() as session:
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
        return {
            **_campaign_fields(row),
            "steps": [
                {
                    "name": s.name,
                    "state": s.state,
                    "priority": s.priority,
                    "groups": groups.get(s.id, {}),
                    "jobs": jobs.get(s.id, {}),
                    "overrides": s.overrides,
                    "selection": s.selection,
                    "message": s.message,
                }
                for s in steps
            ],
        }


def _step_rows(session: Session, campaign_id: int) -> list[CampaignStepRow]:
    return list(
        session.scalars(
            select(CampaignStepRow)
            .where(CampaignStepRow.campaign_id == campaign_id)
            .order_by(CampaignStepRow.position)
        )
    )


_ZERO: dict[str, Any] = {**dict.fromkeys(_COUNTS, 0), "cpu_hours": 0.0, "peak_memory_mb": None}


def _zero() -> dict[str, Any]:
    return dict(_ZERO)


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key in _COUNTS:
        total[key] += part[key]
    total["cpu_hours"] += part["cpu_hours"]
    if part["peak_memory_mb"] is not None:
        total["peak_memory_mb"] = max(total["peak_memory_mb"] or 0.0, part["peak_memory_mb"])


def campaign_report(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    """The report described in the module, as plain data (``--json`` prints it)."""
    from skybatch.run.models import RunRow

    g = CampaignGroupRow
    with sessions() as session:
        row = get_campaign(session, campaign_id)
        steps = _step_rows(session, campaign_id)
        group_rows = session.execute(
            select(
                g.id,
                g.step_id,
                g.name,
                g.state,
                g.run_name,
                g.data_query,
                g.attempts,
                g.message,
                RunRow.id.label("run_id"),
                RunRow.summary,
            )
            .outerjoin(RunRow, RunRow.name == g.run_name)
            .where(g.campaign_id == campaign_id)
            .order_by(g.step_id, g.position)
        ).all()
        tasks = _task_counts(session, campaign_id)
        failures, n_failures = _failures(session, campaign_id)
    run_group = {group.run_id: group.id for group in group_rows if group.run_id is not None}
    by_group: dict[int, dict[str, dict[str, Any]]] = {}
    for group in group_rows:
        if group.run_id is None or not group.summary:
            continue
        entry = by_group.setdefault(group.id, {})
        for label, n in group.summary.get("quanta_per_task", {}).items():
            entry.setdefault(label, _zero())["expected"] = n
    for (run_id, label), counts in tasks.items():
        entry = by_group.setdefault(run_group[run_id], {})
        entry.setdefault(label, _zero()).update(counts)
    step_names = {s.id: s.name for s in steps}
    group_names = {group.id: (step_names[group.step_id], group.name) for group in group_rows}
    for failure in failures:
        failure["step"], failure["group"] = group_names[run_group[failure.pop("run_id")]]
    groups_of: dict[int, list[Any]] = {}
    for group in group_rows:
        groups_of.setdefault(group.step_id, []).append(group)
    out_steps = []
    campaign_tasks: dict[str, dict[str, Any]] = {}
    for step in steps:
        step_tasks: dict[str, dict[str, Any]] = {}
        groups_out = []
        for group in groups_of.get(step.id, []):
            group_tasks = by_group.get(group.id, {})
            total = _zero()
            for label, counts in group_tasks.items():
                _add(total, counts)
                _add(step_tasks.setdefault(label, _zero()), counts)
            groups_out.append(
                {
                    "name": group.name,
                    "state": group.state,
                    "run": group.run_name,
                    "query": group.data_query,
                    "attempts": group.attempts,
                    "message": group.message,
                    "tasks": group_tasks,
                    "total": total,
                }
            )
        step_total = _zero()
        for label, counts in step_tasks.items():
            _add(step_total, counts)
            _add(campaign_tasks.setdefault(label, _zero()), counts)
        out_steps.append(
            {
                "name": step.name,
                "state": step.state,
                "message": step.message,
                "selection": step.selection,
                "groups": groups_out,
                "tasks": step_tasks,
                "total": step_total,
            }
        )
    total = _zero()
    for counts in campaign_tasks.values():
        _add(total, counts)
    return {
        **_campaign_fields(row),
        "steps": out_steps,
        "tasks": campaign_tasks,
        "total": total,
        "failures": failures,
        "failures_total": n_failures,
    }


def _task_counts(session: Session, campaign_id: int) -> dict[tuple[int, str], dict[str, Any]]:
    """Per (run id, task label): succeeded/failed quanta (newest attempt), running
    quanta (jobs submitted or running in a run that is running), CPU hours of every
    attempt, peak memory."""
    from skybatch.engines.base import JobState
    from skybatch.run.models import JobRow, QuantumRunRow, RunRow

    runs = _run_ids(campaign_id).subquery()
    q = QuantumRunRow
    out: dict[tuple[int, str], dict[str, Any]] = {}

    def entry(run_id: int, label: str) -> dict[str, Any]:
        return out.setdefault((run_id, label), {})

    for run_id, label, cpu_s, peak in session.execute(
        select(q.run_id, q.task_label, func.sum(q.cpu_s), func.max(q.max_rss_mb))
        .join(runs, runs.c.run_id == q.run_id)
        .group_by(q.run_id, q.task_label)
    ):
        entry(run_id, label).update(
            cpu_hours=round((cpu_s or 0.0) / 3600.0, 6),
            peak_memory_mb=round(peak, 1) if peak is not None else None,
        )
    latest = (
        select(q.run_id, q.quantum_id, func.max(q.attempt).label("attempt"))
        .join(runs, runs.c.run_id == q.run_id)
        .group_by(q.run_id, q.quantum_id)
        .subquery()
    )
    for run_id, label, status, n in session.execute(
        select(q.run_id, q.task_label, q.status, func.count())
        .join(
            latest,
            (q.run_id == latest.c.run_id)
            & (q.quantum_id == latest.c.quantum_id)
            & (q.attempt == latest.c.attempt),
        )
        .group_by(q.run_id, q.task_label, q.status)
    ):
        if status in ("succeeded", "failed"):
            entry(run_id, label)[status] = n
    active = [JobState.SUBMITTED.value, JobState.RUNNING.value]
    for run_id, label, n in session.execute(
        select(JobRow.run_id, JobRow.label, func.sum(JobRow.n_quanta))
        .join(runs, runs.c.run_id == JobRow.run_id)
        .join(RunRow, RunRow.id == JobRow.run_id)
        .where(JobRow.state.in_(active), RunRow.state == "running")
        .group_by(JobRow.run_id, JobRow.label)
    ):
        entry(run_id, label)["running"] = int(n or 0)
    return out


def _failures(session: Session, campaign_id: int) -> tuple[list[dict[str, Any]], int]:
    from skybatch.engines.base import JobState
    from skybatch.run.models import JobRow

    runs = _run_ids(campaign_id).subquery()
    failed = [JobState.HELD.value, JobState.FAILED.value]
    base = select(JobRow).join(runs, runs.c.run_id == JobRow.run_id).where(JobRow.state.in_(failed))
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(JobRow.run_id, JobRow.name).limit(MAX_FAILURES))
    return [
        {
            "run_id": job.run_id,
            "job": job.name,
            "label": job.label,
            "state": job.state,
            "attempts": job.attempts,
            "exit_code": job.exit_code,
            "failure": job.failure,
            "error": job.error.strip().splitlines()[0] if job.error and job.error.strip() else None,
            "memory_mb": job.memory_mb,
        }
        for job in rows
    ], int(total)


def campaign_history(
    sessions: sessionmaker[Session], campaign_id: int, limit: int | None = None
) -> list[dict[str, Any]]:
    """The campaign's state changes, oldest first (the newest ``limit`` with a limit)."""
    with sessions() as session:
        get_campaign(session, campaign_id)
        query = select(CampaignEventRow).where(CampaignEventRow.campaign_id == campaign_id)
        if limit is not None:
            query = query.order_by(CampaignEventRow.id.desc()).limit(limit)
        else:
            query = query.order_by(CampaignEventRow.id)
        rows = list(session.scalars(query))
    rows.sort(key=lambda e: e.id)
    return [
        {
            "time": e.created_at.isoformat(),
            "kind": e.kind,
            "what": e.what,
            "from": e.from_state or None,
            "to": e.to_state,
            "actor": e.actor,
            "action": e.action,
            "reason": e.reason,
        }
        for e in rows
    ]
