"""`skybatch run` as a user types it, for the end-to-end tests of tests/run, and the
outputs a run leaves in the Butler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lsst.daf.butler import Butler

from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey

SKYBATCH = str(Path(sys.executable).parent / "skybatch")

#: (dataset type, sorted required data id) of every dataset of a run.
Outputs = set[tuple[str, tuple[tuple[str, object], ...]]]


def run_command(
    home: Path,
    survey: Survey,
    run: str,
    *options: str,
    pipeline: str | Path | None = None,
    global_options: tuple[str, ...] = (),
) -> list[str]:
    """``skybatch --home HOME run`` of the demo pipeline (or ``pipeline``) on the
    survey's defaults into ``run``, then ``options``."""
    return [
        SKYBATCH,
        "--home",
        str(home),
        *global_options,
        "run",
        "--repo",
        str(survey.repo),
        "--pipeline",
        str(pipeline or pipeline_path()),
        "--input",
        DEFAULTS,
        "--output-run",
        run,
        *options,
    ]


def run_outputs(repo: Path, run: str) -> Outputs:
    with Butler.from_config(str(repo)) as butler:
        refs = butler.query_all_datasets(run, find_first=False, limit=None)
        return {(r.datasetType.name, tuple(sorted(r.dataId.required.items()))) for r in refs}


def skybatch_killed_at(
    cmd: list[str], point: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (the CLI), SIGKILLed by itself at the kill point ``point``
    (:mod:`skybatch.faults`) if given; no kill point is inherited otherwise."""
    from skybatch.faults import ENV

    env = {k: v for k, v in os.environ.items() if k != ENV}
    if point is not None:
        env[ENV] = point
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
