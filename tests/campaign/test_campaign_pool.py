"""The manager's execution pool on the tiny demo survey: groups of a step really run at
the same time on one engine, and the campaign's limits hold at every moment."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from skybatch.campaign.manager import Manager
from skybatch.campaign.models import CampaignEventRow, CampaignGroupRow
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.demo.driver import pipeline_path
from skybatch.run.models import JobAttemptRow, JobRow, QuantumRunRow, RunRow
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


def _campaign(tmp_path: Path, survey: Path, groups: int, jobs: int) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: pool
            repo: {survey / "repo"}
            inputs: [DemoCam/defaults, DemoCam/calib]
            query: "instrument = 'DemoCam'"
            engine: {{workers: 2}}
            policies:
              concurrency: {{max_running_groups: {groups}, max_running_jobs: {jobs}}}
            steps:
              - name: step1
                pipeline: {pipeline_path()}#step1
                split: {{by: visit}}
            """
        )
    )
    return path


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (an end before a start at a tie)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_groups_overlap_on_one_engine_within_the_campaign_limits(
    demo_survey: Path, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    campaign_id = submit_campaign(settings, _campaign(tmp_path, demo_survey, 2, 2)).id
    sessions = open_state_db(settings)
    with Manager(settings) as manager:
        assert manager.run_until_done(campaign_id) == "succeeded"
        assert manager.pool.engines_built == 1  # one engine served every group
    with sessions() as session:
        groups = session.scalars(
            select(CampaignGroupRow).where(CampaignGroupRow.campaign_id == campaign_id)
        ).all()
        assert len(groups) == 3 and {g.state for g in groups} == {"succeeded"}
        # Groups in flight: from each group's running -> ended events.
        events = session.execute(
            select(CampaignEventRow.what, CampaignEventRow.to_state, CampaignEventRow.created_at)
            .where(CampaignEventRow.campaign_id == campaign_id, CampaignEventRow.kind == "group")
            .order_by(CampaignEventRow.id)
        ).all()
        # Quanta as they really ran, per run; jobs as handed to the engine.
        quanta = session.execute(
            select(RunRow.name, QuantumRunRow.start, QuantumRunRow.end).join(
                RunRow, RunRow.id == QuantumRunRow.run_id
            )
        ).all()
        attempts = session.execute(
            select(JobAttemptRow.submitted_at, JobAttemptRow.finished_at).join(
                JobRow, JobRow.id == JobAttemptRow.job_id
            )
        ).all()
    started: dict[str, datetime] = {}
    in_flight = []
    for group_id, state, at in events:
        if state == "running":
            started[group_id] = at
        elif group_id in started:
            in_flight.append((started.pop(group_id), at))
    assert len(in_flight) == 3
    assert _most_at_once(in_flight) <= 2  # max_running_groups
    assert _most_at_once([(a, b) for a, b in attempts]) <= 2  # max_running_jobs
    # Two groups' quanta ran at the same moment.
    overlapping = {
        (run_a, run_b)
        for run_a, start_a, end_a in quanta
        for run_b, start_b, end_b in quanta
        if run_a < run_b and start_a < end_b and start_b < end_a
    }
    assert overlapping, "no two groups ran quanta at the same time"
