"""Campaign manager throughput: a synthetic campaign of ~100,000 jobs through the
campaign, step, group and job state machines on an engine that completes every job at
once, then the time of ``campaign status`` and ``campaign report`` at that size.

What is real: the campaign is submitted with :func:`skybatch.campaign.submit.submit_campaign`
(validated, stored, its files archived as provenance) against an empty Butler
repository; the manager's own pass (:meth:`skybatch.campaign.manager.Manager.run_pass`)
advances it, so every campaign, step and group transition goes through
:func:`skybatch.campaign.states.change_state` with its event row; each group's jobs go
through the real :class:`skybatch.run.scheduler.Scheduler` (pending -> ready ->
submitted -> succeeded, each checked against the JobState table and committed).

What stands in (the manager's ``expander`` and ``executor`` injection points): each
step expands into half of ``--groups`` groups without reading the Butler, and a
group's run is a synthetic DRP-shaped workflow of ``--jobs-per-group`` jobs (step1:
isr -> calibrate per detector, a visitSummary over the calibrates; step2: a warp per
visit, a coadd over the warps) on :class:`skybatch.engines.testing.InstantEngine` instead of
expansion + the local engine through :func:`skybatch.run.driver.submit_run`. The run
row and its summary are written as the driver writes them, and one ``quantum_runs``
row per job and attempt (CPU seconds, peak memory) as ingesting the job reports
would, so the report aggregates over as many rows as a real campaign of that size.

Prints, per size: jobs, groups, transitions (job + group + step + campaign), wall
seconds and transitions per second (target >= 2,000/s on SQLite); then at the largest
size the median of ``--timings`` calls of the ``campaign_status`` and
``campaign_report`` functions and the wall time of the CLI commands
``skybatch --home H campaign status ID``, ``campaign report ID --json`` and
``campaign report ID`` run as subprocesses, median of ``--timings`` runs each (target
< 1 s each). ``--fail-every N``
makes one job of every Nth group of the last step fail (held after its retries), so
the report lists failures and the campaign ends failed.

    python benchmarks/manager_scale.py [--groups 1000] [--jobs-per-group 100]
        [--repeats 3] [--timings 5] [--db-url URL] [--fail-every N]

``--groups`` is the large size's groups (half per step; the small size has a tenth);
``--db-url`` must name an empty database, migrated (``skybatch --db-url URL db
upgrade``): the archive endpoint of the campaign's repository is recorded there.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

import skybatch.demo
from skybatch.campaign.config import Campaign, Step
from skybatch.campaign.execute import GroupOutcome
from skybatch.campaign.expansion import GroupSpec, StepExpansion
from skybatch.campaign.manager import Manager
from skybatch.campaign.models import CampaignEventRow
from skybatch.campaign.report import campaign_report, campaign_status
from skybatch.campaign.submit import submit_campaign
from skybatch.db.models import utcnow
from skybatch.db.state import open_state_db
from skybatch.engines.testing import InstantEngine
from skybatch.graph.workflow import JobNode, ResourceRequest, Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.models import JobRow, QuantumRunRow, RunRow, RunState
from skybatch.run.scheduler import RetryPolicy, Scheduler, SchedulerHooks
from skybatch.run.states import change_run_state
from skybatch.settings import Settings, load_settings

PIPELINE = Path(skybatch.demo.__file__).parent / "pipelines" / "demo_drp.yaml"

CAMPAIGN_YAML = """\
name: scale
description: Synthetic campaign of the manager_scale benchmark.
repo: repo
inputs: [Scale/raw]
query: "instrument = 'DemoCam'"
engine: {{name: local, workers: {parallel}}}
policies:
  retries: {{max_attempts: 2}}
  cleanup_at_end: false
steps:
  - name: step1
    pipeline: {pipeline}#step1
    split: {{by: visit}}
  - name: step2
    pipeline: {pipeline}#step2
    depends_on: [step1]
    split: {{by: patch}}
