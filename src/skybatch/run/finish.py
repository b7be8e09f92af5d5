"""End of pipeline (seed steps 12, 14, 15).

A run whose jobs all succeeded is finished in full: stage back, ingest, catalogs,
cleanup, unpin. A run that stopped with held jobs has the outputs of its succeeded
jobs staged back and ingested (as BPS's final job does), so they are usable and safe
at once; catalogs, cleanup of intermediates (a resumed job may still read them) and
unpinning wait for the resume that finishes the run. Both are idempotent.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from skybatch.backbone.replication import stage_back
from skybatch.graph.workflow import Workflow
from skybatch.ingest.butler import OutputRef, ingest_outputs, outputs_of

if TYPE_CHECKING:
    from .driver import RunSummary, _Context

__all__ = ["finish_partial", "finish_run"]

_log = logging.getLogger(__name__)


def finish_run(ctx: _Context, workflow: Workflow, summary: RunSummary) -> None:
    """Stage back, ingest into the Butler, load object catalogs, clean intermediates."""
    from .driver import read_reports

    reports = read_reports(ctx.workdir)
    # Step 14: outputs from the site cache to the archive (= datastore root), verified.
    _stage_back(ctx)
    # Step 12: register outputs (and init outputs) in the central Butler in place.
    init_refs = [
        OutputRef(**r) for r in json.loads((ctx.workdir / "init-outputs.json").read_text())
    ]
    outputs = outputs_of(reports)
    summary.outputs_ingested = ingest_outputs(
        ctx.repo, ctx.butler_config, str(ctx.workdir / "graph.qg"), [*init_refs, *outputs]
    )
    summary.catalog_rows = _load_catalogs(ctx, outputs, summary)
    # Step 15: intermediates go from the site cache, the archive and the Butler.
    summary.cleaned = _clean_intermediates(ctx, outputs)
    # The inputs staged for this run no longer need to stay pinned on the site.
    # (A pin is one expiry time per replica, not per user: an input another active
    # run also staged loses its pin too and becomes evictable while that run still
    # runs. Pins owned per run/campaign are the campaign manager's cleanup work.)
    produced = {o.dataset_id for job in workflow.jobs for o in job.outputs}
    inputs = {f.dataset_id for job in workflow.jobs for f in job.inputs} - produced
    staged = ctx.backbone.catalog.files_by_dataset_ids(sorted(inputs))
    ctx.backbone.catalog.pin([f.id for f in staged.values()], ctx.site, None)


def finish_partial(ctx: _Context, workflow: Workflow, summary: RunSummary) -> None:
    """Stage back and ingest what the succeeded jobs of an unfinished run produced."""
    from .driver import read_reports

    outputs = outputs_of(read_reports(ctx.workdir))
    if not outputs:
        return
    _stage_back(ctx)
    summary.outputs_ingested = ingest_outputs(
        ctx.repo, ctx.butler_config, str(ctx.workdir / "graph.qg"), outputs
    )


def _stage_back(ctx: _Context) -> None:
    """Outputs on the site cache to the archive; jobs that staged out to the archive
    themselves (no shared filesystem) left nothing on the site to bring back."""
    if ctx.via_archive:
        return
    stage_back(ctx.backbone, ctx.site, ctx.run)


def _load_catalogs(ctx: _Context, outputs: list[OutputRef], summary: RunSummary) -> int:
    """Object catalogs; what cannot be loaded becomes a warning of the run, never a failure."""
    from skybatch.ingest.catalog_select import load_run_catalogs

    url = ctx.options.catalog_db_url or f"sqlite:///{ctx.settings.home / 'catalogs.sqlite3'}"
    loaded = load_run_catalogs(str(ctx.repo), url, outputs, ctx.options.catalog_tables)
    for warning in loaded.warnings:
        _log.warning("run %s: %s", ctx.run, warning)
    summary.warnings.extend(loaded.warnings)
    return loaded.total


def _clean_intermediates(ctx: _Context, outputs: list[OutputRef]) -> int:
    if not ctx.options.intermediates:
        return 0
    from lsst.daf.butler import Butler

    from skybatch.backbone.maintenance import delete

    doomed = [o for o in outputs if o.dataset_type in ctx.options.intermediates]
    if not doomed:
        return 0
    with Butler.from_config(str(ctx.repo), writeable=True) as butler:
        refs = [r for o in doomed if (r := butler.get_dataset(o.dataset_id)) is not None]
        butler.pruneDatasets(refs, disassociate=True, unstore=True, purge=True)
    files = ctx.backbone.catalog.files_by_dataset_ids([o.dataset_id for o in doomed])
    delete(ctx.backbone, list(files.values()))
    return len(doomed)
