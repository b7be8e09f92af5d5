"""Campaign manager throughput: a synthetic campaign of ~100,000 jobs in 1,000 groups
through the campaign, step, group and job state machines, many groups in flight on the
manager's execution pool with an engine that completes every job at once; the peak
memory of the manager's process; then the time of ``campaign status`` and ``campaign
report`` at that size.

What is real: the campaign is submitted with :func:`skybatch.campaign.submit.submit_campaign`
(validated, stored, its files archived as provenance) against an empty Butler
repository; the manager's own pass (:meth:`skybatch.campaign.manager.Manager.run_pass`)
advances it, so every campaign, step and group transition goes through
:func:`skybatch.campaign.states.change_state` with its event row; ready groups go to
the manager's :class:`skybatch.run.pool.ExecutionPool` (up to ``--max-groups`` in
flight), which drives every group's :class:`skybatch.run.scheduler.Scheduler` in its
one loop (pending -> ready -> submitted -> succeeded, each checked against the
JobState table and committed), runs' work directories, job specs and run logs as for
a real campaign.

What stands in (the manager's ``expander`` and the pool's bookkeeping and engine
injection points, :mod:`skybatch.run.testing`): each step expands into half of
``--groups`` groups without reading the Butler; a group's set-up writes a synthetic
DRP-shaped workflow of ``--jobs-per-group`` jobs (step1: isr -> calibrate per
detector, a visitSummary over the calibrates; step2: a warp per visit, a coadd over
the warps), its run row and job rows instead of expanding a quantum graph; its finish
writes one ``quantum_runs`` row per job and attempt (CPU seconds, peak memory) as
ingesting the job reports would, and ends the run through ``change_run_state``, so the
report aggregates over as many rows as a real campaign of that size; the engine is
:class:`skybatch.engines.testing.InstantEngine`.

Prints, per size (a tenth of ``--groups``, then ``--groups``): jobs, groups,
transitions (job + group + step + campaign), wall seconds and transitions per second
(target >= 5,000/s on SQLite), the most groups in flight, the process's peak resident
memory after the size's drives (target: no growth from the small size to the large),
and resident memory sampled as groups ended; then at the largest size the median of
``--timings`` calls of the ``campaign_status`` and ``campaign_report`` functions and
the wall time of the CLI commands ``skybatch --home H campaign status ID``, ``campaign
report ID --json`` and ``campaign report ID`` run as subprocesses, median of
``--timings`` runs each (target < 1 s each; ``--no-cli`` skips them). ``--fail-every
N`` makes one job of every Nth group of the last step fail (held after its retries),
so the report lists failures and the campaign ends failed.

    python benchmarks/manager_scale.py [--groups 1000] [--jobs-per-group 100]
        [--max-groups 64] [--repeats 3] [--timings 5] [--db-url URL] [--fail-every N]
        [--no-cli]

``--db-url`` must name an empty database, migrated (``skybatch --db-url URL db
upgrade``): the archive endpoint of the campaign's repository is recorded there.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import skybatch.demo
from skybatch.campaign.config import Campaign, Step
from skybatch.campaign.expansion import GroupSpec, StepExpansion
from skybatch.campaign.manager import Manager
from skybatch.campaign.models import CampaignEventRow
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.graph.workflow import JobNode, ResourceRequest, Workflow
from skybatch.read.campaigns import campaign_report, campaign_status
from skybatch.run.context import RunOptions
from skybatch.run.models import JobRow, RunRow
from skybatch.run.pool import ExecutionPool, RunOutcome
from skybatch.run.testing import SyntheticBookkeeping, instant_engine
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


@dataclass(frozen=True)
class Workflows:
    """A group's run's workflow (the stand-in set-up's): ``jobs_per_group`` jobs of its
    step's shape; one job of every ``fail_every``-th group of the last step fails."""

    jobs_per_group: int
    fail_every: int = 0
    last_step: str = "step2"

    def __call__(self, options: RunOptions) -> Workflow:
        run = options.output_run
        assert run is not None
        _, _, step, group = run.rsplit("/", 3)
        index = int(group.rsplit("-", 1)[1])
        fail = bool(self.fail_every) and step == self.last_step
        return group_workflow(run, step, self.jobs_per_group, fail and index % self.fail_every == 0)


class CountingPool(ExecutionPool):
    """The pool, counting the runs that ended."""

    ended = 0

    def outcomes(self) -> list[RunOutcome]:
        out = super().outcomes()
        self.ended += len(out)
        return out


def rss_mb() -> float:
    """Resident memory of this process now, MB."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Most resident memory this process had so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    #: Most groups in flight at once.
    most_in_flight: int
    #: Peak resident memory of the process after this drive, MB.
    peak_rss_mb: float
    #: CPU seconds of the manager's process and of its bookkeeping process.
    cpu_s: float = 0.0
    bookkeeping_cpu_s: float = 0.0
    #: (groups ended, resident MB) sampled during the drive.
    rss: list[tuple[int, float]] = field(default_factory=list)

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
    path: Path,
    home: Path,
    groups: int,
    jobs_per_group: int,
    db_url: str | None,
    fail: int,
    max_groups: int,
    inline: bool,
) -> Drive:
    """Submit the campaign, run the manager's pass to the end, count what happened."""
    settings = load_settings(home=home, db=_db(db_url))
    sessions = open_state_db(settings)
    submitted = submit_campaign(settings, path)
    bookkeeping = SyntheticBookkeeping(Workflows(jobs_per_group, fail), process=not inline)
    pools: list[CountingPool] = []

    def pool(settings: Settings) -> ExecutionPool:
        pools.append(CountingPool(settings, bookkeeping=bookkeeping, engine_factory=instant_engine))
        return pools[-1]

    most = 0
    samples: list[tuple[int, float]] = []
    every = max(1, groups // 10)

    def progress() -> None:
        nonlocal most
        most = max(most, len(manager.pool.in_flight()))
        ended = pools[-1].ended
        if ended >= every * (len(samples) + 1):
            samples.append((ended, rss_mb()))

    problems: list[str] = []

    def say(text: str) -> None:
        if " failed" in text or "could not run" in text:
            problems.append(text)

    manager = Manager(
        settings,
        say=say,
        expander=expander(groups // 2),
        pool=pool,
        max_groups=max_groups,
        progress=progress,
    )
    cpu = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with manager:
        report = manager.run_pass()
    wall = time.perf_counter() - start
    cpu_s = _cpu(resource.RUSAGE_SELF) - cpu[0]
    bookkeeping_cpu_s = _cpu(resource.RUSAGE_CHILDREN) - cpu[1]  # reaped when it closed
    state = manager.state_of(submitted.id)
    if report.groups_run != 2 * (groups // 2) or (problems and not fail):
        print(f"{report.groups_run} groups ran of {2 * (groups // 2)}:", *problems, sep="\n  ")
    runs = select(RunRow.id).where(RunRow.name.like(f"scale/{submitted.id}-%"))
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
        submitted.id,
        home,
        state,
        n_jobs,
        report.groups_run,
        job_transitions,
        events or 0,
        wall,
        most,
        peak_rss_mb(),
        cpu_s,
        bookkeeping_cpu_s,
        samples,
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
    parser.add_argument(
        "--max-groups", type=int, default=64, help="groups in flight at most (the manager's)"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the status/report timings")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="set-ups and finishes in the pool's loop (default: a bookkeeping process, as "
        "the real manager)",
    )
    parser.add_argument(
        "--tmp", default=None, help="where the skybatch homes go (default: the system's)"
    )
    args = parser.parse_args()
    sizes = [max(2, args.groups // 10), args.groups]
    results: dict[int, tuple[Drive, float]] = {}
    with tempfile.TemporaryDirectory(prefix="manager-scale-", dir=args.tmp) as tmp:
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
                    args.max_groups,
                    args.inline,
                )
                for i in range(args.repeats)
            ]
            results[groups] = (drives[-1], statistics.median(d.wall_s for d in drives))
        last, _ = results[args.groups]
        report(args, results)
        if args.no_cli:
            return
        sessions = open_state_db(load_settings(home=last.home, db=_db(args.db_url)))
        with sessions() as session:
            cid_ = last.campaign_id
            status_s = timed(lambda: campaign_status(session, cid_), args.timings)
            report_s = timed(lambda: campaign_report(session, cid_), args.timings)
        cid = str(last.campaign_id)
        n = args.timings
        status_cli = cli_wall(last.home, args.db_url, n, "campaign", "status", cid)
        report_cli = cli_wall(last.home, args.db_url, n, "campaign", "report", cid, "--json")
        report_text = cli_wall(last.home, args.db_url, n, "campaign", "report", cid)
    print(f"at {last.jobs} jobs, {last.groups} groups (target < 1 s each):")
    print(f"  campaign_status()  median of {args.timings}: {status_s:.3f} s")
    print(f"  campaign_report()  median of {args.timings}: {report_s:.3f} s")
    print(f"  CLI (a new process each; median of {args.timings}):")
    print(f"  skybatch campaign status ID:         {status_cli[0]:.3f} s ({status_cli[1]} bytes)")
    print(f"  skybatch campaign report ID --json:  {report_cli[0]:.3f} s ({report_cli[1]} bytes)")
    print(f"  skybatch campaign report ID:         {report_text[0]:.3f} s ({report_text[1]} bytes)")


def report(args: argparse.Namespace, results: dict[int, tuple[Drive, float]]) -> None:
    """The throughput and memory table of the drives."""
    where = args.db_url or "SQLite"
    print(
        f"campaign manager and its execution pool on an instant engine, {where}: 2 steps, "
        f"their groups of {args.jobs_per_group} jobs, at most {args.max_groups} groups in "
        f"flight, set-ups and finishes {'in the loop' if args.inline else 'in a process'}; "
        f"wall of the manager's pass, median of {args.repeats}"
    )
    print(
        f"{'jobs':>8} {'groups':>7} {'job tr.':>9} {'campaign tr.':>13} {'transitions':>12} "
        f"{'wall s':>8} {'transitions/s':>14} {'ms/group':>9} {'in flight':>10} "
        f"{'peak RSS MB':>12} {'CPU s':>7} {'bk CPU s':>9} {'state':>10}"
    )
    for d, wall in results.values():
        print(
            f"{d.jobs:>8} {d.groups:>7} {d.job_transitions:>9} {d.campaign_transitions:>13} "
            f"{d.transitions:>12} {wall:>8.2f} {d.transitions / wall:>14.0f} "
            f"{1e3 * wall / d.groups:>9.2f} {d.most_in_flight:>10} {d.peak_rss_mb:>12.0f} "
            f"{d.cpu_s:>7.1f} {d.bookkeeping_cpu_s:>9.1f} {d.state:>10}"
        )
    print(
        "CPU s: the manager's process (its loop); bk CPU s: its bookkeeping process (set-ups "
        f"and finishes); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    (small, small_wall), (large, large_wall) = results.values()
    print(
        f"growth: {large.jobs / small.jobs:.1f}x the jobs took {large_wall / small_wall:.1f}x "
        "the time (target >= 5,000 transitions/s, memory flat in the groups ended)"
    )
    print(
        "resident MB as groups ended (last drive of the large size): "
        + ", ".join(f"{n}: {mb:.0f}" for n, mb in large.rss)
    )
    sys.stdout.flush()


def _db(db_url: str | None) -> dict[str, Any]:
    return {"url": db_url} if db_url else {}


if __name__ == "__main__":
    main()