"""

#: Per step: the per-item task chain and the task gathering them.
SHAPES = {"step1": (("isr", "calibrate"), "visitSummary"), "step2": (("makeWarp",), "coadd")}


def group_workflow(run: str, step: str, n_jobs: int, fail: bool) -> Workflow:
    """``n_jobs`` jobs: chains of the step's per-item tasks, then one gathering job
    depending on the last task of every chain (``fail``: the first job fails)."""
    chain, gather = SHAPES[step]
    resources = ResourceRequest(memory_mb=1024, walltime_s=600)
    jobs: list[JobNode] = []

    def node(name: str, label: str, deps: list[str]) -> JobNode:
        if fail and not jobs:
            name = f"fail-{name}"
        return JobNode.model_construct(
            name=name,
            label=label,
            quanta=[name],
            task_labels=[label],
            data_ids=[{}],
            inputs=[],
            outputs=[],
            dimensions=[],
            resources=resources,
            depends_on=deps,
        )

    ends = []
    item = 0
    while len(jobs) < n_jobs - 1:
        previous: list[str] = []
        for label in chain[: n_jobs - 1 - len(jobs)]:
            job = node(f"{label}-{item}", label, previous)
            jobs.append(job)
            previous = [job.name]
        ends.append(previous[0])
        item += 1
    jobs.append(node(gather, gather, ends))
    return Workflow.of_jobs(run, jobs, pipeline=str(PIPELINE))


def expander(n_groups: int) -> Callable[[Campaign, Step, Mapping[str, Sequence[str]]], Any]:
    """``n_groups`` groups per step, named and queried as a split by a dimension would."""

    def expand(campaign: Campaign, step: Step, runs_of: Mapping[str, Sequence[str]]) -> Any:
        dimension = "visit" if step.name == "step1" else "patch"
        query = campaign.query_for(step)
        return StepExpansion(
            [
                GroupSpec(f"{dimension}-{i}", f"({query}) AND ({dimension} = {i})")
                for i in range(n_groups)
            ]
        )

    return expand


@dataclass
class Executor:
    """A group's run: the synthetic workflow through the real scheduler on an instant
    engine (the manager's ``executor``, standing in for :func:`run_group`)."""

    sessions: sessionmaker[Session]
    jobs_per_group: int
    fail_every: int = 0
    last_step: str = "step2"

    def __call__(
        self,
        settings: Settings,
        options: Any,
        *,
        progress: Callable[[int, int], None] | None = None,
        stop: Callable[[], bool] | None = None,
        after_restart: bool = False,
    ) -> GroupOutcome:
        run = options.output_run
        if stop is not None and stop():
            return GroupOutcome("stopped", f"run {run} was not started: the group was cancelled")
        _, _, step, group = run.rsplit("/", 3)
        index = int(group.rsplit("-", 1)[1])
        fail = bool(self.fail_every) and step == self.last_step and index % self.fail_every == 0
        workflow = group_workflow(run, step, self.jobs_per_group, fail)
        with self.sessions.begin() as session:
            row = RunRow(
                name=run,
                repo=str(options.repo),
                pipeline=options.pipeline,
                input_collections=options.inputs,
                data_query=options.query,
                engine=InstantEngine.name,
                workdir="/nowhere",
                state=RunState.RUNNING.value,
                options={},
                summary={"quanta_per_task": workflow.quanta_per_task, "expansion_s": 0.0},
                started_at=utcnow(),
            )
            session.add(row)
            session.flush()
            run_id = row.id

        def make_spec(job: JobNode, row: JobRow) -> JobSpec:
            # Every field with a default factory given: pydantic inspects a factory's
            # signature on each call, which would cost more than the bookkeeping.
            return JobSpec.model_construct(
                run=run,
                job=job.name,
                attempt=row.attempts,
                qgraph="/nowhere/graph.qg",
                quantum_ids=job.quanta,
                butler_config="/nowhere/butler.yaml",
                workdir="/nowhere",
                report_path="/nonexistent/report.json",
                inputs=[],
                outputs=[],
                env_allow_list=[],
                memory_mb=row.memory_mb,
                walltime_s=row.walltime_s,
            )

        engine = InstantEngine(max_parallel_jobs=options.workers or 1000)
        hooks = SchedulerHooks(make_spec, progress=progress or (lambda done, total: None))
        policy = RetryPolicy(options.max_attempts, options.memory_factor, options.memory_cap_mb)
        scheduler = Scheduler(self.sessions, run_id, workflow, engine, hooks, policy, poll_s=0)
        scheduler.create_jobs()
        result = scheduler.run()
        engine.close()
        state = RunState.SUCCEEDED.value if result.succeeded else RunState.FAILED.value
        with self.sessions.begin() as session:
            # One executed quantum per job and attempt, as ingesting the job reports
            # records them (the newest attempt of a succeeded job succeeded).
            jobs = session.execute(
                select(JobRow.id, JobRow.label, JobRow.attempts, JobRow.state).where(
                    JobRow.run_id == run_id, JobRow.attempts > 0
                )
            ).all()
            quanta = []
            for job in jobs:
                quantum_id = str(uuid.uuid4())
                for attempt in range(1, job.attempts + 1):
                    ok = job.state == "succeeded" and attempt == job.attempts
                    quanta.append(
                        {
                            "run_id": run_id,
                            "job_id": job.id,
                            "attempt": attempt,
                            "quantum_id": quantum_id,
                            "task_label": job.label,
                            "data_id": {},
                            "status": "succeeded" if ok else "failed",
                            "cpu_s": 1.5,
                            "max_rss_mb": 512.0 + (job.id % 512),
                            "error": None if ok else "RuntimeError: synthetic failure",
                        }
                    )
            session.execute(insert(QuantumRunRow), quanta)
            live = session.get(RunRow, run_id)
            assert live is not None
            change_run_state(live, RunState(state))
            live.summary = {**live.summary, "jobs": result.counts}
        jobs_text = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
        if result.succeeded:
            n = sum(workflow.quanta_per_task.values())
            return GroupOutcome("succeeded", f"run {run} succeeded: {n} quanta ({jobs_text})")
        return GroupOutcome("failed", f"run {run} {state}: jobs {jobs_text}")


@dataclass
class Drive:
    campaign_id: int
    home: Path
    state: str
    jobs: int
    groups: int
    job_transitions: int
    campaign_transitions: int
    wall_s: float

    @property
    def transitions(self) -> int:
        return self.job_transitions + self.campaign_transitions


def campaign_file(root: Path, parallel: int) -> Path:
    """The campaign file, beside a Butler repository without data (validation checks
    that its input collection exists; nothing reads its datasets)."""
    from lsst.daf.butler import Butler

    Butler.makeRepo(str(root / "repo"))
    with Butler.from_config(str(root / "repo"), writeable=True) as butler:
        butler.collections.register("Scale/raw")
    path = root / "campaign.yaml"
    path.write_text(CAMPAIGN_YAML.format(parallel=parallel, pipeline=PIPELINE))
    return path


def drive(
    path: Path, home: Path, groups: int, jobs_per_group: int, db_url: str | None, fail: int
) -> Drive:
    """Submit the campaign, run the manager's pass to the end, count what happened."""
    settings = load_settings(home=home, db=_db(db_url))
    sessions = open_state_db(settings)
    submitted = submit_campaign(settings, path)
    manager = Manager(
        settings,
        say=lambda text: None,
        executor=Executor(sessions, jobs_per_group, fail_every=fail),
        expander=expander(groups // 2),
    )
    start = time.perf_counter()
    report = manager.run_pass()
    wall = time.perf_counter() - start
    state = manager.state_of(submitted.id)
    assert report.groups_run == 2 * (groups // 2), report
    runs = select(RunRow.id).where(RunRow.name.like(f"scale/{submitted.id}/%"))
    with sessions() as session:
        n_jobs, started, attempts, succeeded = session.execute(
            select(
                func.count(),
                func.count().filter(JobRow.attempts > 0),
                func.coalesce(func.sum(JobRow.attempts), 0),
                func.count().filter(JobRow.state == "succeeded"),
            ).where(JobRow.run_id.in_(runs))
        ).one()
        events = session.scalar(
            select(func.count()).where(
                CampaignEventRow.campaign_id == submitted.id, CampaignEventRow.from_state != ""
            )
        )
    # A started job went pending->ready once; each attempt ready->submitted->(succeeded
    # or failed); each failed attempt then ->ready (a retry) or ->held (its last).
    job_transitions = started + 2 * attempts + (attempts - succeeded)
    return Drive(
        submitted.id, home, state, n_jobs, report.groups_run, job_transitions, events or 0, wall
    )


def timed(call: Callable[[], Any], n: int) -> float:
    walls = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def cli_wall(home: Path, db_url: str | None, n: int, *args: str) -> tuple[float, int]:
    """Median wall seconds of ``n`` runs of ``skybatch --home HOME ARGS`` as a
    subprocess (interpreter start and imports included); output size."""
    exe = shutil.which("skybatch", path=str(Path(sys.executable).parent)) or "skybatch"
    command = [exe, "--home", str(home), *(["--db-url", db_url] if db_url else []), *args]
    walls, size = [], 0
    for _ in range(n):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        size = len(done.stdout)
    return statistics.median(walls), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--groups", type=int, default=1000, help="groups of the large size, half per step"
    )
    parser.add_argument("--jobs-per-group", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=1000, help="engine workers")
    parser.add_argument("--repeats", type=int, default=3, help="drives per size (median)")
    parser.add_argument("--timings", type=int, default=5, help="calls of status/report")
    parser.add_argument("--fail-every", type=int, default=0, help="a failing job every N groups")
    parser.add_argument(
        "--db-url", default=None, help="an empty state database (default: SQLite per drive)"
    )
    args = parser.parse_args()
    sizes = [max(2, args.groups // 10), args.groups]
    results: dict[int, tuple[Drive, float]] = {}
    with tempfile.TemporaryDirectory(prefix="manager-scale-") as tmp:
        path = campaign_file(Path(tmp), args.parallel)
        for groups in sizes:
            drives = [
                drive(
                    path,
                    Path(tmp) / f"home-{groups}-{i}",
                    groups,
                    args.jobs_per_group,
                    args.db_url,
                    args.fail_every,
                )
                for i in range(args.repeats)
            ]
            results[groups] = (drives[-1], statistics.median(d.wall_s for d in drives))
        last, _ = results[args.groups]
        sessions = open_state_db(load_settings(home=last.home, db=_db(args.db_url)))
        status_s = timed(lambda: campaign_status(sessions, last.campaign_id), args.timings)
        report_s = timed(lambda: campaign_report(sessions, last.campaign_id), args.timings)
        cid = str(last.campaign_id)
        n = args.timings
        status_cli = cli_wall(last.home, args.db_url, n, "campaign", "status", cid)
        report_cli = cli_wall(last.home, args.db_url, n, "campaign", "report", cid, "--json")
        report_text = cli_wall(last.home, args.db_url, n, "campaign", "report", cid)
    where = args.db_url or "SQLite"
    print(
        f"campaign manager on an instant engine, {where}: 2 steps, their groups of "
        f"{args.jobs_per_group} jobs; wall of the manager's pass, median of {args.repeats}"
    )
    print(
        f"{'jobs':>8} {'groups':>7} {'job tr.':>9} {'campaign tr.':>13} {'transitions':>12} "
        f"{'wall s':>8} {'transitions/s':>14} {'ms/group':>9} {'state':>10}"
    )
    for d, wall in results.values():
        print(
            f"{d.jobs:>8} {d.groups:>7} {d.job_transitions:>9} {d.campaign_transitions:>13} "
            f"{d.transitions:>12} {wall:>8.2f} {d.transitions / wall:>14.0f} "
            f"{1e3 * wall / d.groups:>9.2f} {d.state:>10}"
        )
    (small, small_wall), (large, large_wall) = results.values()
    print(
        f"growth: {large.jobs / small.jobs:.1f}x the jobs took {large_wall / small_wall:.1f}x "
        "the time (target >= 2,000 transitions/s)"
    )
    print(f"at {large.jobs} jobs, {large.groups} groups (target < 1 s each):")
    print(f"  campaign_status()  median of {args.timings}: {status_s:.3f} s")
    print(f"  campaign_report()  median of {args.timings}: {report_s:.3f} s")
    print(f"  CLI (a new process each; median of {args.timings}):")
    print(f"  skybatch campaign status ID:         {status_cli[0]:.3f} s ({status_cli[1]} bytes)")
    print(f"  skybatch campaign report ID --json:  {report_cli[0]:.3f} s ({report_cli[1]} bytes)")
    print(f"  skybatch campaign report ID:         {report_text[0]:.3f} s ({report_text[1]} bytes)")


def _db(db_url: str | None) -> dict[str, Any]:
    return {"url": db_url} if db_url else {}


if __name__ == "__main__":
    main()
