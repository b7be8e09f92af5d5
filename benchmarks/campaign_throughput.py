"""Campaign throughput: the same step-1 quanta of a demo survey as 1 group, as one
group per visit and as groups of 4 visits, each through ``campaign submit`` +
``manager run --once`` (local engine, 2 workers) in a fresh skybatch home.

Everything is real: the demo survey is built once (:func:`skybatch.demo.survey.build_survey`),
each configuration submits a campaign of the demo pipeline's step 1 whose only
difference is its ``split``, and the CLI runs as subprocesses (interpreter start and
imports included). Prints, per configuration: groups, quanta, the median wall seconds
of ``--runs`` runs (submit + manager), the ratio to the one-group time, and the
processes the manager started (its multiprocessing children, counted by polling its
process tree every 20 ms: the execution pool's warm workers plus its one bookkeeping
process, the same number whatever the number of groups when workers are started once
per manager); then where the time goes: the run phases each run's summary records
(``phases_s``: expand, workflow, provenance, init_outputs, inputs in the bookkeeping
process; execute on the shared engine; finish and its own steps in the bookkeeping
process again), summed over the groups and per group (these overlap other groups'
execution), and what is left on the critical path: the time before the first job
and after the last, and the engine's idle share between them (slots x span minus the
jobs' own seconds).

``--mode priority`` (also part of ``all``) submits two campaigns of one group per
visit over the same survey together, first with different priorities (the second
campaign higher), then with equal ones, and prints when each campaign's first job
started and when it finished: the higher-priority campaign's jobs go first; equal
priorities progress together.

    python benchmarks/campaign_throughput.py [--visits 24] [--detectors 4] [--runs 3]
        [--workers 2] [--workdir DIR] [--mode all|throughput|priority]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import select

import skybatch.demo
from skybatch.campaign.models import CampaignEventRow, CampaignRow
from skybatch.db.state import open_state_db
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import build_survey
from skybatch.run.models import JobAttemptRow, JobRow, RunRow
from skybatch.settings import load_settings

PIPELINE = Path(skybatch.demo.__file__).parent / "pipelines" / "demo_drp.yaml"

#: Configuration name -> the step's ``split`` (YAML flow style).
SPLITS = {
    "1 group": "none",
    "groups of 4 visits": "{max_ids: 4, dimension: visit}",
    "1 group per visit": "{by: visit}",
}

CAMPAIGN_YAML = """\
name: {name}
description: "campaign_throughput benchmark: demo step 1, split {split}"
repo: {survey}/repo
inputs: [DemoCam/defaults]
query: "instrument = 'DemoCam'"
calibration: {{collection: DemoCam/calib, valid_at: latest}}
refcat: {{database: {survey}/refcat.sqlite, table: refcat, dataset_type: ref_cat}}
site: {{name: "site:local"}}
engine: {{name: local, workers: {workers}}}
policies:
  priority: {priority}
  retries: {{max_attempts: 3, memory_factor: 2.0, memory_cap_mb: 8192}}
  default_resources: {{memory_mb: 2048, cores: 1, walltime_s: 1800}}
  intermediates: [postISRCCD]
  cleanup_at_end: [site_cache, workdirs]
  concurrency: {{max_running_jobs: 8}}
steps:
  - name: step1
    pipeline: {pipeline}#step1
    split: {split}
    policies:
      concurrency: {{max_running_groups: {groups_in_flight}}}
