"""Cost of building the workflow from a quantum graph, against generating the graph.

`skybatch run` expands the pipeline into a pipe_base quantum graph
(:func:`skybatch.graph.expand.expand`: ``AllDimensionsQuantumGraphBuilder`` with
datastore records, written to a ``.qg`` file), then builds the workflow from it
(:func:`skybatch.graph.build.build_workflow`: jobs, their input and output files with
predicted paths, dependencies). The workflow step should cost little next to the
graph generation. For two sizes of the DRP-shaped mock repository of ``_mock_drp.py``
this builds the repository, expands once (timed: the graph generation), then times
``build_workflow`` (median of --repeats, each on a fresh graph: the expansion's own
graph first, as `skybatch run` passes it, then graphs read back from the file, the
reading not timed; the repository configuration is the one the expansion read, as in
`skybatch run`) with the fast path and with the reference path (execution quanta and
the datastore's FileTemplate; ``fast=False``), checks that both give the same jobs,
and prints quanta, seconds, ms per quantum, the ratio workflow / graph generation,
what reading the repository configuration adds when no expansion read it before (a
workflow built from a graph file in a new process) and how cost grows with size.

    python benchmarks/workflow_build.py [--sizes 8x16,32x16] [--repeats 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _mock_drp import INPUT_RUN, build_repo, write_pipeline

from skybatch.graph import expand as expand_module
from skybatch.graph.build import build_workflow, read_graph
from skybatch.graph.expand import DatastorePaths, expand


def _build(graph: Any, qgraph: Path, repo: Path, fast: bool) -> tuple[float, Any]:
    gc.collect()  # no collection of earlier garbage inside the timing
    start = time.perf_counter()
    workflow = build_workflow(
        graph,
        qgraph_path=qgraph,
        repo=repo,
        butler_config=repo / "butler.yaml",
        run=graph.header.output_run,
        pipeline="mock_drp.yaml",
        input_collections=[INPUT_RUN],
        where="",
        expansion_s=0.0,
        fast=fast,
    )
    return time.perf_counter() - start, workflow


def bench(workdir: Path, visits: int, detectors: int, repeats: int) -> dict[str, float]:
    name = f"{visits}x{detectors}"
    repo = workdir / f"repo-{name}"
    start = time.perf_counter()
    build_repo(repo, visits, detectors)
    repo_s = time.perf_counter() - start
    pipeline = write_pipeline(workdir / "mock_drp.yaml")
    qgraph = workdir / f"graph-{name}.qg"
    start = time.perf_counter()
    expansion = expand(repo, str(pipeline), [INPUT_RUN], f"bench/wf/{name}", "", qgraph)
    graph_s = time.perf_counter() - start
    times: dict[bool, list[float]] = {True: [], False: []}
    jobs: dict[bool, Any] = {}
    for fast in (True, False):
        for i in range(repeats):
            graph = expansion.graph if i == 0 and fast else read_graph(qgraph)
            elapsed, workflow = _build(graph, qgraph, repo, fast)
            times[fast].append(elapsed)
            jobs[fast] = workflow.jobs
    if jobs[True] != jobs[False]:
        sys.exit(f"{name}: the fast and reference paths give different workflows")
    # What build_workflow adds in a process that did not expand the graph itself.
    expand_module._CONFIGS.clear()
    start = time.perf_counter()
    DatastorePaths(repo / "butler.yaml", expansion.graph.pipeline_graph.universe)
    config_s = time.perf_counter() - start
    quanta = expansion.total_quanta
    fast_s, reference_s = statistics.median(times[True]), statistics.median(times[False])
    return {
        "quanta": quanta,
        "repo_s": repo_s,
        "graph_s": graph_s,
        "workflow_s": fast_s,
        "reference_s": reference_s,
        "graph_ms_per_q": 1000 * graph_s / quanta,
        "workflow_ms_per_q": 1000 * fast_s / quanta,
        "reference_ms_per_q": 1000 * reference_s / quanta,
        "ratio": fast_s / graph_s,
        "config_s": config_s,
        "speedup": reference_s / fast_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8x16,32x16", help="VISITSxDETECTORS,...")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="skybatch-wf-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = []
        for visits, detectors in sizes:
            result = bench(workdir, visits, detectors, args.repeats)
            results.append(((visits, detectors), result))
            print(
                f"{visits:3d} visits x {detectors:2d} detectors: {result['quanta']:5.0f} quanta | "
                f"graph generation {result['graph_s']:6.2f} s "
                f"({result['graph_ms_per_q']:.2f} ms/quantum) | "
                f"workflow {result['workflow_s']:.3f} s "
                f"({result['workflow_ms_per_q']:.3f} ms/quantum, "
                f"{100 * result['ratio']:.1f}% of graph generation) | "
                f"reference path {result['reference_s']:.3f} s "
                f"({result['reference_ms_per_q']:.3f} ms/quantum, "
                f"fast path {result['speedup']:.1f}x faster) | reading the repository "
                f"config without an expansion first: +{result['config_s']:.3f} s | repo built "
                f"in {result['repo_s']:.0f} s",
                flush=True,
            )
        (_, small), (_, large) = results[0], results[-1]
        if len(results) > 1:
            growth = large["quanta"] / small["quanta"]
            print(
                f"growth: {growth:.1f}x quanta -> graph generation "
                f"{large['graph_s'] / small['graph_s']:.1f}x, workflow "
                f"{large['workflow_s'] / small['workflow_s']:.1f}x, reference path "
                f"{large['reference_s'] / small['reference_s']:.1f}x"
            )


if __name__ == "__main__":
    main()
