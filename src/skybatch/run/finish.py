"""End of pipeline (seed steps 12, 14, 15).

A run whose jobs all succeeded is finished in full: stage back, ingest, catalogs,
cleanup, unpin. A run that stopped with held jobs has the outputs of its succeeded
jobs staged back and ingested (as BPS's final job does), so they are usable and safe
at once; catalogs, cleanup of intermediates (a resumed job may still read them) and
unpinning wait for the resume that finishes the run.

Both are idempotent across a kill at any point (``--resume`` or the campaign manager
runs them again): stage-back and ingest skip what is already in place, and the
clean-up of intermediates first records the datasets it removes in the run's finish
journal (``finish.json``), so a later finish neither ingests them again nor trips over
what a killed Butler prune left (its registry rows gone, its datastore records and
files not yet).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.backbone.replication import stage_back
from skybatch.faults import arm_before, kill_point
from skybatch.graph.workflow import Workflow
from skybatch.ingest.butler import OutputRef, ingest_outputs, outputs_of

from .context import RunContext, RunSummary, read_reports

__all__ = ["FINISH_POINTS", "finish_partial", "finish_run", "inputs_in_use"]

#: The kill points of a run's finish, in order (see :mod:`skybatch.faults`).
FINISH_POINTS = (
    "finish:stage_back",
    "finish:ingest",
    "finish:catalogs",
    "finish:clean",
    "finish:empty_trash",
    "finish:clean_files",
    "finish:unpin",
    "finish:done",
)

_log = logging.getLogger(__name__)


def finish_run(ctx: RunContext, workflow: Workflow, summary: RunSummary) -> None:
    """Stage back, ingest into the Butler, load object catalogs, clean intermediates."""
    kill_point = _Steps(summary)  # each step's seconds go into the run's phases
    reports = read_reports(ctx.workdir)
    kill_point("finish:stage_back")
    # Step 14: outputs from the site cache to the archive (= datastore root), verified.
    _stage_back(ctx)
    # Step 12: register outputs (and init outputs) in the central Butler in place.
    init_refs = [
        OutputRef(**r) for r in json.loads((ctx.workdir / "init-outputs.json").read_text())
    ]
    # Intermediates an earlier, interrupted finish began removing stay removed.
    cleaning = _cleaning(ctx.workdir)
    outputs = [o for o in outputs_of(reports) if o.dataset_id not in cleaning]
    kill_point("finish:ingest")
    summary.outputs_ingested = ingest_outputs(
        ctx.repo, ctx.butler_config, str(ctx.workdir / "graph.qg"), [*init_refs, *outputs]
    )
    kill_point("finish:catalogs")
    summary.catalog_rows = _load_catalogs(ctx, outputs, summary)
    # Step 15: intermediates go from the site cache, the archive and the Butler.
    kill_point("finish:clean")
    summary.cleaned = _clean_intermediates(ctx, outputs, cleaning)
    kill_point("finish:unpin")
    # The inputs staged for this run no longer need to stay pinned on the site, unless
    # another run still running reads them: groups of a campaign run in flight
    # together and share calibrations, reference catalog shards and raws, and an
    # unpinned replica may be evicted under the jobs still reading it. (Those still
    # pinned are unpinned by the last run that reads them, or by the campaign-end
    # cleanup.)
    produced = {o.dataset_id for job in workflow.jobs for o in job.outputs}
    inputs = {f.dataset_id for job in workflow.jobs for f in job.inputs} - produced
    inputs -= inputs_in_use(ctx.sessions, ctx.run)
    staged = ctx.backbone.catalog.files_by_dataset_ids(sorted(inputs))
    ctx.backbone.catalog.pin([f.id for f in staged.values()], ctx.site, None)
    kill_point("finish:done")


class _Steps:
    """The finish's kill points, also timing the step each one starts: its seconds go
    into ``summary.phases`` as the point's name (``finish:ingest``, ...)."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary
        self.current = "finish:reports"
        self.last = time.perf_counter()

    def __call__(self, point: str) -> None:
        now = time.perf_counter()
        phases = self.summary.phases
        phases[self.current] = phases.get(self.current, 0.0) + now - self.last
        self.current, self.last = point, now
        kill_point(point)


