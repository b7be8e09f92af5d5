"""``/healthz`` (no token: a load balancer's probe) and ``/metrics`` (viewer;
Prometheus text format: campaigns, groups and jobs per state, groups in flight, jobs
queued, job transitions per second, attempts and state changes as counters) —
seed steps 3 and 10-11 as a monitor sees them."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from skybatch.read.metrics import StateTotals, state_totals

from ..deps import SessionDep, Viewer

__all__ = ["prometheus_text", "router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(session: SessionDep) -> dict[str, str]:
    """``{"status": "ok"}`` when the state database answers."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(totals: StateTotals) -> str:
    """The totals in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def family(name: str, help_text: str, counts: dict[str, int]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for state, n in sorted(counts.items()):
            lines.append(f'{name}{{state="{_escape(state)}"}} {n}')

    family("skybatch_campaigns", "Campaigns per state.", totals.campaigns)
    family("skybatch_groups", "Campaign groups per state.", totals.groups)
    family("skybatch_jobs", "Jobs of every run per state.", totals.jobs)
    lines.append("# HELP skybatch_groups_in_flight Campaign groups whose run is under way.")
    lines.append("# TYPE skybatch_groups_in_flight gauge")
    lines.append(f"skybatch_groups_in_flight {totals.groups.get('running', 0)}")
    queued = sum(totals.jobs.get(state, 0) for state in ("ready", "submitted"))
    lines.append("# HELP skybatch_jobs_queued Jobs released to or waiting in an engine's queue.")
    lines.append("# TYPE skybatch_jobs_queued gauge")
    lines.append(f"skybatch_jobs_queued {queued}")
    lines.append(
        "# HELP skybatch_job_transitions_per_second Job attempts submitted or ended per "
        f"second over the last {totals.window_s:g} s."
    )
    lines.append("# TYPE skybatch_job_transitions_per_second gauge")
    rate = totals.recent_transitions / totals.window_s
    lines.append(f"skybatch_job_transitions_per_second {rate:.6g}")
    lines.append("# HELP skybatch_job_attempts_total Job attempts made, per state.")
    lines.append("# TYPE skybatch_job_attempts_total counter")
    for state, n in sorted(totals.attempts.items()):
        lines.append(f'skybatch_job_attempts_total{{state="{_escape(state)}"}} {n}')
    lines.append("# HELP skybatch_state_changes_total Campaign, step and group state changes.")
    lines.append("# TYPE skybatch_state_changes_total counter")
    lines.append(f"skybatch_state_changes_total {totals.events}")
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(session: SessionDep, _: Viewer) -> PlainTextResponse:
    """Prometheus metrics: campaigns, groups and jobs per state, groups in flight."""
    return PlainTextResponse(
        prometheus_text(state_totals(session)),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
