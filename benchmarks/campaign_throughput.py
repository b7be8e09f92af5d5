"""Campaign throughput: the same step-1 quanta of a demo survey as 1 group, as one
group per visit and as groups of 4 visits, each through ``campaign submit`` +
``manager run --once`` (local engine, 2 workers) in a fresh skybatch home.

Everything is real: the demo survey is built once (:func:`skybatch.demo.survey.build_survey`),
each configuration submits a campaign of the demo pipeline's step 1 whose only
difference is its ``split``, and the CLI runs as subprocesses (interpreter start and
imports included). Prints, per configuration: groups, quanta, the median wall seconds
of ``--runs`` runs (submit + manager), the ratio to the one-group time, and the worker
processes started (the manager's multiprocessing children, counted by polling its
process tree every 20 ms: warm workers live for a whole group, so none is missed);
then where each group's fixed cost goes: the run phases the driver records in its
run's summary (``phases_s``: expand, workflow, provenance, init_outputs, inputs,
execute, finish and the finish's own steps), summed over the groups and per group,
and the manager's time outside any run (process start, submit, step expansion, engine
start and close between groups).

    python benchmarks/campaign_throughput.py [--visits 24] [--detectors 4] [--runs 3]
        [--workers 2] [--workdir DIR]
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
from skybatch.db.state import open_state_db
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import build_survey
from skybatch.run.models import RunRow
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
      concurrency: {{max_running_groups: 4}}
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


def trial(root: Path, survey: Path, key: str, split: str, index: int, workers: int) -> Trial:
    name = f"tp{index}-{key}"
    path = root / f"{name}.yaml"
    path.write_text(
        CAMPAIGN_YAML.format(
            name=name, split=split, survey=survey, workers=workers, pipeline=PIPELINE
        )
    )
    home = root / f"home-{name}"
    start = time.perf_counter()
    cli(home, "campaign", "submit", str(path))
    started = cli(home, "manager", "run", "--once", watch=True)
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
    return Trial(wall, started, groups, quanta, phases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=24)
    parser.add_argument("--detectors", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument("--workers", type=int, default=2, help="local engine workers")
    parser.add_argument("--workdir", type=Path, default=None, help="where the survey is built")
    args = parser.parse_args()
    results: dict[str, list[Trial]] = {}
    with tempfile.TemporaryDirectory(prefix="campaign-throughput-", dir=args.workdir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        params = SurveyParams(visits=args.visits, detectors=args.detectors, size=256)
        survey = build_survey(root / "survey", params).root
        build_s = time.perf_counter() - start
        for i in range(args.runs):
            for n, (label, split) in enumerate(SPLITS.items()):
                key = f"c{n}"
                trial_ = trial(root, survey, key, split, i, args.workers)
                results.setdefault(label, []).append(trial_)
    walls = {label: statistics.median(t.wall_s for t in ts) for label, ts in results.items()}
    base = walls["1 group"]
    print(
        f"demo step 1 over {args.visits} visits x {args.detectors} detectors (survey built in "
        f"{build_s:.1f} s); campaign submit + manager run --once, local engine, "
        f"{args.workers} workers, median of {args.runs} run(s), {os.cpu_count()} cores"
    )
    print(
        f"{'same quanta as':<20} {'groups':>6} {'quanta':>6} {'wall s':>8} {'x 1 group':>9} "
        f"{'workers started':>15}"
    )
    for label, ts in results.items():
        t = ts[-1]
        print(
            f"{label:<20} {t.groups:>6} {t.quanta:>6} {walls[label]:>8.1f} "
            f"{walls[label] / base:>9.2f} {statistics.median(x.workers_started for x in ts):>15.0f}"
        )
    print()
    print("where the time goes (last run of each): seconds summed over groups / per group")
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
    rows.append(("outside runs", {lb: [last[lb].wall_s - last[lb].in_runs_s] for lb in labels}))
    for phase, per in rows:
        cells = []
        for lb in labels:
            values = per[lb]
            groups = max(1, last[lb].groups)
            cells.append(f"{sum(values):>10.2f} / {sum(values) / groups:>7.2f}" if values else "-")
        print(f"{phase:<22}" + "".join(f" {c:>24}" for c in cells))


if __name__ == "__main__":
    main()
