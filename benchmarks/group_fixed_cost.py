"""Per-run fixed cost of set-up and finish when many runs share one long-lived process.

A campaign's groups each become a skybatch run; the campaign manager sets up and
finishes them all in one process. What a run costs beyond its quanta (expansion,
workflow, provenance, init-outputs, input registration, then stage-back, ingest,
catalogs, clean-up) is paid once per group, so it must be small once the process is
warm (imports done, caches filled). This benchmark builds a demo survey
(:func:`skybatch.demo.survey.build_survey`), then in ONE process sets up, executes and
finishes one run per visit of the demo pipeline's step 1 (as a campaign split
``{by: visit}`` does, intermediates removed at the end) through
:func:`skybatch.run.driver.submit_run` with the local engine, and prints per phase the
wall and CPU seconds of the first run (cold process) and the median of the later runs
(warm process).

The phases are the driver's set-up boundaries (:func:`skybatch.run.setup.boundary`)
and the finish's kill points (:data:`skybatch.run.finish.FINISH_POINTS`): the
benchmark wraps them to read this process's clocks, so nothing is added to the code
it measures. CPU is this process's (workers are other processes).

    python benchmarks/group_fixed_cost.py [--visits 8] [--detectors 4] [--workers 2]
        [--workdir DIR] [--profile FILE]

``--profile FILE`` writes a cProfile (CPU time) of the warm runs (all but the first) to FILE.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import skybatch.demo
import skybatch.graph.expand
import skybatch.run.finish
import skybatch.run.setup
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import DEFAULTS, INSTRUMENT, build_survey
from skybatch.run.driver import RunOptions, submit_run
from skybatch.settings import load_settings

PIPELINE = Path(skybatch.demo.__file__).parent / "pipelines" / "demo_drp.yaml"

SETUP = ("expand", "workflow", "provenance", "init_outputs", "inputs")
FINISH = tuple(p for p in skybatch.run.finish.FINISH_POINTS if p != "finish:done")


class Clock:
    """Wall and CPU seconds between the marks of one run's phases."""

    def __init__(self) -> None:
        self.runs: list[dict[str, tuple[float, float]]] = []
        self._phase: str | None = None
        self._last = (0.0, 0.0)

    def start(self, phase: str) -> None:
        self.stop()
        self._phase, self._last = phase, (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        if self._phase is None:
            return
        wall, cpu = time.perf_counter(), time.process_time()
        seconds = (wall - self._last[0], cpu - self._last[1])
        old = self.runs[-1].get(self._phase, (0.0, 0.0))
        self.runs[-1][self._phase] = (old[0] + seconds[0], old[1] + seconds[1])
        self._phase = None

    def new_run(self) -> None:
        self.runs.append({})


def instrument(clock: Clock) -> None:
    """Wrap the driver's phase marks (module attributes it looks up at each call)."""
    expand = skybatch.graph.expand.expand
    boundary = skybatch.run.setup.boundary
    finish_run = skybatch.run.finish.finish_run
    kill_point = skybatch.run.finish.kill_point

    @functools.wraps(expand)
    def timed_expand(*args: Any, **kwargs: Any) -> Any:
        clock.start("expand")
        return expand(*args, **kwargs)

    def timed_boundary(phase: str) -> None:
        if phase in SETUP:
            clock.stop()
            if phase != SETUP[-1]:
                clock.start(SETUP[SETUP.index(phase) + 1])
        boundary(phase)

    @functools.wraps(finish_run)
    def timed_finish(*args: Any, **kwargs: Any) -> Any:
        clock.start("finish:reports")
        try:
            return finish_run(*args, **kwargs)
        finally:
            clock.stop()

    def timed_point(point: str) -> None:
        if point in FINISH:
            clock.start(point)
        else:
            clock.stop()
        kill_point(point)

    skybatch.graph.expand.expand = timed_expand  # type: ignore[assignment]
    skybatch.run.setup.boundary = timed_boundary  # type: ignore[assignment]
    skybatch.run.finish.finish_run = timed_finish  # type: ignore[assignment]
    skybatch.run.finish.kill_point = timed_point  # type: ignore[assignment]


def options_for(repo: Path, visit: int, run: str, workers: int) -> RunOptions:
    return RunOptions(
        repo=repo,
        pipeline=f"{PIPELINE}#step1",
        inputs=[DEFAULTS],
        query=f"instrument = '{INSTRUMENT}' AND visit = {visit}",
        output_run=run,
        workers=workers,
        intermediates=["postISRCCD"],
    )


def visits_of(repo: Path) -> list[int]:
    from lsst.daf.butler import Butler

    with Butler.from_config(str(repo)) as butler:
        return sorted(r.id for r in butler.query_dimension_records("visit"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=8, help="runs (one per visit)")
    parser.add_argument("--detectors", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="local engine workers")
    parser.add_argument("--workdir", type=Path, default=None, help="where the survey is built")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile of the warm runs")
    args = parser.parse_args()
    if args.visits < 2:
        parser.error("--visits must be at least 2 (a cold run and warm ones)")
    clock = Clock()
    instrument(clock)
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    walls: list[float] = []
    with tempfile.TemporaryDirectory(prefix="group-fixed-cost-", dir=args.workdir) as tmp:
        root = Path(tmp)
        params = SurveyParams(visits=args.visits, detectors=args.detectors, size=256)
        survey = build_survey(root / "survey", params)
        settings = load_settings(home=root / "home")
        for i, visit in enumerate(visits_of(survey.repo)):
            clock.new_run()
            options = options_for(survey.repo, visit, f"bench/fixed/{visit}", args.workers)
            if profiler is not None and i == 1:
                profiler.enable()
            start = time.perf_counter()
            summary = submit_run(settings, options)
            walls.append(time.perf_counter() - start)
            if summary.state != "succeeded":
                sys.exit(f"run {summary.run} ended {summary.state}: see {summary.workdir}")
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
    report(args, clock, walls)


Seconds = tuple[float, float]  # (wall, cpu)


def _sum(run: dict[str, Seconds], phases: tuple[str, ...]) -> Seconds:
    values = [run.get(p, (0.0, 0.0)) for p in phases]
    return sum(w for w, _ in values), sum(c for _, c in values)


def report(args: argparse.Namespace, clock: Clock, walls: list[float]) -> None:
    first, later = clock.runs[0], clock.runs[1:]
    print(
        f"demo step 1, one run per visit: {len(walls)} runs of {args.detectors * 2 + 1} "
        f"quanta in one process (submit_run, local engine, {args.workers} workers), "
        f"{os.cpu_count()} cores (machine shared with other sessions)"
    )
    heads = ("first wall", "first cpu", "later wall", "later cpu")
    print(f"{'phase (median s)':<22}" + "".join(f" {h:>10}" for h in heads))
    finish = ("finish:reports", *FINISH)
    rows = [(p, (p,)) for p in (*SETUP, *finish)]
    rows += [("= set-up", SETUP), ("= finish", finish), ("= set-up + finish", (*SETUP, *finish))]
    for name, phases in rows:
        cold = _sum(first, phases)
        warm = [_sum(run, phases) for run in later]
        print(
            f"{name:<22} {cold[0]:>10.3f} {cold[1]:>10.3f} "
            f"{statistics.median(w for w, _ in warm):>10.3f} "
            f"{statistics.median(c for _, c in warm):>10.3f}"
        )
    later_wall = statistics.median(walls[1:])
    print(f"{'run (submit_run)':<22} {walls[0]:>10.3f} {'':>10} {later_wall:>10.3f}")


if __name__ == "__main__":
    main()
