"""What operators read: campaign list, status, report and history.

Everything is computed with SQL aggregates over the state tables (a fixed number of
``GROUP BY`` queries per command, whatever the number of jobs), so ``status`` and
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
from typing import Any

from sqlalchemy import Select, and_, case, exists, func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from .actions import get_campaign
from .models import CampaignEventRow, CampaignGroupRow, CampaignRow, CampaignStepRow
from .states import State

__all__ = ["campaign_history", "campaign_report", "campaign_status", "list_campaigns"]

#: Failed jobs listed in a report (the total is always given).
MAX_FAILURES = 50


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


#: A task's tally while the report is summed up: quanta expected, succeeded, failed,
#: running; CPU seconds; peak memory (MB, None: not measured).
_Tally = list[Any]
_EXPECTED, _SUCCEEDED, _FAILED, _RUNNING, _CPU_S, _PEAK = range(6)


def _tally(expected: int = 0) -> _Tally:
    return [expected, 0, 0, 0, 0.0, None]


def _add(total: _Tally, part: _Tally) -> None:
    expected, succeeded, failed, running, cpu_s, peak = part
    total[_EXPECTED] += expected
    total[_SUCCEEDED] += succeeded
    total[_FAILED] += failed
    total[_RUNNING] += running
    total[_CPU_S] += cpu_s
    if peak is not None and (total[_PEAK] is None or peak > total[_PEAK]):
        total[_PEAK] = peak


def _counts(tally: _Tally) -> dict[str, Any]:
    peak = tally[_PEAK]
    return {
        "expected": tally[_EXPECTED],
        "succeeded": tally[_SUCCEEDED],
        "failed": tally[_FAILED],
        "running": tally[_RUNNING],
        "cpu_hours": round(tally[_CPU_S] / 3600.0, 6),
        "peak_memory_mb": round(peak, 1) if peak is not None else None,
    }


def campaign_report(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, Any]:
    """The report described in the module, as plain data (``--json`` prints it).

    Every group is listed with its state, run, query and quanta ``total``; its counts
    per task (``tasks``) only when it did not succeed (those of a succeeded group are
    in its step's ``tasks``), so a campaign of many small groups stays small and fast.
    """
    from skybatch.run.models import RunRow

    g = CampaignGroupRow
    with sessions() as session:
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
        failures, n_failures = _failures(session, campaign_id)
    # Groups of a step usually run the same quanta per task: parse each text once.
    expected_of = functools.lru_cache(maxsize=1024)(json.loads)
    step_names = {s.id: s.name for s in steps}
    step_tasks: dict[int, dict[str, _Tally]] = {s.id: {} for s in steps}
    groups_of: dict[int, list[dict[str, Any]]] = {s.id: [] for s in steps}
    group_states: dict[int, dict[str, int]] = {s.id: {} for s in steps}
    group_of_run: dict[int, tuple[str, str]] = {}
    for step_id, name, state, run, query, attempts, message, run_id, quanta in group_rows:
        tasks = {label: _tally(n) for label, n in expected_of(quanta).items()} if quanta else {}
        if run_id is not None:
            group_of_run[run_id] = (step_names[step_id], name)
            for label, part in tallies.get(run_id, {}).items():
                tally = tasks.get(label)
                if tally is None:
                    tasks[label] = part
                else:
                    tally[_SUCCEEDED:] = part[_SUCCEEDED:]
        total = _tally()
        per_task = step_tasks[step_id]
        for label, tally in tasks.items():
            _add(total, tally)
            if label in per_task:
                _add(per_task[label], tally)
            else:
                per_task[label] = list(tally)
        entry: dict[str, Any] = {
            "name": name,
            "state": state,
            "run": run,
            "query": query,
            "attempts": attempts,
            "message": message,
            "total": _counts(total),
        }
        if state != State.SUCCEEDED:
            entry["tasks"] = {label: _counts(tally) for label, tally in tasks.items()}
        groups_of[step_id].append(entry)
        states = group_states[step_id]
        states[state] = states.get(state, 0) + 1
    for failure in failures:
        failure["step"], failure["group"] = group_of_run[failure.pop("run_id")]
    out_steps = []
    campaign_tasks: dict[str, _Tally] = {}
    for step in steps:
        step_total = _tally()
        for label, tally in step_tasks[step.id].items():
            _add(step_total, tally)
            _add(campaign_tasks.setdefault(label, _tally()), tally)
        out_steps.append(
            {
                "name": step.name,
                "state": step.state,
                "message": step.message,
                "selection": step.selection,
                "group_states": group_states[step.id],
                "groups": groups_of[step.id],
                "tasks": {label: _counts(t) for label, t in step_tasks[step.id].items()},
                "total": _counts(step_total),
            }
        )
    total = _tally()
    for tally in campaign_tasks.values():
        _add(total, tally)
    return {
        **_campaign_fields(row),
        "steps": out_steps,
        "tasks": {label: _counts(t) for label, t in campaign_tasks.items()},
        "total": _counts(total),
        "failures": failures,
        "failures_total": n_failures,
    }


def _task_counts(session: Session, campaign_id: int) -> dict[int, dict[str, _Tally]]:
    """Per run id and task label, a tally without ``expected``: succeeded and failed
    quanta (the newest attempt of each quantum decides), running quanta (jobs
    submitted or running in a run that is running), CPU seconds of every attempt, peak
    memory. One pass over the campaign's quanta: an attempt is the newest when no
    later attempt of its quantum exists (an index look-up, no grouping by quantum)."""
    from skybatch.engines.base import JobState
    from skybatch.run.models import JobRow, QuantumRunRow, RunRow

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
        out.setdefault(run_id, {})[label] = [
            0,
            int(succeeded or 0),
            int(failed or 0),
            0,
            float(cpu_s or 0.0),
            peak,
        ]
    active = [JobState.SUBMITTED.value, JobState.RUNNING.value]
    for run_id, label, n in session.execute(
        select(JobRow.run_id, JobRow.label, func.sum(JobRow.n_quanta))
        .join(RunRow, RunRow.id == JobRow.run_id)
        .where(JobRow.run_id.in_(runs), JobRow.state.in_(active), RunRow.state == "running")
        .group_by(JobRow.run_id, JobRow.label)
    ):
        tallies = out.setdefault(run_id, {})
        tallies.setdefault(label, _tally())[_RUNNING] = int(n or 0)
    return out


def _failures(session: Session, campaign_id: int) -> tuple[list[dict[str, Any]], int]:
    from skybatch.engines.base import JobState
    from skybatch.job.causes import advice_for
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
            "advice": advice_for(job.failure),
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
