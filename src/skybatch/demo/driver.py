"""Drivers behind ``skybatch demo``: build a survey, and run the demo pipeline on it
with ``pipetask``.

``skybatch demo run`` runs the demo campaign
(:func:`skybatch.campaign.demo.run_demo_campaign`) over a survey built here;
:func:`check_home` refuses, before anything is built, a skybatch home that archives
another repository. :func:`run_with_pipetask` runs the LSST ``pipetask run`` command
over the survey: the reference way to execute a pipeline on one machine, kept for
benchmarks and tests that compare against it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..errors import ExternalToolError, InputError
from ..progress import ProgressFactory, make_progress
from .params import SurveyParams
from .survey import DEFAULTS, PostgresRegistry, Survey, build_survey

if TYPE_CHECKING:
    from ..settings import Settings

_EXECUTED = re.compile(r"Executed (\d+) quanta successfully, (\d+) failed and (\d+) remain")
_GRAPH = re.compile(r"QuantumGraph contains (\d+) quanta")


def pipeline_path() -> Path:
    """The packaged demo pipeline (``pipelines/demo_drp.yaml`` in the source tree)."""
    return Path(str(resources.files("skybatch.demo") / "pipelines" / "demo_drp.yaml"))


def init_survey(
    directory: Path,
    params: SurveyParams,
    progress: ProgressFactory | None = None,
    registry: PostgresRegistry | None = None,
    datastore: str | None = None,
) -> Survey:
    """Build the demo survey in ``directory``, its registry in SQLite or ``registry``,
    its datastore there or at ``datastore`` (e.g. ``s3://bucket/demo``)."""
    return build_survey(directory, params, progress, registry, datastore)


def _require_survey(survey: Survey) -> None:
    if not survey.repo.joinpath("butler.yaml").exists():
        raise InputError(
            f"no demo survey in {survey.root}",
            where=str(survey.root),
            hint="create one with `skybatch demo init DIR` first",
        )


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def check_home(settings: Settings, survey: Survey, datastore: str | None = None) -> None:
    """Refuse a skybatch home whose archive endpoint is rooted at another repository.

    Submitting the demo campaign would refuse it too, but only after the survey is
    built. Nothing is written: the survey may not be built yet (its datastore root is
    then its repository directory, or ``datastore`` when one is given).
    """
    from ..backbone.roots import resolve_root
    from ..backbone.service import Backbone
    from ..repository import resolve_repository

    root: str | Path
    if survey.repo.joinpath("butler.yaml").exists():
        root = resolve_repository(survey.repo, where=str(survey.repo)).archive_root
    elif datastore is not None:
        root = datastore
    else:
        root = resolve_root(survey.repo)
    Backbone.from_settings(settings).archive_of(
        root, subject="the demo survey's repository", where=str(settings.home)
    )


@dataclass
class PipetaskResult:
    survey: Survey
    output: str
    quanta: int
    failed: int
    wall_s: float
    log_path: Path
    datasets: Counter[str] = field(default_factory=Counter)


def run_with_pipetask(
    survey: Survey,
    output: str | None = None,
    processes: int = 1,
    pipeline: Path | None = None,
    data_query: str = "",
    console: Console | None = None,
    show_progress: bool = True,
) -> PipetaskResult:
    """Run ``pipetask run`` for the demo pipeline; raise ExternalToolError on failure.

    The reference executor (benchmarks, tests); ``skybatch demo run`` runs the demo
    campaign instead.
    """
    _require_survey(survey)
    stamp = _stamp()
    output = output or f"demo/pipetask/{stamp}"
    log_dir = survey.root / "logs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"pipetask-{stamp}.log"
    command = [
        sys.executable,
        "-c",
        "import sys; from lsst.ctrl.mpexec.cli.pipetask import main; sys.exit(main())",
        "run",
        "-b",
        str(survey.repo),
        "-i",
        DEFAULTS,
        "-o",
        output,
        "-p",
        str(pipeline or pipeline_path()),
        "-j",
        str(processes),
        "--register-dataset-types",
    ]
    if data_query:
        command += ["-d", data_query]
    start = time.perf_counter()
    total = executed = failed = 0
    with log_path.open("w") as log, make_progress(console, disable=not show_progress) as bar:
        task = bar.add_task("building quantum graph", total=None)
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if m := _GRAPH.search(line):
                total = int(m.group(1))
                bar.update(task, description="running quanta", total=total, completed=0)
            elif m := _EXECUTED.search(line):
                executed, failed = int(m.group(1)), int(m.group(2))
                bar.update(task, completed=executed + failed)
        returncode = proc.wait()
    wall = time.perf_counter() - start
    if returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise ExternalToolError(
            f"pipetask run failed ({failed} of {total} quanta failed)",
            command=command,
            returncode=returncode,
            stderr="\n".join(tail),
            where=str(log_path),
            hint=f"read the full log in {log_path}",
        )
    result = PipetaskResult(survey, output, total, failed, wall, log_path)
    result.datasets = count_outputs(survey, output)
    return result


def count_outputs(survey: Survey, collection: str) -> Counter[str]:
    from lsst.daf.butler import Butler

    counts: Counter[str] = Counter()
    with Butler.from_config(str(survey.repo)) as butler:
        for name in ("postISRCCD", "calexp", "src", "visitSummary", "deepCoadd", "deepCoadd_src"):
            counts[name] = len(butler.query_datasets(name, collections=collection, explain=False))
    return counts


__all__ = [
    "PipetaskResult",
    "check_home",
    "count_outputs",
    "init_survey",
    "pipeline_path",
    "run_with_pipetask",
]