def finish_partial(ctx: RunContext, workflow: Workflow, summary: RunSummary) -> None:
    """Stage back and ingest what the succeeded jobs of an unfinished run produced."""
    outputs = outputs_of(read_reports(ctx.workdir))
    if not outputs:
        return
    _stage_back(ctx)
    summary.outputs_ingested = ingest_outputs(
        ctx.repo, ctx.butler_config, str(ctx.workdir / "graph.qg"), outputs
    )


def _stage_back(ctx: RunContext) -> None:
    """Outputs on the site cache to the archive; jobs that staged out to the archive
    themselves (no shared filesystem) left nothing on the site to bring back."""
    if ctx.via_archive:
        return
    stage_back(ctx.backbone, ctx.site, ctx.run)


def _load_catalogs(ctx: RunContext, outputs: list[OutputRef], summary: RunSummary) -> int:
    """Object catalogs; what cannot be loaded becomes a warning of the run, never a failure."""
    from skybatch.ingest.catalog_select import load_run_catalogs

    url = ctx.options.catalog_db_url or f"sqlite:///{ctx.settings.home / 'catalogs.sqlite3'}"
    loaded = load_run_catalogs(str(ctx.repo), url, outputs, ctx.options.catalog_tables)
    for warning in loaded.warnings:
        _log.warning("run %s: %s", ctx.run, warning)
    summary.warnings.extend(loaded.warnings)
    return loaded.total


def _clean_intermediates(ctx: RunContext, outputs: list[OutputRef], cleaning: set[str]) -> int:
    """Remove the run's intermediates from the Butler, the archive and the site cache.

    ``cleaning``: ids an interrupted finish had journaled (and maybe half removed).
    """
    if not ctx.options.intermediates:
        return 0
    from skybatch.backbone.maintenance import delete

    from .caches import repository_butler

    doomed = sorted(
        {o.dataset_id for o in outputs if o.dataset_type in ctx.options.intermediates} | cleaning
    )
    if not doomed:
        return 0
    _journal_cleaning(ctx.workdir, doomed)
    with repository_butler(ctx.repo, writeable=True) as butler:
        refs = [r for i in doomed if (r := butler.get_dataset(i)) is not None]
        # The Butler commits the registry removal, then deletes the files.
        arm_before(butler._datastore, "emptyTrash", "finish:empty_trash")
        if refs:
            butler.pruneDatasets(refs, disassociate=True, unstore=True, purge=True)
        # A prune killed after its commit left datastore records in the trash
        # (dataset ids the registry no longer has): empty them now.
        if len(refs) < len(doomed):
            butler._datastore.emptyTrash(ignore_errors=True)
    kill_point("finish:clean_files")
    files = ctx.backbone.catalog.files_by_dataset_ids(doomed)
    delete(ctx.backbone, list(files.values()))
    return len(doomed)


def inputs_in_use(sessions: sessionmaker[Session], run: str) -> set[str]:
    """Dataset ids that runs other than ``run`` still running read: the inputs in
    their saved workflows (a run not yet that far reads nothing staged yet)."""
    from .models import RunRow, RunState

    with sessions() as session:
        workdirs = session.scalars(
            select(RunRow.workdir).where(RunRow.state == RunState.RUNNING.value, RunRow.name != run)
        ).all()
    used: set[str] = set()
    for workdir in workdirs:
        path = Path(workdir) / "workflow.json"
        try:
            stat = path.stat()
        except OSError:
            continue
        used |= _workflow_inputs(str(path), stat.st_mtime_ns, stat.st_size)
    return used


@functools.lru_cache(maxsize=256)
def _workflow_inputs(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    """The dataset ids a saved workflow reads from outside itself (cached per version
    of the file: a long-lived bookkeeping process finishes many runs while the same
    ones are in flight)."""
    workflow = Workflow.load(Path(path))
    produced = {o.dataset_id for job in workflow.jobs for o in job.outputs}
    return frozenset(f.dataset_id for job in workflow.jobs for f in job.inputs) - produced


_JOURNAL = "finish.json"


def _cleaning(workdir: Path) -> set[str]:
    """Dataset ids whose removal a finish of this run has begun."""
    path = workdir / _JOURNAL
    if not path.exists():
        return set()
    return set(json.loads(path.read_text()).get("cleaning", []))


def _journal_cleaning(workdir: Path, ids: list[str]) -> None:
    """Record (durably, atomically) which intermediates are about to be removed."""
    path = workdir / _JOURNAL
    temp = path.with_name(f".{_JOURNAL}.partial")
    with temp.open("w") as out:
        json.dump({"schema_version": 1, "cleaning": ids}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
