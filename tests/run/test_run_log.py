"""The LSST middleware's INFO logging goes to the run's log file, not the terminal, and
each run's log holds only that run's records when several runs share a process.

`skybatch run` (like `manager run` and `demo run`, which run groups through the same
driver) keeps pipe_base's and daf_butler's INFO records (graph building, ingest) in
``WORKDIR/run.log``; the terminal shows them only when a level is asked for.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from runworld import run_command

from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import Survey
from skybatch.logging_setup import configure_logging
from skybatch.run.runlog import current_run_log, in_this_run, run_log


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


@pytest.mark.slow
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


# -- several runs in one process -------------------------------------------------------

_log = logging.getLogger("skybatch.test.runlog")


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """The terminal as ``skybatch`` sets it up without ``--log-level`` (JSON lines on
    stderr); what was printed; the root logger restored afterwards."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    root.setLevel(logging.WARNING)
    configure_logging("INFO", json_format=True, middleware=False)
    yield stderr.getvalue
    for handler in root.handlers:
        if handler not in saved[1]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[0])


def _lines(path: Path) -> list[str]:
    """The messages of a run log's records (the text after ``logger: ``)."""
    return [line.split(": ", 1)[1] for line in path.read_text().splitlines()]


def test_concurrent_runs_keep_their_own_records(
    tmp_path: Path, terminal: Callable[[], str]
) -> None:
    """Two runs logging at once from two threads, each also from a thread it started
    for itself and from a pool; a thread started without :func:`in_this_run` and the
    main thread belong to no run."""
    turns = threading.Barrier(2, timeout=30)
    logs: dict[str, Path] = {}

    def run(name: str) -> None:
        with run_log(tmp_path / name) as path:
            logs[name] = path
            assert current_run_log() == path
            for i in range(20):
                turns.wait()  # the two runs' records interleave
                _log.info("%s record %d", name, i)
            helper = threading.Thread(target=in_this_run(lambda: _log.info("%s helper", name)))
            helper.start()
            helper.join()
            with ThreadPoolExecutor(2) as pool:
                pool.submit(in_this_run(_log.info), "%s pooled", name).result()
            stray = threading.Thread(target=lambda: _log.info("%s stray thread", name))
            stray.start()
            stray.join()
            logging.getLogger("lsst.pipe.base.test").info("%s middleware", name)
            turns.wait()  # both still open: neither run's end cuts the other's records

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    _log.info("main thread, no run")
    for thread in threads:
        thread.join()

    for name in ("a", "b"):
        assert _lines(logs[name]) == [
            *(f"{name} record {i}" for i in range(20)),
            f"{name} helper",
            f"{name} pooled",
            f"{name} middleware",
        ]
    assert current_run_log() is None
    shown = terminal()
    assert "a stray thread" in shown and "main thread, no run" in shown
    assert "middleware" not in shown  # the middleware's INFO stays off the terminal


def test_the_root_level_stays_lowered_until_the_last_run_ends(
    tmp_path: Path, terminal: Callable[[], str]
) -> None:
    """Run a starts first and ends while run b goes on: b's INFO records are still
    written (a must not put back the level it found under b), whatever the terminal's
    level (here ``--log-level WARNING``)."""
    configure_logging("WARNING", json_format=True, middleware=True)
    root = logging.getLogger()
    assert root.level == logging.WARNING
    a_open, b_open = threading.Event(), threading.Event()

    def run_a() -> None:
        with run_log(tmp_path / "a"):
            a_open.set()
            assert b_open.wait(30)

    thread = threading.Thread(target=run_a)
    thread.start()
    assert a_open.wait(30)
    with run_log(tmp_path / "b") as path:
        b_open.set()
        thread.join()
        logging.getLogger("lsst.daf.butler.test").info("after a ended")
    assert _lines(path) == ["after a ended"]
    assert root.level == logging.WARNING
    assert "after a ended" not in terminal()
