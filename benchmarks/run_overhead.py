"""Harness overhead of `skybatch run` against `pipetask run` on a DRP-shaped graph.

The graph (see ``_mock_drp.py``) has per-detector ``isr`` and ``calibrate`` quanta, a
per-visit ``visitSummary`` gather and per-patch ``coadd`` quanta, all pipe_base mock
tasks that read their inputs and write small outputs, so what is timed is the harness:
graph building, process start-up, butler set-up, bookkeeping. In one invocation:

* pipe_base's QuantumGraph generation alone (``AllDimensionsQuantumGraphBuilder`` with
  datastore records, written to a ``.qg`` file), in a fresh process from the imports on,
  right before each skybatch run (the two are compared run by run);
* ``pipetask run -j 1`` over the whole graph (one process executes every quantum);
* ``pipetask run -j 2`` over a slice of the graph (a new process per quantum), compared
  per quantum;
* ``skybatch run --workers 2`` over the whole graph with all provenance on (job reports,
  md5 and metadata of every output, junk tarballs, catalog and state database).

Every command runs as a subprocess, from pipeline file to outputs in the Butler, and
each repeat writes a fresh output run. Prints the median wall time of each, the ratios,
and skybatch's graph building (its expansion with the same builder, then the workflow)
and all its submission steps against the plain QuantumGraph generation; and where a
quantum's time goes inside skybatch's job wrapper (the ``phases_s`` of every job
report: butler set-up, execution, md5 and metadata, stage-out, catalog writes...) and
outside it (engine hand-off, spec and report files, workers waiting for ready jobs).

    python benchmarks/run_overhead.py [--visits 26] [--detectors 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _mock_drp import INPUT_RUN, build_repo, write_pipeline

from skybatch.job.stats import PHASES

BIN = Path(sys.executable).parent


def _run(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n  see {log}")
    return elapsed


_QG_SCRIPT = """
import gc, sys, time
if sys.argv[6] == "paused":
    gc.disable()
start = time.perf_counter()
from lsst.daf.butler import Butler
from lsst.pipe.base import Pipeline
from lsst.pipe.base.all_dimensions_quantum_graph_builder import AllDimensionsQuantumGraphBuilder
repo, pipeline, where, collection, path = sys.argv[1:6]
graph = Pipeline.from_uri(pipeline).to_graph()
with Butler.from_config(repo) as butler:
    builder = AllDimensionsQuantumGraphBuilder(
        graph, butler, where=where, input_collections=[collection], output_run="bench/qg"
    )
    components = builder.finish(attach_datastore_records=True)
