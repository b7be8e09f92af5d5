"""Failed jobs as operators read them (seed step 11): one job, and a campaign's
failures grouped by error signature.

A **signature** is the first line of a job's error with what differs from job to job
replaced: UUIDs by ``<id>``, absolute paths by ``<path>``, long hexadecimal strings by
``<hex>`` and numbers by ``<n>``. Jobs of one cause (every detector of a visit out of
memory) then share one signature, so an operator acts once per cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from skybatch.campaign.actions import get_campaign
from skybatch.campaign.models import CampaignGroupRow, CampaignStepRow
from skybatch.engines.base import JobState
from skybatch.job.causes import advice_for
from skybatch.run.models import JobRow, RunRow

from .models import FailedJob, FailureSignature

__all__ = ["error_signature", "failed_job", "failure_signatures", "first_line"]

#: Jobs shown per signature (the count is always given).
EXAMPLES = 3

_VARIABLE = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"(?<![\w.])/[^\s:;,'\"()]+"), "<path>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
]


def first_line(text: str | None) -> str | None:
    """The first non-blank line of an error (None for none)."""
    stripped = (text or "").strip()
    return stripped.splitlines()[0] if stripped else None


def error_signature(error: str | None) -> str:
    """The signature of an error (see the module); ``(no error recorded)`` for none."""
    line = first_line(error)
    if line is None:
        return "(no error recorded)"
    for pattern, placeholder in _VARIABLE:
        line = pattern.sub(placeholder, line)
    return line


def failed_job(
    job: JobRow, run: str, step: str | None = None, group: str | None = None
) -> FailedJob:
    """The read model of a held or failed job."""
    return FailedJob(
        step=step,
        group=group,
        run=run,
        job=job.name,
        label=job.label,
        state=job.state,
        attempts=job.attempts,
        exit_code=job.exit_code,
        failure=job.failure,
        error=first_line(job.error),
        advice=advice_for(job.failure),
        memory_mb=job.memory_mb,
    )


def failure_signatures(
    session: Session, campaign_id: int, *, step: str | None = None
) -> list[FailureSignature]:
    """The campaign's held and failed jobs (of ``step`` if given) grouped by failure
    kind and error signature, the most frequent first.

    Raises:
        InputError: no campaign has this id.
    """
    get_campaign(session, campaign_id)
    query = (
        select(JobRow, RunRow.name, CampaignStepRow.name, CampaignGroupRow.name)
        .join(RunRow, RunRow.id == JobRow.run_id)
        .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
        .join(CampaignStepRow, CampaignStepRow.id == CampaignGroupRow.step_id)
        .where(
            CampaignGroupRow.campaign_id == campaign_id,
            JobRow.state.in_([JobState.HELD.value, JobState.FAILED.value]),
        )
        .order_by(JobRow.run_id, JobRow.name)
    )
    if step is not None:
        query = query.where(CampaignStepRow.name == step)
    grouped: dict[tuple[str | None, str], list[FailedJob]] = {}
    for job, run, step_name, group in session.execute(query):
        key = (job.failure, error_signature(job.error))
        grouped.setdefault(key, []).append(failed_job(job, run, step_name, group))
    ordered = sorted(grouped.items(), key=lambda item: (-len(item[1]), item[0][1]))
    return [
        FailureSignature(
            failure=failure,
            signature=signature,
            count=len(jobs),
            tasks=sorted({j.label for j in jobs}),
            steps=_unique(j.step for j in jobs),
            advice=advice_for(failure),
            examples=jobs[:EXAMPLES],
        )
        for (failure, signature), jobs in ordered
    ]


def _unique(values: Iterable[str | None]) -> list[str]:
    """The values without None, each once, in their first order."""
    return list(dict.fromkeys(v for v in values if v is not None))
