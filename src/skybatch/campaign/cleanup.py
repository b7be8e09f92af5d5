"""Campaign-end cleanup (seed step 16), run once a campaign succeeded or was cancelled.

Targets (the campaign's ``policies.cleanup_at_end``):

- ``site_cache``: the files the campaign's runs read or wrote on the compute site's
  cache (inputs such as raws, calibrations and reference catalog shards, and
  outputs already staged back) are unpinned and evicted, except those another
  active campaign or a running run still uses (their pins are left alone). Eviction
  never drops the last online copy of a file.
- ``workdirs``: the runs' working directories (graphs, job specs, logs) are removed.
- ``intermediates``: datasets of the steps' intermediate dataset types still in the
  campaign's output runs (left by runs that never finished) are removed from the
  Butler and the backbone.

Every part is idempotent: a manager killed during the cleanup repeats it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.backbone.service import Backbone
from skybatch.settings import Settings

from .config import Campaign
from .models import CampaignGroupRow, CampaignRow, CampaignStepRow
from .render import format_cleanup
from .states import ACTIVE, State

__all__ = ["cleanup_campaign", "format_cleanup"]

_log = logging.getLogger(__name__)

#: Campaign states whose runs may still read their files.
_USING = {*ACTIVE, State.PAUSED, State.FAILED}


def cleanup_campaign(settings: Settings, campaign_id: int, campaign: Campaign) -> dict[str, Any]:
    """Clean what ``campaign`` left, per its policy; return what was freed."""
    backbone = Backbone.from_settings(settings)
    try:
        sessions = backbone.catalog.sessions
        targets = campaign.policies.cleanup_targets
        summary: dict[str, Any] = {"targets": list(targets)}
        runs = _runs(sessions, [campaign_id])
        _settle_runs(sessions, [run.name for run in runs])
        if "intermediates" in targets:
            summary["intermediates_removed"] = _intermediates(backbone, campaign_id, campaign)
        if "site_cache" in targets:
            summary.update(_site_cache(settings, backbone, campaign_id, campaign, runs))
        if "workdirs" in targets:
            summary.update(_workdirs(settings, runs))
        return summary
    finally:
        # Its database connections (and their SQLite page caches) go with it: a
        # manager cleans up every campaign that ends, for as long as it runs.
        backbone.close()


def _settle_runs(sessions: sessionmaker[Session], names: list[str]) -> None:
    """Runs a cancelled campaign left running (its manager was not there to stop them)
    are marked cancelled: nothing will resume them."""
    from skybatch.run.models import RunRow, RunState
    from skybatch.run.states import change_run_state

    if not names:
        return
    with sessions.begin() as session:
        for run in session.scalars(
            select(RunRow).where(RunRow.name.in_(names), RunRow.state == RunState.RUNNING.value)
        ):
            change_run_state(run, RunState.CANCELLED)
            run.message = "stopped: its campaign ended"


def _runs(sessions: sessionmaker[Session], campaign_ids: Iterable[int]) -> list[Any]:
    """The run rows of the campaigns' groups (those that got as far as a run)."""
    from skybatch.run.models import RunRow

    ids = list(campaign_ids)
    if not ids:
        return []
    with sessions() as session:
        return list(
            session.scalars(
                select(RunRow)
                .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
                .where(CampaignGroupRow.campaign_id.in_(ids))
            )
        )


def _workflow_files(runs: Iterable[Any]) -> set[str]:
    """Dataset ids of every file the runs' jobs read or wrote."""
    from skybatch.graph.workflow import Workflow

    ids: set[str] = set()
    for run in runs:
        path = Path(run.workdir) / "workflow.json"
        if not path.is_file():
            continue
        for job in Workflow.load(path).jobs:
            ids.update(f.dataset_id for f in job.inputs)
            ids.update(f.dataset_id for f in job.outputs)
    return ids


def _site_cache(
    settings: Settings, backbone: Backbone, campaign_id: int, campaign: Campaign, runs: list[Any]
) -> dict[str, Any]:
    from skybatch.backbone.maintenance import evict
    from skybatch.run.models import RunRow

    sites = {run.site for run in runs if run.site} or {campaign.site.name}
    known = {e.name for e in backbone.catalog.endpoints()}
    sessions = backbone.catalog.sessions
    with sessions() as session:
        others = list(
            session.scalars(
                select(CampaignRow.id).where(
                    CampaignRow.id != campaign_id,
                    CampaignRow.state.in_([s.value for s in _USING]),
                )
            )
        )
        mine = {run.name for run in runs}
        running = [
            r
            for r in session.scalars(select(RunRow).where(RunRow.state == "running"))
            if r.name not in mine
        ]
    shared_runs = {r.name: r for r in [*_runs(sessions, others), *running]}
    shared = _workflow_files(shared_runs.values())
    used = _workflow_files(runs)
    files = backbone.catalog.files_by_dataset_ids(sorted(used))
    out: dict[str, Any] = {
        "site": ", ".join(sorted(sites)),
        "unpinned": 0,
        "evicted": 0,
        "evicted_bytes": 0,
        "kept_shared": 0,
        "kept_last_copy": 0,
    }
    for site in sorted(sites & known):
        placed = backbone.catalog.placements([f.id for f in files.values()], site)
        mine_only = [p.file for p in placed if p.file.dataset_id not in shared]
        out["kept_shared"] += len(placed) - len(mine_only)
        backbone.catalog.pin([f.id for f in mine_only], site, None)
        out["unpinned"] += len(mine_only)
        report = evict(backbone, site, mine_only)
        out["evicted"] += report.evicted
        out["evicted_bytes"] += report.bytes
        out["kept_last_copy"] += report.skipped_last_copy
    return out


def _workdirs(settings: Settings, runs: list[Any]) -> dict[str, Any]:
    root = (settings.home / "runs").resolve()
    removed = freed = 0
    for run in runs:
        workdir = Path(run.workdir).resolve()
        if not workdir.is_dir() or root not in workdir.parents:
            continue  # never delete outside skybatch's own run directories
        freed += sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())
        shutil.rmtree(workdir, ignore_errors=True)
        removed += 1
    return {"workdirs_removed": removed, "workdir_bytes": freed}


def _intermediates(backbone: Backbone, campaign_id: int, campaign: Campaign) -> int:
    from lsst.daf.butler import Butler

    from skybatch.backbone.maintenance import delete

    with backbone.catalog.sessions() as session:
        rows = session.execute(
            select(CampaignStepRow.name, CampaignGroupRow.run_name)
            .join(CampaignGroupRow, CampaignGroupRow.step_id == CampaignStepRow.id)
            .where(CampaignStepRow.campaign_id == campaign_id)
        ).all()
    runs_of: dict[str, list[str]] = {}
    for step, run in rows:
        runs_of.setdefault(step, []).append(run)
    removed = 0
    with Butler.from_config(str(campaign.repo), writeable=True) as butler:
        existing = set(butler.collections.query("*"))
        for step_name, runs in runs_of.items():
            types = campaign.policies_for(step_name).intermediates
            runs = [r for r in runs if r in existing]
            if not types or not runs:
                continue
            for dataset_type in types:
                try:
                    refs = butler.query_datasets(
                        dataset_type, collections=runs, find_first=False, limit=None, explain=False
                    )
                except Exception as exc:  # e.g. the dataset type was never registered
                    _log.debug("no %s to clean in %s: %s", dataset_type, runs, exc)
                    continue
                if not refs:
                    continue
                butler.pruneDatasets(refs, disassociate=True, unstore=True, purge=True)
                files = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
                delete(backbone, list(files.values()))
                removed += len(refs)
    return removed
