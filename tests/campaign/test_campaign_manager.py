"""The manager on the tiny demo survey: the demo campaign end to end, pause/resume,
cancel, and retry after a failure, each as documented in skybatch.campaign.actions."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.backbone.service import Backbone
from skybatch.campaign.actions import (
    cancel_campaign,
    pause_campaign,
    resume_campaign,
    retry_campaign,
)
from skybatch.campaign.demo import demo_campaign_path, run_demo_campaign
from skybatch.campaign.manager import Manager
from skybatch.campaign.models import CampaignGroupRow, CampaignRow
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.demo.driver import pipeline_path
from skybatch.demo.params import SurveyTruth
from skybatch.demo.survey import Survey
from skybatch.read import campaigns as read
from skybatch.run.models import JobAttemptRow, JobRow, RunRow
from skybatch.settings import Settings, load_settings

pytestmark = pytest.mark.slow

SEEING_LIMIT = 1.6  # the demo campaign's: the tiny survey's visit 1001 is over it


def _groups(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, str]:
    with sessions() as session:
        rows = session.scalars(
            select(CampaignGroupRow).where(CampaignGroupRow.campaign_id == campaign_id)
        )
        return {row.run_name.split("/", 2)[2]: row.state for row in rows}


def _submit_demo(settings: Settings, survey: Path) -> int:
    environ = {**os.environ, "DEMO_SURVEY": str(survey), "DEMO_WORKERS": "2"}
    return submit_campaign(settings, demo_campaign_path(), environ).id


def _on(text: str, action: Callable[[], object]) -> Callable[[str], None]:
    """A manager ``say`` that acts (as an operator would) once ``text`` is said."""
    done: list[bool] = []

    def say(line: str) -> None:
        if text in line and not done:
            done.append(True)
            action()

    return say


def test_demo_campaign_runs_to_completion_with_coadds_of_good_seeing_visits(
    demo_survey: Path, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    lines: list[str] = []
    result = run_demo_campaign(settings, demo_survey, say=lines.append)
    assert result.succeeded, "\n".join(lines)
    sessions = open_state_db(settings)
    with sessions() as session:
        report = read.campaign_report(session, result.campaign_id)
    assert [(s.name, s.state) for s in report.steps] == [
        ("step1", "succeeded"),
        ("step2", "succeeded"),
    ]
    for label, counts in report.tasks.items():
        assert counts.succeeded == counts.expected > 0, label
        assert counts.failed == counts.running == 0, label
        assert counts.cpu_hours > 0 and (counts.peak_memory_mb or 0) > 0, label
    assert report.failures == []

    # The seeing of every visit, from the visitSummary tables step 1 wrote.
    step1, step2 = report.steps
    seeing: dict[int, list[float]] = {}
    with Butler.from_config(str(demo_survey / "repo")) as butler:
        runs = [g.run for g in step1.groups]
        for ref in butler.query_datasets("visitSummary", collections=runs, explain=False):
            # Written where the campaign's file_templates says, and read from there.
            path = butler.getURI(ref).path
            assert f"/{ref.run}/visit_summaries/{ref.dataId['band']}/visitSummary_DemoCam_" in path
            table = butler.get(ref)
            seeing[int(ref.dataId["visit"])] = [float(v) for v in table["psf_fwhm_arcsec"]]
        good = sorted(v for v, values in seeing.items() if max(values) < SEEING_LIMIT)
        assert sorted(seeing) == [1000, 1001, 1002]
        assert good and len(good) < len(seeing), seeing
        (group,) = step2.groups
        assert group.query.endswith(f"(visit IN ({', '.join(map(str, good))}))")
        assert step2.selection is not None
        assert step2.selection.kept == [{"visit": v} for v in good]
        assert step2.selection.dropped == [{"visit": v} for v in sorted(set(seeing) - set(good))]
        # The coadds are made of the good visits only: their bands, nothing else.
        bands = {
            r.dataId["band"]
            for r in butler.query_datasets("deepCoadd", collections=group.run, explain=False)
        }
        visit_bands = {v.visit: v.band for v in _truth(demo_survey).visits}
        assert bands == {visit_bands[v] for v in good}

        # Every group's `packages` provenance lists the environment's distributions,
        # the same for all, whatever modules the manager had imported by then.
        packages = [
            dict(butler.get("packages", collections=g.run).items()) for g in [*step1.groups, group]
        ]
        assert all(p == packages[0] for p in packages), [len(p) for p in packages]
        assert {"daf_butler", "skybatch", "ruff"} <= set(packages[0])  # never imported: ruff

    # Campaign end: the site cache copies of what its runs used are gone.
    backbone = Backbone.from_settings(settings)
    raws = backbone.catalog.files(dataset_type="raw")
    assert raws and backbone.catalog.placements([f.id for f in raws], "site:local") == []
    cleanup = report.cleanup
    assert cleanup is not None
    assert (cleanup.evicted or 0) > 0 and cleanup.workdirs_removed == 4
    assert len(report.provenance) == 3


def _truth(survey: Path) -> SurveyTruth:
    return Survey(survey).truth()


def _attempts_of(sessions: sessionmaker[Session], group: str) -> int:
    """Job attempts of the run of ``group`` (``visit_1000``) so far."""
    with sessions() as session:
        return len(
            session.scalars(
                select(JobAttemptRow.id)
                .join(JobRow, JobRow.id == JobAttemptRow.job_id)
                .join(RunRow, RunRow.id == JobRow.run_id)
                .where(RunRow.name.endswith(group))
            ).all()
        )


def test_pause_gives_groups_in_flight_no_new_job_and_starts_no_other_until_resume(
    demo_survey: Path, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    campaign_id = _submit_demo(settings, demo_survey)
    sessions = open_state_db(settings)
    # Paused as the first group is handed to the pool: its set-up goes on, but no job
    # of it reaches the engine; the other groups do not start.
    pause = _on("visit_1000: starting run", lambda: pause_campaign(sessions, campaign_id))
    with Manager(settings, say=pause) as manager:
        report = manager.run_pass()  # returns: nothing can go on while paused
        assert report.groups_run == 0
        assert manager.state_of(campaign_id) == "paused"
        assert _groups(sessions, campaign_id) == {
            "step1/visit_1000": "running",
            "step1/visit_1001": "paused",
            "step1/visit_1002": "paused",
        }
        with sessions() as session:
            jobs = session.scalars(
                select(JobRow.state).join(RunRow).where(RunRow.name.endswith("visit_1000"))
            ).all()
        assert jobs and set(jobs) <= {"pending", "ready"}  # set up, none started
        assert _attempts_of(sessions, "visit_1000") == 0
        assert manager.run_pass().groups_run == 0  # still paused: nothing starts

        resume_campaign(sessions, campaign_id, reason="go")
        assert manager.run_until_done(campaign_id) == "succeeded"
    assert set(_groups(sessions, campaign_id).values()) == {"succeeded"}
    with sessions() as session:
        actions = [(e.what, e.action) for e in read.campaign_history(session, campaign_id)]
    assert ("demo-drp", "pause") in actions and ("demo-drp", "resume") in actions
    assert ("step1/visit_1001", "pause") in actions and ("step1/visit_1001", "resume") in actions


def test_cancel_stops_the_groups_in_flight_runs_nothing_more_and_cleans_up(
    demo_survey: Path, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    campaign_id = _submit_demo(settings, demo_survey)
    sessions = open_state_db(settings)
    cancelled: list[bool] = []

    def operator() -> None:  # cancels once visit_1001's jobs are running
        if not cancelled and _attempts_of(sessions, "visit_1001"):
            cancel_campaign(sessions, campaign_id, reason="wrong data")
            cancelled.append(True)

    with Manager(settings, progress=operator) as manager:
        manager.run_pass()
        assert cancelled
        assert manager.state_of(campaign_id) == "cancelled"
        groups = _groups(sessions, campaign_id)
        assert groups["step1/visit_1001"] == "cancelled"
        assert set(groups.values()) <= {"succeeded", "cancelled"}
        with sessions() as session:
            status = read.campaign_status(session, campaign_id)
        assert [s.state for s in status.steps] == ["cancelled", "cancelled"]
        assert status.cleanup is not None
        with sessions() as session:
            runs = {r.name.rsplit("/", 1)[1]: r.state for r in session.scalars(select(RunRow))}
            row = session.get(CampaignRow, campaign_id)
            assert row is not None and row.cleaned_at is not None
            stopped = session.scalars(
                select(JobRow.state).join(RunRow).where(RunRow.name.endswith("visit_1001"))
            ).all()
            open_jobs = session.scalars(
                select(JobRow.name).where(
                    JobRow.state.in_(["pending", "ready", "submitted", "running"])
                )
            ).all()
        # The stopped run is over (its jobs did not all run) and nothing is left to run.
        assert runs["visit_1001"] == "cancelled"
        for group, state in groups.items():
            run = group.split("/")[1]
            assert runs.get(run) in ({"succeeded"} if state == "succeeded" else {None, "cancelled"})
        assert stopped and set(stopped) != {"succeeded"} and "cancelled" in stopped
        assert open_jobs == []
        assert manager.run_pass().groups_run == 0


def _oom_campaign(tmp_path: Path, survey: Path) -> Path:
    """One visit, with calibrate's memory below what it needs and a cap that keeps it
    there: the job runs out of memory on every attempt and the group fails."""
    path = tmp_path / "oom.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: oom
            repo: {survey / "repo"}
            inputs: [DemoCam/defaults]
            query: "instrument = 'DemoCam' AND visit = 1000"
            engine: {{workers: 2}}
            policies:
              retries: {{max_attempts: 2, memory_factor: 2.0, memory_cap_mb: 60}}
              resources:
                calibrate: {{memory_mb: 60}}
            steps:
              - name: step1
                pipeline: {pipeline_path()}#step1
                split: {{by: visit}}
            """
        )
    )
    return path


