"""Stand-in campaigns for the service tests: rows as the manager leaves them (no
Butler, no engine), in any state an operator action starts from."""

from __future__ import annotations

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
