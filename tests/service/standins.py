"""Stand-in campaigns for the service tests: rows as the manager leaves them (no
Butler, no engine), in any state an operator action starts from."""

from __future__ import annotations

from pathlib import Path

from skybatch.campaign.models import CampaignGroupRow, CampaignRow, CampaignStepRow
from skybatch.db.state import open_state_db
from skybatch.run.models import JobRow, RunRow
from skybatch.settings import Settings

#: campaign state -> (step states, group states of step1)
PROFILES: dict[str, tuple[tuple[str, str], tuple[str, ...]]] = {
    "running": (("running", "waiting"), ("running", "ready", "ready")),
    "paused": (("running", "waiting"), ("running", "paused")),
    "failed": (("failed", "waiting"), ("succeeded", "failed")),
}


def waiting_campaign(settings: Settings) -> int:
    """A submitted two-step campaign (valid config, nothing run yet)."""
    from skybatch.campaign.config import Campaign

    campaign = Campaign.model_validate(
        {
            "name": "waiting",
            "repo": "/nowhere/repo",
            "inputs": ["In/raw"],
            "policies": {"cleanup_at_end": False},
            "steps": [
                {"name": "step1", "pipeline": "/nowhere/p.yaml#a,b"},
                {"name": "step2", "pipeline": "/nowhere/p.yaml#a,b", "depends_on": ["step1"]},
            ],
        }
    )
    with open_state_db(settings).begin() as session:
        row = CampaignRow(
            name=campaign.name,
            config=campaign.model_dump(mode="json", exclude_unset=True),
            source_path="waiting.yaml",
            state="waiting",
            summary={},
        )
        session.add(row)
        session.flush()
        for position, step in enumerate(campaign.steps):
            session.add(
                CampaignStepRow(
                    campaign_id=row.id, name=step.name, position=position, state="waiting"
                )
            )
        return row.id


def standin_campaign(settings: Settings, state: str = "running", name: str = "standin") -> int:
    """A two-step campaign in ``state`` whose step1 groups have runs with jobs: one
    succeeded, one held out of memory and one held with a Python error per run."""
    steps, groups = PROFILES[state]
    with open_state_db(settings).begin() as session:
        row = CampaignRow(name=name, config={}, source_path=f"{name}.yaml", state=state, summary={})
        session.add(row)
        session.flush()
        step_ids = []
        for position, step_state in enumerate(steps):
            step = CampaignStepRow(
                campaign_id=row.id, name=f"step{position + 1}", position=position, state=step_state
            )
            session.add(step)
            session.flush()
            step_ids.append(step.id)
        for position, group_state in enumerate(groups):
            run_name = f"{name}/{row.id}/step1/g{position}"
            session.add(
                CampaignGroupRow(
                    campaign_id=row.id,
                    step_id=step_ids[0],
                    name=f"g{position}",
                    position=position,
                    data_query=f"visit = {position}",
                    state=group_state,
                    run_name=run_name,
                )
            )
            if group_state == "ready":
                continue
            run = RunRow(
                name=run_name,
                repo="/nowhere/repo",
                pipeline="p.yaml",
                workdir="/nowhere",
                state="running",
                summary={},
            )
            session.add(run)
            session.flush()
            jobs = [
                ("a0", "calibrate", "succeeded", None, None),
                ("a1", "calibrate", "held", "oom", f"MemoryError: job {position} over 512 MB"),
                ("b0", "measure", "held", "error", f"RuntimeError: bad pixels in {position}"),
            ]
            for job_name, label, job_state, failure, error in jobs:
                session.add(
                    JobRow(
                        run_id=run.id,
                        name=job_name,
                        label=label,
                        state=job_state,
                        attempts=1,
                        memory_mb=512,
                        walltime_s=600,
                        exit_code=None if failure is None else 1,
                        failure=failure,
                        error=error,
                    )
                )
        return row.id