def test_retry_with_more_memory_resumes_the_failed_group_and_keeps_its_work(
    demo_survey: Path, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    campaign_id = submit_campaign(settings, _oom_campaign(tmp_path, demo_survey)).id
    sessions = open_state_db(settings)
    manager = Manager(settings)
    assert manager.run_until_done(campaign_id) == "failed"
    with sessions() as session:
        report = read.campaign_report(session, campaign_id)
    assert report.failures_total == 2  # calibrate of both detectors
    for failure in report.failures:
        assert (failure.step, failure.group, failure.label) == ("step1", "visit_1000", "calibrate")
        assert failure.state == "held" and failure.failure == "out_of_memory"
        assert failure.attempts == 2 and failure.memory_mb == 60
        assert failure.error and "memory limit of 60 MB" in failure.error
    assert report.steps[0].tasks["isr"].succeeded == 2

    result = retry_campaign(sessions, campaign_id, memory_mb=2048)
    assert (result.state, result.groups, result.jobs_raised) == ("running", 1, 2)
    assert manager.run_until_done(campaign_id) == "succeeded"
    with sessions() as session:
        report = read.campaign_report(session, campaign_id)
    assert report.failures == []
    for counts in report.tasks.values():
        assert counts.succeeded == counts.expected > 0
    with sessions() as session:
        jobs = session.scalars(select(JobRow).where(JobRow.label == "calibrate")).all()
        attempts = [
            list(
                session.scalars(
                    select(JobAttemptRow.memory_mb)
                    .where(JobAttemptRow.job_id == job.id)
                    .order_by(JobAttemptRow.attempt)
                )
            )
            for job in jobs
        ]
        isr_attempts = session.scalars(
            select(JobAttemptRow.attempt)
            .join(JobRow, JobRow.id == JobAttemptRow.job_id)
            .where(JobRow.label == "isr")
        ).all()
    assert [job.memory_mb for job in jobs] == [2048, 2048]  # kept in the jobs
    assert attempts == [[60, 60, 2048], [60, 60, 2048]]
    assert list(isr_attempts) == [1, 1]  # succeeded work did not run again
    with sessions() as session:
        events = [
            (e.what, e.from_state, e.to_state, e.action)
            for e in read.campaign_history(session, campaign_id)
        ]
    assert ("step1/visit_1000", "failed", "ready", "retry") in events
    assert ("oom", "failed", "running", "retry") in events
    manager.close()
