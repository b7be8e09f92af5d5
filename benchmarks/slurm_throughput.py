"""Throughput of short jobs: Slurm per-job mode, Slurm pilot mode and the local engine.

500 trivial jobs (``skybatch.engines.testing.behave`` ``ok-`` jobs: sleep 50 ms,
write a report) are fed to each engine the way skybatch's scheduler feeds it (the
engine's parallel jobs plus a few queued, topped up as jobs finish, polled every
20 ms), from the first submit to the last job's end. Prints, per engine, the median
wall seconds of ``--repeats`` runs and jobs per second, and the ratio of pilot mode
to the local engine (target: within 1.5x) and of per-job mode to pilot mode; then the
latency of one trivial job from submit to its end in per-job mode (median of 10;
Slurm tuned for one node: under a second).

Needs a Slurm controller (``scripts/slurm/up.sh`` starts one on this machine); with
none, only the local engine is measured and the script says why.

    python benchmarks/slurm_throughput.py [--jobs 500] [--repeats 3] [--cores 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from skybatch.engines.base import Engine, JobState
from skybatch.engines.local import LocalEngine, LocalSettings
from skybatch.engines.slurm import PilotSettings, SlurmEngine, SlurmSettings
from skybatch.engines.slurm.commands import SlurmCommands
from skybatch.engines.testing import BEHAVE_RUNNER, FINAL_STATES, make_spec


def feed(engine: Engine, directory: Path, n_jobs: int) -> float:
    """Run ``n_jobs`` ok- jobs as the scheduler would; return the wall seconds."""
    parallel = engine.capabilities.max_parallel_jobs
    capacity = parallel + max(2, parallel)
    todo = [make_spec(directory, f"ok-{i}") for i in range(n_jobs)]
    in_flight: list[str] = []
    done = 0
    start = time.perf_counter()
    while done < n_jobs:
        room = capacity - len(in_flight)
        if room > 0 and todo:
            batch, todo = todo[:room], todo[room:]
            in_flight.extend(engine.submit(batch))
        statuses = engine.poll(in_flight)
        finished = {s.engine_id for s in statuses if s.state in FINAL_STATES}
        failed = [s for s in statuses if s.state in FINAL_STATES and s.state != JobState.SUCCEEDED]
        if failed:
            raise RuntimeError(f"{len(failed)} job(s) failed, e.g. {failed[0]}")
        if finished:
            in_flight = [i for i in in_flight if i not in finished]
            done += len(finished)
        else:
            time.sleep(0.02)
    return time.perf_counter() - start


def local(cores: int, _: Path) -> Engine:
    return LocalEngine(LocalSettings(max_workers=cores, runner=BEHAVE_RUNNER, preload=[]))


def per_job(cores: int, scripts: Path) -> Engine:
    settings = SlurmSettings(
        max_jobs=cores, runner=BEHAVE_RUNNER, script_dir=scripts, poll_interval_s=0.25
    )
    return SlurmEngine(settings)


def pilot(cores: int, scripts: Path) -> Engine:
    settings = SlurmSettings(
        mode="pilot",
        runner=BEHAVE_RUNNER,
        script_dir=scripts,
        poll_interval_s=0.25,
        pilot=PilotSettings(
            cores=cores,
            max_pilots=1,
            memory_mb=2048,
            walltime_s=3600,
            idle_timeout_s=5,
            preload=[],
        ),
    )
    return SlurmEngine(settings)


def measure(name: str, make: Callable[[int, Path], Engine], args: argparse.Namespace) -> float:
    walls = []
    for repeat in range(args.repeats):
        directory = Path(tempfile.mkdtemp(prefix=f"skybatch-bench-{name}-"))
        try:
            with make(args.cores, directory / "scripts") as engine:
                walls.append(feed(engine, directory / "jobs", args.jobs))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        print(f"  {name} run {repeat + 1}: {walls[-1]:.2f} s", flush=True)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2, help="parallel jobs of every engine")
    args = parser.parse_args()
    engines: dict[str, Callable[[int, Path], Engine]] = {"local": local}
    if SlurmCommands.installed() and SlurmCommands().ping():
        engines |= {"slurm-pilot": pilot, "slurm-per-job": per_job}
    else:
        print("no Slurm controller answers (scripts/slurm/up.sh starts one): local only")
    walls = {name: measure(name, make, args) for name, make in engines.items()}
    print(f"\n{args.jobs} trivial jobs, {args.cores} parallel, median of {args.repeats}:")
    print(f"{'engine':<15} {'wall s':>8} {'jobs/s':>8}")
    for name, wall in walls.items():
        print(f"{name:<15} {wall:>8.2f} {args.jobs / wall:>8.1f}")
    if "slurm-pilot" in walls:
        print(f"\npilot / local:    {walls['slurm-pilot'] / walls['local']:.2f}x (target <= 1.5x)")
        print(f"per-job / pilot:  {walls['slurm-per-job'] / walls['slurm-pilot']:.2f}x")
        latencies = []
        for _ in range(10):
            directory = Path(tempfile.mkdtemp(prefix="skybatch-bench-latency-"))
            try:
                with per_job(1, directory / "scripts") as engine:
                    latencies.append(feed(engine, directory / "jobs", 1))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        print(f"one job, submit to end, per-job mode: {statistics.median(latencies):.2f} s")


if __name__ == "__main__":
    main()
