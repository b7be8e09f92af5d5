"""Submission provenance (seed step 4): what was asked, with what, by which software.

The resolved options, the pipeline with every task's config expanded, and the package
versions are written as files, copied into the archive under
``skybatch/provenance/<run>/`` (verified), registered in the backbone catalog and
linked to the run's activity with ``used`` edges.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from skybatch.backbone.catalog import FileRecord
from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import EdgeRelation
from skybatch.backbone.service import Backbone
from skybatch.backbone.transfer import write_verified

__all__ = ["write_submission_provenance"]

PACKAGES = (
    "skybatch",
    "lsst-daf-butler",
    "lsst-pipe-base",
    "lsst-ctrl-mpexec",
    "lsst-pex-config",
    "lsst-resources",
    "lsst-sphgeom",
    "lsst-utils",
    "numpy",
    "astropy",
    "scipy",
    "pyarrow",
    "sqlalchemy",
)


def _versions() -> dict[str, str]:
    """The interpreter, platform and PACKAGES versions this process runs with."""
    return dict(_process_versions())


@functools.cache
def _process_versions() -> dict[str, str]:
    # Once per process: the modules a process imported do not change while it runs
    # (a campaign manager records the same versions for each of its runs).
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _expanded_pipeline(pipeline: str) -> str:
    """The pipeline YAML followed by every task's full config (pex_config syntax)."""
    from lsst.pipe.base import Pipeline

    path, _, labels = pipeline.partition("#")
    pipe = Pipeline.from_uri(pipeline)
    parts = [Path(path).read_text(), f"# subset: {labels or 'all tasks'}"]
    for node in pipe.to_graph().tasks.values():
        parts.append(f"\n# --- config of task {node.label} ({node.task_class_name}) ---")
        parts.append(node.config.saveToString())
    return "\n".join(parts)


def write_submission_provenance(
    backbone: Backbone, workdir: Path, run: str, options: dict[str, Any], pipeline: str
) -> int:
    """Write, archive and register the provenance files; return the run activity id."""
    out = workdir / "provenance"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": json.dumps(options, indent=2, default=str, sort_keys=True),
        "pipeline-expanded.yaml": _expanded_pipeline(pipeline),
        "packages.json": json.dumps(_versions(), indent=2, sort_keys=True),
    }
    archive_name = backbone.archive_name()
    archive = backbone.endpoint(archive_name)
    records = []
    for name, text in files.items():
        local = out / name
        local.write_text(text)
        logical = f"skybatch/provenance/{run}/{name}"
        size, md5 = md5_file(local)
        with local.open("rb") as stream:
            write_verified(stream, archive, logical, (size, md5))
        records.append(
            FileRecord(
                logical,
                size,
                md5,
                dataset_type=f"skybatch_{name.split('.')[0]}",
                run=run,
                producer="submission",
            )
        )
    ids = backbone.catalog.register(records, archive_name)
    activity = backbone.catalog.add_activity("run", run, {"options": options})
    backbone.catalog.add_edges(EdgeRelation.USED, list(ids.values()), activity_id=activity)
    return activity