"""

SETUP = ("expand", "workflow", "provenance", "init_outputs", "inputs")
RUN_PHASES = (*SETUP, "execute", "finish")


@dataclass
class Trial:
    wall_s: float
    workers_started: int
    groups: int
    quanta: int
    #: Phase -> seconds per group (run phases, then the finish's own steps).
    phases: dict[str, list[float]] = field(default_factory=dict)
    #: Seconds from the manager's start to the first job, and after the last job.
    before_first_job_s: float = 0.0
    after_last_job_s: float = 0.0
    #: Seconds from the first job's submission to the last job's end, and the jobs'
    #: own seconds (submitted to finished) summed.
    span_s: float = 0.0
    busy_s: float = 0.0

    @property
    def in_runs_s(self) -> float:
        return sum(sum(self.phases.get(p, [])) for p in RUN_PHASES)


def watch_children(proc: subprocess.Popen[bytes]) -> set[tuple[int, float]]:
    """Until ``proc`` ends, the worker processes (multiprocessing children) in its
    tree, polled every 20 ms, as (pid, start time)."""
    seen: set[tuple[int, float]] = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for child in root.children(recursive=True):
                try:
                    if "spawn_main" in " ".join(child.cmdline()):
                        seen.add((child.pid, child.create_time()))
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        time.sleep(0.02)
    return seen


def cli(home: Path, *args: str, watch: bool = False) -> int:
    """Run ``skybatch --home HOME ARGS``; with ``watch``, return how many worker
    processes (multiprocessing children) it started, counted by polling its tree."""
    command = [sys.executable, "-m", "skybatch", "--home", str(home), *args]
    # Output to a file, not a pipe: nobody reads a pipe while the command runs.
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        seen = watch_children(proc) if watch else set()
        proc.wait()
        output.seek(0)
        text = output.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{text[-5000:]}")
    return len(seen)


def write_campaign(
    root: Path,
    survey: Path,
    name: str,
    split: str,
    workers: int,
    priority: int = 0,
    groups_in_flight: int = 4,
) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(
        CAMPAIGN_YAML.format(
            name=name,
            split=split,
            survey=survey,
            workers=workers,
            pipeline=PIPELINE,
            priority=priority,
            groups_in_flight=groups_in_flight,
        )
    )
    return path


def trial(root: Path, survey: Path, key: str, split: str, index: int, workers: int) -> Trial:
    name = f"tp{index}-{key}"
    path = write_campaign(root, survey, name, split, workers)
    home = root / f"home-{name}"
    start = time.perf_counter()
    cli(home, "campaign", "submit", str(path))
    manager_start = time.time()
    started = cli(home, "manager", "run", "--once", watch=True)
    manager_end = time.time()
    wall = time.perf_counter() - start
    sessions = open_state_db(load_settings(home=home))
    phases: dict[str, list[float]] = {}
    groups = quanta = 0
    with sessions() as session:
        for summary in session.scalars(select(RunRow.summary)):
            groups += 1
            quanta += sum(summary.get("quanta_per_task", {}).values())
            for phase, seconds in summary.get("phases_s", {}).items():
                phases.setdefault(phase, []).append(seconds)
        attempts = session.execute(
            select(JobAttemptRow.submitted_at, JobAttemptRow.finished_at)
        ).all()
    first = min(a.timestamp() for a, _ in attempts) if attempts else manager_start
    last = max(b.timestamp() for _, b in attempts if b) if attempts else manager_end
    busy = sum((b - a).total_seconds() for a, b in attempts if b)
    return Trial(
        wall,
        started,
        groups,
        quanta,
        phases,
        before_first_job_s=first - manager_start,
        after_last_job_s=manager_end - last,
        span_s=last - first,
        busy_s=busy,
    )


def priority_trial(root: Path, survey: Path, workers: int, high: int, tag: str) -> None:
    """Two campaigns of one group per visit submitted together; the second has
    priority ``high`` (the first 0). Prints when each one's jobs started and ended.
    Each may have all its groups in flight, so the one served first is not held back
    by its own ``max_running_groups``."""
    home = root / f"home-priority-{tag}"
    names = [f"prio-{tag}-a", f"prio-{tag}-b"]
    for name, priority in zip(names, (0, high), strict=True):
        path = write_campaign(root, survey, name, "{by: visit}", workers, priority, 1000)
        cli(home, "campaign", "submit", str(path))
    start = time.time()
    cli(home, "manager", "run", "--once")
    sessions = open_state_db(load_settings(home=home))
    print(f"two campaigns submitted together, priorities 0 and {high}:")
    with sessions() as session:
        for name in names:
            row = session.scalar(select(CampaignRow).where(CampaignRow.name == name))
            assert row is not None
            times = session.execute(
                select(JobAttemptRow.submitted_at, JobAttemptRow.finished_at)
                .join(JobRow, JobRow.id == JobAttemptRow.job_id)
                .join(RunRow, RunRow.id == JobRow.run_id)
                .where(RunRow.name.startswith(f"{name}/"))
            ).all()
            ended = session.scalar(
                select(CampaignEventRow.created_at).where(
                    CampaignEventRow.campaign_id == row.id,
                    CampaignEventRow.kind == "campaign",
                    CampaignEventRow.to_state == "succeeded",
                )
            )
            first = min(a.timestamp() for a, _ in times) - start
            half = sorted(b.timestamp() for _, b in times if b)[len(times) // 2] - start
            last = max(b.timestamp() for _, b in times if b) - start
            done = ended.timestamp() - start if ended else float("nan")
            print(
                f"  {name} (priority {row.priority}): {len(times)} jobs, first started at "
                f"{first:6.1f} s, half done at {half:6.1f} s, last ended at {last:6.1f} s, "
                f"campaign succeeded at {done:6.1f} s ({row.state})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=24)
    parser.add_argument("--detectors", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument("--workers", type=int, default=2, help="local engine workers")
    parser.add_argument("--workdir", type=Path, default=None, help="where the survey is built")
    parser.add_argument("--mode", choices=["all", "throughput", "priority"], default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="campaign-throughput-", dir=args.workdir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        params = SurveyParams(visits=args.visits, detectors=args.detectors, size=256)
        survey = build_survey(root / "survey", params).root
        build_s = time.perf_counter() - start
        print(
            f"demo step 1 over {args.visits} visits x {args.detectors} detectors (survey "
            f"built in {build_s:.1f} s); campaign submit + manager run --once, local engine, "
            f"{args.workers} workers, {os.cpu_count()} cores"
        )
        if args.mode in ("all", "throughput"):
            throughput(root, survey, args.runs, args.workers)
        if args.mode in ("all", "priority"):
            print()
            priority_trial(root, survey, args.workers, 10, "different")
            priority_trial(root, survey, args.workers, 0, "equal")


def throughput(root: Path, survey: Path, runs: int, workers: int) -> None:
    results: dict[str, list[Trial]] = {}
    for i in range(runs):
        for n, (label, split) in enumerate(SPLITS.items()):
            trial_ = trial(root, survey, f"c{n}", split, i, workers)
            results.setdefault(label, []).append(trial_)
    walls = {label: statistics.median(t.wall_s for t in ts) for label, ts in results.items()}
    base = walls["1 group"]
    print(f"median of {runs} run(s)")
    print(
        f"{'same quanta as':<20} {'groups':>6} {'quanta':>6} {'wall s':>8} {'x 1 group':>9} "
        f"{'processes started':>17}"
    )
    for label, ts in results.items():
        t = ts[-1]
        print(
            f"{label:<20} {t.groups:>6} {t.quanta:>6} {walls[label]:>8.1f} "
            f"{walls[label] / base:>9.2f} "
            f"{statistics.median(x.workers_started for x in ts):>17.0f}"
        )
    print(
        f"(processes started: the pool's {workers} warm workers and its bookkeeping processes, "
        "one per core up to 4, once per manager whatever the number of groups)"
    )
    print()
    print("the critical path (median): seconds before the first job, the engine's busy share")
    print("between the first and the last job, seconds after the last job")
    for label, ts in results.items():
        before = statistics.median(t.before_first_job_s for t in ts)
        after = statistics.median(t.after_last_job_s for t in ts)
        busy = statistics.median(t.busy_s / max(1e-9, t.span_s * workers) for t in ts)
        span = statistics.median(t.span_s for t in ts)
        print(
            f"{label:<20} before {before:6.1f} s | span {span:6.1f} s, engine busy "
            f"{100 * min(busy, 1.0):5.1f}% | after {after:6.1f} s"
        )
    print()
    print("where the time goes (last run of each): seconds summed over groups / per group")
    print("(set-up and finish run in the bookkeeping process, beside other groups' jobs)")
    labels = list(results)
    header = f"{'phase':<22}" + "".join(f" {label:>24}" for label in labels)
    print(header)
    last = {label: results[label][-1] for label in labels}
    names = list(RUN_PHASES)
    for t in last.values():
        names += [p for p in t.phases if p not in names]
    rows = [(p, {lb: last[lb].phases.get(p, []) for lb in labels}) for p in names]
    setup = {
        lb: [sum(x) for x in zip(*(last[lb].phases.get(p, []) for p in SETUP), strict=False)]
        for lb in labels
    }
    rows.insert(len(SETUP), ("= set-up", setup))
    for phase, per in rows:
        cells = []
        for lb in labels:
            values = per[lb]
            groups = max(1, last[lb].groups)
            cells.append(f"{sum(values):>10.2f} / {sum(values) / groups:>7.2f}" if values else "-")
        print(f"{phase:<22}" + "".join(f" {c:>24}" for c in cells))


if __name__ == "__main__":
    main()