def standin_details(settings: Settings, campaign_id: int, logs: Path) -> None:
    """What the dashboard's figures and run page draw, for a :func:`standin_campaign`:
    step2 depends on step1 and its select kept visit 0 and dropped visit 1; each run
    has quanta that ended over an hour with CPU time and peak memory; each held job's
    attempt has a report whose job.log (under ``logs``) ends with its error."""
    from datetime import timedelta

    from sqlalchemy import select

    from skybatch.campaign.selection import SelectionCondition, StepSelection
    from skybatch.db.models import utcnow
    from skybatch.run.models import JobAttemptRow, QuantumRunRow

    start = utcnow() - timedelta(hours=1)
    with open_state_db(settings).begin() as session:
        campaign = session.get(CampaignRow, campaign_id)
        assert campaign is not None
        campaign.config = {
            "steps": [
                {"name": "step1"},
                {"name": "step2", "depends_on": ["step1"], "select": {"from_step": "step1"}},
            ]
        }
        step2 = session.scalar(
            select(CampaignStepRow).where(
                CampaignStepRow.campaign_id == campaign_id, CampaignStepRow.name == "step2"
            )
        )
        assert step2 is not None
        step2.selection = StepSelection(
            condition=SelectionCondition(
                from_step="step1",
                dataset_type="visitSummary",
                where="psf_fwhm_arcsec < 1.2",
                match="all",
            ),
            kept=[{"visit": 0}],
            dropped=[{"visit": 1}],
        )
        runs = session.scalars(
            select(RunRow)
            .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
            .where(CampaignGroupRow.campaign_id == campaign_id)
        )
        for run in runs:
            for job in session.scalars(select(JobRow).where(JobRow.run_id == run.id)):
                for n in range(4):
                    ok = job.state == "succeeded" or n < 3
                    session.add(
                        QuantumRunRow(
                            run_id=run.id,
                            job_id=job.id,
                            attempt=1,
                            quantum_id=f"{job.name}-{n}-{run.id}",
                            task_label=job.label,
                            status="succeeded" if ok else "failed",
                            start=start,
                            end=start + timedelta(minutes=10 * n + run.id),
                            cpu_s=30.0 * (n + 1) * (2 if job.label == "measure" else 1),
                            max_rss_mb=200.0 + 50 * n,
                        )
                    )
                if job.state != "held":
                    continue
                folder = logs / run.name.replace("/", "_") / job.name
                folder.mkdir(parents=True)
                (folder / "job.log").write_text(
                    "".join(f"step {i} done\n" for i in range(80)) + f"{job.error}\n"
                )
                session.add(
                    JobAttemptRow(
                        job_id=job.id,
                        attempt=1,
                        state="held",
                        failure=job.failure,
                        exit_code=job.exit_code,
                        error=job.error,
                        memory_mb=job.memory_mb,
                        max_rss_mb=512.0,
                        cpu_s=42.0,
                        report_path=str(folder / "report.json"),
                        submitted_at=start,
                        finished_at=start + timedelta(minutes=5),
                    )
                )


def standin_backbone(settings: Settings) -> None:
    """An archive holding 4 files of 1 MB (2 online, 2 on tape only) and a site cache
    holding the 2 online ones (one pinned for a day), with a recall to the site
    waiting for the 2 on tape."""
    from datetime import timedelta

    from skybatch.backbone.models import (
        EndpointRow,
        FileRow,
        ReplicaRow,
        StageRequest,
        StageRequestFile,
    )
    from skybatch.db.models import utcnow

    with open_state_db(settings).begin() as session:
        archive = EndpointRow(name="archive", kind="archive", root="/nowhere/archive")
        site = EndpointRow(name="site", kind="site", root="/nowhere/site")
        session.add_all([archive, site])
        session.flush()
        files = [
            FileRow(path=f"raw/{i}.fits", size_bytes=1_000_000, md5="0" * 32) for i in range(4)
        ]
        session.add_all(files)
        session.flush()
        pinned = utcnow() + timedelta(days=1)
        for i, f in enumerate(files):
            on_tape_only = i >= 2
            session.add(
                ReplicaRow(
                    file_id=f.id,
                    endpoint_id=archive.id,
                    state="nearline" if on_tape_only else "online",
                    on_tape=True,
                )
            )
            if not on_tape_only:
                session.add(
                    ReplicaRow(
                        file_id=f.id,
                        endpoint_id=site.id,
                        state="online",
                        pinned_until=pinned if i == 0 else None,
                    )
                )
        recall = StageRequest(
            kind="recall", source_endpoint_id=archive.id, target_endpoint_id=site.id
        )
        session.add(recall)
        session.flush()
        for f in files[2:]:
            session.add(StageRequestFile(request_id=recall.id, file_id=f.id))
