"""Job state machine throughput: a DRP-shaped workflow of ~100,000 jobs through the
scheduler on an engine that completes every job at once (no execution at all).

Every job goes pending -> ready -> submitted -> succeeded, each transition checked
against the JobState table and committed to the state database (SQLite in a temporary
home, or ``--db-url``). Prints jobs, transitions, wall seconds and transitions per
second for two sizes, median of ``--repeats`` runs, and how cost grows with size.

    python benchmarks/scheduler_scale.py [--jobs 100000] [--repeats 3] [--db-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from skybatch.db.state import open_state_db
from skybatch.engines.testing import InstantEngine
from skybatch.graph.workflow import JobNode, ResourceRequest, Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobRow, RunRow
from skybatch.run.scheduler import RetryPolicy, Scheduler, SchedulerHooks
from skybatch.settings import load_settings

DETECTORS = 189


def drp_workflow(n_jobs: int) -> Workflow:
    """isr -> calibrate per detector, a visitSummary per visit over its calibrates, a
    coadd per patch over the calibrates of the 3 visits that overlap it."""
    visits = max(1, n_jobs // (2 * DETECTORS + 1 + 2))
    resources = ResourceRequest(memory_mb=1024, walltime_s=600)
    jobs: list[JobNode] = []

    def node(name: str, label: str, deps: list[str]) -> JobNode:
        return JobNode.model_construct(
            name=name,
            label=label,
            quanta=[name],
            task_labels=[label],
            data_ids=[{}],
            inputs=[],
            outputs=[],
            resources=resources,
            depends_on=deps,
        )

    for v in range(visits):
        calibrates = []
        for d in range(DETECTORS):
            jobs.append(node(f"isr-v{v}-d{d}", "isr", []))
            jobs.append(node(f"calibrate-v{v}-d{d}", "calibrate", [f"isr-v{v}-d{d}"]))
            calibrates.append(f"calibrate-v{v}-d{d}")
        jobs.append(node(f"visitSummary-v{v}", "visitSummary", calibrates))
    for p in range(2 * visits):
        v = p // 2
        deps = [
            f"calibrate-v{w}-d{d}"
            for w in range(max(0, v - 1), min(visits, v + 2))
            for d in range(0, DETECTORS, 37)
        ]
        jobs.append(node(f"coadd-p{p}", "coadd", deps))
    return Workflow.of_jobs("bench/scale", jobs, pipeline="drp.yaml")


def run_once(workflow: Workflow, db_url: str | None, root: Path) -> tuple[float, int]:
    settings = load_settings(home=root / "home", db={"url": db_url} if db_url else {})
    sessions = open_state_db(settings)
    with sessions.begin() as session:
        row = RunRow(name=f"bench/scale/{time.monotonic_ns()}", repo="/", pipeline="p", workdir="/")
        session.add(row)
        session.flush()
        run_id = row.id

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        return JobSpec.model_construct(
            run="bench/scale",
            job=job.name,
            attempt=row.attempts,
            quantum_ids=job.quanta,
            report_path="/nonexistent/report.json",
            memory_mb=row.memory_mb,
            walltime_s=row.walltime_s,
        )

    engine = InstantEngine(max_parallel_jobs=2000)
    scheduler = Scheduler(
        sessions, run_id, workflow, engine, SchedulerHooks(make_spec), RetryPolicy(), poll_s=0
    )
    start = time.perf_counter()
    scheduler.create_jobs()
    result = scheduler.run()
    elapsed = time.perf_counter() - start
    assert result.counts == {"succeeded": len(workflow.jobs)}, result.counts
    return elapsed, engine.submitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs of the large workflow")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db-url", default=None, help="state database (default: SQLite)")
    args = parser.parse_args()
    sizes = [args.jobs // 10, args.jobs]
    results = {}
    with tempfile.TemporaryDirectory(prefix="scheduler-scale-") as tmp:
        for n in sizes:
            workflow = drp_workflow(n)
            walls = []
            for i in range(args.repeats):
                wall, _ = run_once(workflow, args.db_url, Path(tmp) / f"{n}-{i}")
                walls.append(wall)
            # pending->ready, ready->submitted, submitted->succeeded (+ the insert)
            transitions = 3 * len(workflow.jobs)
            results[n] = (len(workflow.jobs), transitions, statistics.median(walls))
    print(f"scheduler on an instant engine, {args.db_url or 'SQLite'}; median of {args.repeats}")
    print(f"{'jobs':>8} {'transitions':>12} {'wall s':>8} {'transitions/s':>14} {'µs/job':>8}")
    for jobs, transitions, wall in results.values():
        print(
            f"{jobs:>8} {transitions:>12} {wall:>8.2f} {transitions / wall:>14.0f} "
            f"{1e6 * wall / jobs:>8.1f}"
        )
    (small_jobs, _, small_wall), (large_jobs, _, large_wall) = results.values()
    print(
        f"growth: {large_jobs / small_jobs:.1f}x the jobs took {large_wall / small_wall:.1f}x "
        "the time (target >= 2,000 transitions/s)"
    )


if __name__ == "__main__":
    main()
