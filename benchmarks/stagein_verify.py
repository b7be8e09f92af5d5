"""Stage-in cost of checksum verification: first read vs already verified vs none.

A job's stage-in from the site cache (symlink mode) reads no replica nobody verified:
on the first read since a replica's file changed it computes the md5; afterwards the
catalog's record (verified mtime and size) lets it trust the replica with a stat. This
prints, per file-size profile, the median stage-in time over --runs (alternating) of

- ``none``: links with a size check only (what stage-in did before verification),
- ``first read``: every replica checksummed (the catalog's verification record cleared
  first),
- ``verified``: every replica verified earlier (the catalog consulted, no file read),

and the ratios to ``none``. Files are in the page cache, so ``first read`` measures the
md5 cost, not the disk.

    python benchmarks/stagein_verify.py [--runs 5]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from _backbone_setup import make_backbone, make_registered
from sqlalchemy import update

from skybatch.backbone.models import ReplicaRow
from skybatch.backbone.replication import replicate
from skybatch.backbone.service import Backbone
from skybatch.job.spec import FileSpec, JobSpec
from skybatch.job.stagein import stage_in
from skybatch.settings import load_settings

PROFILES = {"large files": (32, 8 * 1024 * 1024), "small files": (1000, 64 * 1024)}
SITE = "site:bench"


def _spec(root: Path, paths: list[str], db_url: str | None) -> JobSpec:
    return JobSpec(
        run="bench",
        job="job",
        qgraph="unused.qg",
        quantum_ids=[],
        butler_config="unused.yaml",
        workdir=str(root / "work"),
        report_path=str(root / "report.json"),
        inputs=[
            FileSpec(dataset_id=str(i), dataset_type="raw", path=p) for i, p in enumerate(paths)
        ],
        site_endpoint=SITE,
        site_root=str(root / "site"),
        archive_root=str(root / "archive"),
        stage_in="symlink",
        db_url=db_url,
    )


def _time_s(spec: JobSpec, datastore: Path) -> float:
    start = time.perf_counter()
    result = stage_in(spec, datastore)
    elapsed = time.perf_counter() - start
    assert len(result.paths) == len(spec.inputs)
    shutil.rmtree(datastore)
    return elapsed


def _forget(backbone: Backbone) -> None:
    """Clear the site replicas' verification record: the next read checksums them."""
    site_id = backbone.catalog.endpoint_row(SITE).id
    with backbone.catalog.sessions.begin() as session:
        session.execute(
            update(ReplicaRow)
            .where(ReplicaRow.endpoint_id == site_id)
            .values(verified_mtime_ns=None, verified_size=None)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the unverified baseline warns once per file
    print(f"stage-in (symlink) from the site cache, median of {args.runs} runs")
    print(
        f"{'profile':<12} {'files':>6} {'MiB':>6} {'none s':>8} {'first read s':>12} "
        f"{'verified s':>10} {'first/none':>10} {'verified/none':>13}"
    )
    for name, (count, size) in PROFILES.items():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            backbone = make_backbone(root)
            files = make_registered(backbone, root, "bench", count, size)
            backbone.add_endpoint(SITE, "site", str(root / "site"), {})
            replicate(backbone, files, SITE)
            paths = [f.path for f in files]
            db_url = load_settings(home=root / "home").database_url()
            forget = partial(_forget, backbone)
            plain, checked = _spec(root, paths, None), _spec(root, paths, db_url)
            times: dict[str, list[float]] = {"none": [], "first": [], "verified": []}
            # The three alternate within each run, so the machine's drift hits them alike.
            for i in range(args.runs):
                times["none"].append(_time_s(plain, root / f"none-{i}"))
                forget()
                times["first"].append(_time_s(checked, root / f"first-{i}"))  # records
                times["verified"].append(_time_s(checked, root / f"verified-{i}"))
            none_s, first_s, verified_s = (statistics.median(t) for t in times.values())
            print(
                f"{name:<12} {count:>6} {count * size / 2**20:>6.0f} {none_s:>8.3f} "
                f"{first_s:>12.3f} {verified_s:>10.3f} {first_s / none_s:>10.1f} "
                f"{verified_s / none_s:>13.1f}"
            )


if __name__ == "__main__":
    main()