components.write(path)
print(time.perf_counter() - start, components.header.n_quanta)
"""


def qg_generation(
    repo: Path, pipeline: Path, where: str, qgraph: Path, gc_mode: str = "default"
) -> tuple[float, int]:
    """Seconds pipe_base takes to build a graph (datastore records attached) and write
    it, in a fresh process from the imports on (as skybatch's expansion phase runs,
    which is timed the same way); and the graph's quanta. ``gc_mode="paused"`` turns
    Python's cyclic collector off, as skybatch does while it builds graphs."""
    args = [str(repo), str(pipeline), where, INPUT_RUN, str(qgraph), gc_mode]
    out = subprocess.run(
        [sys.executable, "-c", _QG_SCRIPT, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, quanta = out.stdout.split()[-2:]
    return float(seconds), int(quanta)


def count_outputs(repo: Path, run: str) -> int:
    from lsst.daf.butler import Butler

    with Butler.from_config(str(repo)) as butler:
        return len(butler.query_all_datasets(run, find_first=False, limit=None))


def pipetask(repo: Path, pipeline: Path, run: str, jobs: int, where: str, log: Path) -> float:
    cmd = [str(BIN / "pipetask"), "run", "-b", str(repo), "-p", str(pipeline)]
    cmd += ["-i", INPUT_RUN, "--output-run", run, "-j", str(jobs), "--register-dataset-types"]
    if where:
        cmd += ["-d", where]
    return _run(cmd, log)


def job_reports(home: Path) -> list[dict[str, Any]]:
    """The last attempt's report of every job of the (one) run in ``home``."""
    reports: list[dict[str, Any]] = []
    for job in sorted(home.glob("runs/*/jobs/*")):
        attempts = sorted(job.glob("attempt-*/report.json"), key=lambda p: int(p.parent.name[8:]))
        if attempts:
            reports.append(json.loads(attempts[-1].read_text()))
    return reports


def skybatch(
    home: Path, repo: Path, pipeline: Path, run: str, workers: int, log: Path
) -> tuple[float, dict[str, float], dict[str, int]]:
    cmd = [str(BIN / "skybatch"), "--home", str(home), "run", "--repo", str(repo)]
    cmd += ["--pipeline", str(pipeline), "--input", INPUT_RUN, "--output-run", run]
    cmd += ["--workers", str(workers), "--junk-tarball"]
    wall = _run(cmd, log)
    report = subprocess.run(
        [str(BIN / "skybatch"), "--home", str(home), "report", run, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(report.stdout)
    if data["state"] != "succeeded":
        sys.exit(f"skybatch run {run} did not succeed: {data['jobs']}")
    return wall, data["summary"]["phases_s"], data["jobs"]


def _wrapper_s(report: dict[str, Any]) -> float:
    """A job's seconds in the wrapper: its measured wall time and reading its spec."""
    return float(report["stats"]["wall_s"]) + report["phases_s"].get("spec", 0.0)


def print_wrapper_phases(
    reports: list[list[dict[str, Any]]],
    run_phases: list[dict[str, float]],
    n_quanta: int,
    workers: int,
) -> None:
    """Where a quantum's time goes inside the job wrapper (each job's ``phases_s``), and
    how much of the workers' time in the execution phase is outside every job."""
    jobs = [r for run in reports for r in run]
    if not jobs or not any(r.get("phases_s") for r in jobs):
        print("job reports hold no phases_s (a skybatch before it recorded them)")
        return
    names = [n for n in PHASES if any(n in r.get("phases_s", {}) for r in jobs)]
    names += sorted({n for r in jobs for n in r.get("phases_s", {})} - set(names))
    totals = {
        n: statistics.median(sum(r["phases_s"].get(n, 0.0) for r in run) for run in reports)
        for n in names
    }
    wrapper = statistics.median(sum(_wrapper_s(r) for r in run) for run in reports)
    execution = statistics.median(p.get("execute", 0.0) for p in run_phases)
    outside = execution * workers - wrapper
    print(
        f"where a quantum's time goes in skybatch's job wrapper ({len(reports[0])} jobs "
        f"of {n_quanta} quanta per run; median of the runs' totals; ms/quantum = total "
        f"over quanta; median ms per job over all jobs of all runs):"
    )
    print(f"{'phase':<20} {'total s':>8} {'ms/quantum':>11} {'median ms/job':>14} {'share':>6}")
    for name in names:
        each = statistics.median(r["phases_s"].get(name, 0.0) for r in jobs)
        print(
            f"{name:<20} {totals[name]:>8.2f} {1000 * totals[name] / n_quanta:>11.1f} "
            f"{1000 * each:>14.1f} {100 * totals[name] / wrapper:>5.0f}%"
        )
    rest = wrapper - sum(totals.values())
    print(f"{'(not in a phase)':<20} {rest:>8.2f} {1000 * rest / n_quanta:>11.1f}")
    print(
        f"{'job wrapper in all':<20} {wrapper:>8.2f} {1000 * wrapper / n_quanta:>11.1f} "
        f"{1000 * statistics.median(_wrapper_s(r) for r in jobs):>14.1f}"
    )
    print(
        f"outside the wrapper: {outside:.2f} worker-s of the execution phase's "
        f"{execution:.2f} s x {workers} workers ({1000 * outside / n_quanta:.1f} ms/quantum: "
        "spec and report files, engine hand-off, workers waiting for ready jobs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=26, help="visits in the repository")
    parser.add_argument("--detectors", type=int, default=16, help="detectors per visit")
    parser.add_argument("--slice-visits", type=int, default=2, help="visits of the -j 2 slice")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (median shown)")
    parser.add_argument("--workers", type=int, default=2, help="skybatch workers")
    parser.add_argument("--workdir", type=Path, default=None, help="where the repo is built")
    parser.add_argument(
        "--no-slice", action="store_true", help="skip pipetask -j 2 (slow; quick iterations)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="run-overhead-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        repo = build_repo(root / "repo", args.visits, args.detectors)
        pipeline = write_pipeline(root / "mock_drp.yaml")
        print(
            f"repository with {args.visits} visits x {args.detectors} detectors built in "
            f"{time.perf_counter() - start:.1f} s"
        )
        first = 1000  # the demo geometry numbers visits from 1000
        slice_where = f"visit IN ({', '.join(str(first + i) for i in range(args.slice_visits))})"

        # QuantumGraph generation runs right before each skybatch run (paired), so that
        # the comparison does not depend on how fast the machine is at the moment.
        qg_times: list[float] = []
        qg_paused_times: list[float] = []
        _, n_quanta = qg_generation(repo, pipeline, "", root / "warm-up.qg")  # page cache
        _, n_slice = qg_generation(repo, pipeline, slice_where, root / "slice.qg")
        print(f"graph: {n_quanta} quanta; slice ({slice_where}): {n_slice} quanta")

        results: dict[str, list[float]] = {"pt1": [], "pt2": [], "sb": []}
        phases: list[dict[str, float]] = []
        reports: list[list[dict[str, Any]]] = []
        outputs: dict[str, int] = {}
        for i in range(args.repeats):
            run = f"bench/pt1/{i}"
            results["pt1"].append(pipetask(repo, pipeline, run, 1, "", root / f"{i}-pt1.log"))
            outputs["pipetask -j 1"] = count_outputs(repo, run)
            if not args.no_slice:
                run = f"bench/pt2/{i}"
                log = root / f"{i}-pt2.log"
                results["pt2"].append(pipetask(repo, pipeline, run, 2, slice_where, log))
            qg_times.append(qg_generation(repo, pipeline, "", root / f"qg-{i}.qg")[0])
            path = root / f"qg-paused-{i}.qg"
            qg_paused_times.append(qg_generation(repo, pipeline, "", path, "paused")[0])
            run = f"bench/sb/{i}"
            home = root / f"home-{i}"
            log = root / f"{i}-sb.log"
            wall, run_phases, jobs = skybatch(home, repo, pipeline, run, args.workers, log)
            results["sb"].append(wall)
            phases.append(run_phases)
            reports.append(job_reports(home))
            outputs["skybatch run"] = count_outputs(repo, run)
            print(
                f"  repeat {i + 1}/{args.repeats}: pipetask -j 1 {results['pt1'][-1]:.1f} s, "
                f"pipetask -j 2 (slice) {results['pt2'][-1] if results['pt2'] else 0:.1f} s, "
                f"skybatch {wall:.1f} s ({jobs})",
                flush=True,
            )

    if args.no_slice:
        results["pt2"] = [float("nan")]
    med = {k: statistics.median(v) for k, v in results.items()}
    qg = statistics.median(qg_times)
    qg_paused = statistics.median(qg_paused_times)
    graph_keys = ("expand", "workflow")
    prep_keys = (*graph_keys, "provenance", "init_outputs", "inputs")
    graph_each = [sum(p.get(k, 0.0) for k in graph_keys) for p in phases]
    graph_s = statistics.median(graph_each)
    prep = statistics.median(sum(p.get(k, 0.0) for k in prep_keys) for p in phases)
    # Extra time of each skybatch run over the generation run just before it.
    extra = statistics.median(g / q - 1 for g, q in zip(graph_each, qg_times, strict=True))
    extra_paused = statistics.median(
        g / q - 1 for g, q in zip(graph_each, qg_paused_times, strict=True)
    )
    expand = statistics.median(p.get("expand", 0.0) for p in phases)
    per_q = {"pt1": med["pt1"] / n_quanta, "pt2": med["pt2"] / n_slice, "sb": med["sb"] / n_quanta}

    print()
    print(
        f"DRP-shaped mock graph, {n_quanta} quanta; median of {args.repeats} runs; "
        f"wall time from pipeline file to outputs in the Butler"
    )
    print(f"{'mode':<34} {'quanta':>7} {'wall s':>8} {'ms/quantum':>11}")
    rows = [
        ("pipetask run -j 1", "pt1", n_quanta),
        ("pipetask run -j 2 (slice)", "pt2", n_slice),
        (f"skybatch run --workers {args.workers}", "sb", n_quanta),
    ]
    for label, key, n in rows:
        print(f"{label:<34} {n:>7} {med[key]:>8.2f} {1000 * per_q[key]:>11.1f}")
    print(f"outputs in the Butler per run: {outputs}")
    print()
    print(f"skybatch vs pipetask -j 1: {med['pt1'] / med['sb']:.2f}x faster (target >= 3x)")
    print(
        f"skybatch vs pipetask -j 2, per quantum: {per_q['pt2'] / per_q['sb']:.1f}x faster "
        f"(target >= 10x)"
    )
    print()
    print(f"QuantumGraph generation alone (imports, pipe_base builder, write): {qg:.2f} s")
    print(
        f"skybatch graph building: {graph_s:.2f} s (expansion {expand:.2f} s with the same "
        f"builder, then the workflow: jobs, file ids and paths {graph_s - expand:.2f} s)"
    )
    print(
        "  per repeat (generation s / skybatch graph building s): "
        + ", ".join(f"{q:.2f}/{g:.2f}" for q, g in zip(qg_times, graph_each, strict=True))
    )
    print(
        f"skybatch time on top of QuantumGraph generation: {graph_s - qg:+.2f} s; median of "
        f"the paired runs {100 * extra:+.1f}% (target <= 10%)"
    )
    print(
        f"same, against pipe_base's generation with the collector paused as skybatch "
        f"pauses it ({qg_paused:.2f} s): {graph_s - qg_paused:+.2f} s; paired "
        f"{100 * extra_paused:+.1f}% (skybatch's own extra work)"
    )
    print(
        f"all submission steps before the first job (graph building, provenance files, "
        f"init-outputs, input registration): {prep:.2f} s = {100 * (prep - qg) / qg:+.1f}% "
        "on top"
    )
    print(
        "median phases of skybatch run (s): "
        + ", ".join(
            f"{k} {statistics.median(p.get(k, 0.0) for p in phases):.2f}" for k in phases[0]
        )
    )
    print()
    print_wrapper_phases(reports, phases, n_quanta, args.workers)


if __name__ == "__main__":
    main()
