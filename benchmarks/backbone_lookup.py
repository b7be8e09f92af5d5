"""Catalog look-ups for 100,000 files: by dataset id, by path, by run, by data id.

Fills a fresh catalog (SQLite by default, or --db-url) with N files, then times the
batch look-up of all N by dataset id and by path, one run's files, and one data id
(median of --runs). Target: the 100,000 dataset-id batch in under 1 s.

    python benchmarks/backbone_lookup.py [--files 100000] [--runs 5] [--db-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from skybatch.backbone.catalog import Catalog, FileRecord
from skybatch.db.engine import make_engine, session_factory, upgrade


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db-url", default=None, help="an EMPTY database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{Path(tmp) / 'catalog.sqlite3'}"
        upgrade(url)
        catalog = Catalog(session_factory(make_engine(url)))
        catalog.add_endpoint("archive", "archive", tmp, {})
        records = [
            FileRecord(
                path=f"run{i % 100}/calexp/{i // 189}/calexp_{i}.fits",
                size_bytes=1000 + i,
                md5=f"{i:032x}",
                dataset_id=str(uuid.uuid4()),
                dataset_type="calexp",
                data_id={"instrument": "DemoCam", "visit": i // 189, "detector": i % 189},
                run=f"run{i % 100}",
            )
            for i in range(args.files)
        ]
        start = time.perf_counter()
        catalog.register(records, "archive")
        fill = time.perf_counter() - start
        ids = [r.dataset_id for r in records if r.dataset_id]
        paths = [r.path for r in records]
        assert len(catalog.files_by_dataset_ids(ids)) == args.files
        by_id = timed(lambda: catalog.files_by_dataset_ids(ids), args.runs)
        by_path = timed(lambda: catalog.files_by_paths(paths), args.runs)
        by_run = timed(lambda: catalog.files(run="run7"), args.runs)
        one = {"instrument": "DemoCam", "visit": 42, "detector": 42 % 189}
        by_data_id = timed(lambda: catalog.files(data_id=one), args.runs)
        backend = url.split(":", 1)[0]
        print(f"catalog look-ups, {args.files:,} files, {backend}, median of {args.runs} runs")
        print(
            f"  register (bulk insert + replicas): {fill:8.2f} s ({args.files / fill:,.0f} files/s)"
        )
        print(f"  all {args.files:,} by dataset id:   {by_id:8.3f} s (target < 1 s)")
        print(f"  all {args.files:,} by path:         {by_path:8.3f} s")
        print(f"  one run ({args.files // 100:,} files):        {by_run * 1000:8.1f} ms")
        print(f"  one data id:                       {by_data_id * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
