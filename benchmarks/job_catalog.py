"""The job's catalog transaction: what registering one job's outputs costs.

Each job ends with one transaction in the state database (``skybatch.job.stageout``):
its output files with their verified site replicas, one provenance activity per
quantum, its wasGeneratedBy and used edges, and the check that its attempt is still
the current one. This prints the CPU milliseconds of the job's process per job (CPU
time: robust to other load on a shared machine; median over ``--jobs`` jobs of a
DRP-shaped job: one quantum, three outputs, two inputs; ``--runs`` fresh databases)
against a floor run in the same invocation: the same rows written with the sqlite3
module alone, in one transaction, with no ORM or SQLAlchemy Core in between.

    python benchmarks/job_catalog.py [--jobs 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import insert

from skybatch.backbone.catalog import FileRecord
from skybatch.backbone.service import Backbone
from skybatch.db.state import open_state_db
from skybatch.job import stageout
from skybatch.job.cache import enable_process_cache
from skybatch.job.spec import JobSpec, OutputFileReport, QuantumReport, RuntimeStats
from skybatch.run.models import JobRow, RunRow
from skybatch.settings import load_settings

OUTPUTS = ("postISRCCD", "isr_metadata", "isr_log")


def _world(root: Path, n_inputs: int, n_jobs: int) -> tuple[str, list[FileRecord]]:
    settings = load_settings(home=root / "home")
    backbone = Backbone.from_settings(settings)
    for name, kind in (("archive", "archive"), ("site:x", "site")):
        (root / name).mkdir()
        backbone.add_endpoint(name, kind, str(root / name))
    inputs = [
        FileRecord(
            path=f"raw/{i}.fits",
            size_bytes=10,
            md5="0" * 32,
            dataset_id=str(uuid.uuid4()),
            dataset_type="raw",
            data_id={"visit": i},
            run="raw",
            producer="ingest",
        )
        for i in range(n_inputs)
    ]
    backbone.catalog.register(inputs, "archive")
    # The jobs' rows, each running its first attempt: the transaction claims it.
    with open_state_db(settings).begin() as session:
        run = RunRow(name="r", repo="repo", pipeline="p", workdir="w")
        session.add(run)
        session.flush()
        session.execute(
            insert(JobRow),
            [
                {
                    "run_id": run.id, "name": f"isr_{j}", "label": "isr", "state": "running",
                    "attempts": 1, "memory_mb": 1, "walltime_s": 60,
                }
                for j in range(n_jobs)
            ],
        )  # fmt: skip
    return settings.database_url(), inputs


def _job(root: Path, db_url: str, inputs: list[FileRecord], j: int) -> tuple[Any, ...]:
    quantum = uuid.uuid4()
    spec = JobSpec(
        run="r",
        job=f"isr_{j}",
        qgraph="g",
        quantum_ids=[str(quantum)],
        butler_config="b",
        workdir="w",
        report_path="r",
        db_url=db_url,
        site_endpoint="site:x",
        site_root=str(root / "site:x"),
        job_id=j + 1,
    )
    outputs = [
        OutputFileReport(
            dataset_id=str(uuid.uuid4()),
            dataset_type=t,
            storage_class="X",
            data_id={"visit": j},
            run="r",
            path=f"r/{t}/{j}.fits",
            size_bytes=5,
            md5="1" * 32,
            generated_by=str(quantum),
        )
        for t in OUTPUTS
    ]
    for output in outputs:
        path = root / "site:x" / output.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"12345")
    now = datetime.now(UTC)
    stats = RuntimeStats(start=now, end=now, wall_s=1, cpu_s=1, max_rss_mb=1)
    refs = [SimpleNamespace(id=uuid.UUID(inputs[(j + k) % len(inputs)].dataset_id)) for k in (0, 1)]
    item = SimpleNamespace(
        quantum_id=quantum,
        quantum=SimpleNamespace(inputs={"raw": refs}),
        report=QuantumReport(
            quantum_id=str(quantum),
            task_label="isr",
            data_id={"visit": j},
            status="succeeded",
            stats=stats,
        ),
        provenance=None,
    )
    return spec, outputs, item


def skybatch_ms(root: Path, jobs: int) -> float:
    db_url, inputs = _world(root, 2000, jobs)
    enable_process_cache()
    walls = []
    for j in range(jobs):
        spec, outputs, item = _job(root, db_url, inputs, j)
        start = time.process_time()
        result = stageout.StageOutResult(endpoint="site:x")
        register = cast(Any, stageout)._register
        register(spec, root / "site:x", "site:x", outputs, [item], result)
        walls.append(time.process_time() - start)
    stageout._forget_engines()
    return statistics.median(walls) * 1e3


def sqlite3_floor_ms(root: Path, jobs: int) -> float:
    """The same rows (files, replicas, activity, edges) with the sqlite3 module alone."""
    db_url, inputs = _world(root, 2000, jobs)
    db = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    walls = []
    for j in range(jobs):
        spec, outputs, item = _job(root, db_url, inputs, j)
        now = datetime.now(UTC).isoformat()
        start = time.process_time()
        db.execute("BEGIN IMMEDIATE")
        claimed = db.execute(
            "UPDATE jobs SET updated_at = ? WHERE id = ? AND attempts = 1"
            " AND state IN ('submitted', 'running')",
            (now, spec.job_id),
        )
        assert claimed.rowcount == 1
        ids = [
            db.execute(
                "INSERT INTO bb_file (path, size_bytes, md5, dataset_id, dataset_type, data_id,"
                " run, producer, created_at) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
                (
                    o.path,
                    o.size_bytes,
                    o.md5,
                    o.dataset_id,
                    o.dataset_type,
                    "{}",
                    o.run,
                    f"job:{spec.job}",
                    now,
                ),
            ).fetchone()[0]
            for o in outputs
        ]
        db.executemany(
            "INSERT INTO bb_replica (file_id, endpoint_id, state, on_tape, last_access,"
            " created_at, verified_at, verified_mtime_ns, verified_size)"
            " VALUES (?, 2, 'online', 0, ?, ?, ?, 1, 5)",
            [(i, now, now, now) for i in ids],
        )
        activity = db.execute(
            "INSERT INTO bb_activity (kind, name, info, started_at, finished_at)"
            " VALUES ('quantum', ?, '{}', ?, ?) RETURNING id",
            (str(item.quantum_id), now, now),
        ).fetchone()[0]
        used = [str(r.id) for r in item.quantum.inputs["raw"]]
        marks = ",".join("?" * len(used))
        used_ids = [
            r[0] for r in db.execute(f"SELECT id FROM bb_file WHERE dataset_id IN ({marks})", used)
        ]
        db.executemany(
            "INSERT INTO bb_provenance (relation, file_id, activity_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            [("wasGeneratedBy", i, activity, now) for i in ids]
            + [("used", i, activity, now) for i in used_ids],
        )
        db.execute("COMMIT")
        walls.append(time.process_time() - start)
    db.close()
    return statistics.median(walls) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per run")
    parser.add_argument("--runs", type=int, default=3, help="fresh databases (median shown)")
    args = parser.parse_args()
    sky, floor = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="job-catalog-") as tmp:
            sky.append(skybatch_ms(Path(tmp) / "a", args.jobs))
            floor.append(sqlite3_floor_ms(Path(tmp) / "b", args.jobs))
    s, f = statistics.median(sky), statistics.median(floor)
    shape = f"{args.jobs} jobs x {args.runs} runs"
    print(f"job catalog transaction, SQLite, {shape} (median CPU ms per job)")
    print(f"  skybatch (stageout._register)   {s:6.2f} ms/job")
    print(f"  sqlite3 module alone (floor)    {f:6.2f} ms/job")
    print(f"  ratio                           {s / f:6.2f}x the floor")


if __name__ == "__main__":
    main()
