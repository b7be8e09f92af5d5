"""The LSST middleware's INFO logging goes to the run's log file, not the terminal.

`skybatch run` (like `manager run` and `demo run`, which run groups through the same
driver) keeps pipe_base's and daf_butler's INFO records (graph building, ingest) in
``WORKDIR/run.log``; the terminal shows them only when a level is asked for.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from runworld import run_command

from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import Survey

pytestmark = pytest.mark.slow


def _run(home: Path, survey: Survey, run: str, *options: str) -> list[dict[str, str]]:
    """Run the demo's step 1 with JSON log lines; the records written to stderr."""
    proc = subprocess.run(
        run_command(
            home,
            survey,
            run,
            "--workers",
            "2",
            pipeline=f"{pipeline_path()}#step1",
            global_options=("--log-json", *options),
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


def _middleware_info(records: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in records if r["logger"].startswith("lsst.") and r["level"] == "INFO"]


def test_middleware_info_goes_to_the_run_log_unless_a_level_is_asked(
    survey: Survey, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    quiet = _run(home, survey, "quiet/run")
    assert _middleware_info(quiet) == []
    log = (home / "runs" / "quiet_run" / "run.log").read_text()
    assert " INFO lsst.pipe.base" in log  # the graph builder's records, kept

    shown = _run(home, survey, "shown/run", "--log-level", "INFO")
    assert _middleware_info(shown) != []
    assert " INFO lsst.pipe.base" in (home / "runs" / "shown_run" / "run.log").read_text()
