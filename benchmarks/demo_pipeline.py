"""Wall time of the demo pipeline under `pipetask run` for two survey sizes.

Prints, per size: quanta, median wall seconds over --runs runs, seconds per quantum,
and the survey build time; then how cost grows from the small to the large survey
(time ratio against quanta ratio). Each run writes a fresh output collection.

    python benchmarks/demo_pipeline.py [--runs 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from skybatch.demo.driver import run_with_pipetask
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import build_survey

SIZES = {
    "small": SurveyParams(visits=2, detectors=2, size=256),
    "default": SurveyParams(visits=6, detectors=4, size=256),
}


def bench(name: str, params: SurveyParams, workdir: Path, runs: int) -> dict[str, float]:
    start = time.perf_counter()
    survey = build_survey(workdir / name, params)
    build_s = time.perf_counter() - start
    walls: list[float] = []
    quanta = 0
    for i in range(runs):
        result = run_with_pipetask(survey, output=f"bench/{name}/{i}", show_progress=False)
        walls.append(result.wall_s)
        quanta = result.quanta
    wall = statistics.median(walls)
    return {"quanta": quanta, "wall_s": wall, "s_per_quantum": wall / quanta, "build_s": build_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per size (median reported)")
    parser.add_argument("--workdir", type=Path, default=None, help="where surveys are built")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = {name: bench(name, p, Path(tmp), args.runs) for name, p in SIZES.items()}
    print(f"demo pipeline with `pipetask run -j 1`, median of {args.runs} runs")
    print(
        f"{'survey':<10} {'shape':<22} {'quanta':>7} {'wall s':>8} {'s/quantum':>10} {'build s':>8}"
    )
    for name, r in results.items():
        p = SIZES[name]
        shape = f"{p.visits}v x {p.detectors}d x {p.size}px"
        print(
            f"{name:<10} {shape:<22} {r['quanta']:>7.0f} {r['wall_s']:>8.2f} "
            f"{r['s_per_quantum']:>10.3f} {r['build_s']:>8.2f}"
        )
    small, large = results["small"], results["default"]
    print(
        f"growth small->default: quanta x{large['quanta'] / small['quanta']:.2f}, "
        f"wall x{large['wall_s'] / small['wall_s']:.2f}, "
        f"s/quantum x{large['s_per_quantum'] / small['s_per_quantum']:.2f}"
    )


if __name__ == "__main__":
    main()
