"""SIGKILL of ``skybatch manager run`` at several points of the demo campaign, and in
each phase of a group's run with several groups in flight in the execution pool (the
fault-injection points of the set-up and finish in the bookkeeping process kill the
manager's whole tree): after restarts, the outputs are those of an uninterrupted
run; no succeeded job ran again; nothing is duplicated or lost."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from lsst.daf.butler import Butler
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import FileRow
from skybatch.campaign.demo import demo_campaign_path, run_demo_campaign
from skybatch.campaign.models import CampaignGroupRow, CampaignRow
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.read.campaigns import campaign_history, campaign_report
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow
SKYBATCH = str(Path(sys.executable).parent / "skybatch")

Outputs = dict[str, set[tuple[str, tuple[tuple[str, object], ...]]]]
Probe = Callable[[Session], bool]


def _outputs(repo: Path, runs: list[str]) -> Outputs:
    """Dataset types and data ids per run family (the run name without campaign id)."""
    out: Outputs = {}
    with Butler.from_config(str(repo)) as butler:
        for run in runs:
            name, _, rest = run.split("/", 2)
            refs = butler.query_all_datasets(run, find_first=False, limit=None)
            out[f"{name}/{rest}"] = {
                (r.datasetType.name, tuple(sorted(r.dataId.required.items()))) for r in refs
            }
    return out


def _runs(sessions: sessionmaker[Session], campaign_id: int) -> list[str]:
    with sessions() as session:
        return sorted(
            session.scalars(
                select(CampaignGroupRow.run_name).where(CampaignGroupRow.campaign_id == campaign_id)
            )
        )


def _group_running(name: str) -> Probe:
    def probe(session: Session) -> bool:
        state = session.scalar(
            select(CampaignGroupRow.state).where(CampaignGroupRow.run_name.endswith(name))
        )
        return state == "running"

    return probe


def _jobs_done_in(name: str, at_least: int) -> Probe:
    def probe(session: Session) -> bool:
        done = session.execute(
            text(
                "SELECT count(*) FROM jobs JOIN runs ON runs.id = jobs.run_id "
                "WHERE runs.name LIKE :run AND jobs.state = 'succeeded'"
            ),
            {"run": f"%{name}"},
        ).scalar()
        return bool(done and done >= at_least)

    return probe


def _started(session: Session) -> bool:
    return True


#: Where the manager is killed, in order: (what must be true, then seconds to wait).
KILL_POINTS: list[tuple[str, Probe, float]] = [
    ("while starting up", _started, 1.0),
    ("in the middle of the first group's run", _jobs_done_in("visit_1000", 2), 0.0),
    ("while a group's run is being set up", _group_running("visit_1001"), 0.3),
    ("in the middle of the last step1 group", _jobs_done_in("visit_1002", 1), 0.0),
    ("while step2's group runs", _group_running("step2/all"), 1.5),
]


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the manager and its engine's workers at once (a node crash)."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    os.kill(proc.pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait()
    psutil.wait_procs(children, timeout=30)


@pytest.fixture(scope="module")
def expected(_pristine_demo_survey: Path, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """The outputs of the demo campaign run without interruption."""
    tmp_path = tmp_path_factory.mktemp("reference")
    reference_survey = tmp_path / "reference"
    shutil.copytree(_pristine_demo_survey, reference_survey, symlinks=True)
    reference_settings = load_settings(home=tmp_path / "reference-home")
    reference = run_demo_campaign(reference_settings, reference_survey)
    assert reference.succeeded
    outputs = _outputs(
        reference_survey / "repo",
        _runs(open_state_db(reference_settings), reference.campaign_id),
    )
    assert len(outputs) == 4 and all(outputs.values())
    return outputs


def _submit(pristine: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    survey = tmp_path / "killed"
    shutil.copytree(pristine, survey, symlinks=True)
    home = tmp_path / "home"
    settings = load_settings(home=home)
    environ = {**os.environ, "DEMO_SURVEY": str(survey), "DEMO_WORKERS": "2"}
    return survey, home, submit_campaign(settings, demo_campaign_path(), environ).id


def test_manager_killed_at_several_points_ends_as_an_uninterrupted_run(
    _pristine_demo_survey: Path, tmp_path: Path, expected: Outputs
) -> None:
    survey, home, campaign_id = _submit(_pristine_demo_survey, tmp_path)
    sessions = open_state_db(load_settings(home=home))
    command = [SKYBATCH, "--home", str(home), "manager", "run", "--once"]
    log = (tmp_path / "manager.log").open("ab")
    kills = []
    for where, probe, delay in KILL_POINTS:
        proc = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            with sessions() as session:
                if probe(session):
                    break
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is not None:
            break  # it finished before this point: later points cannot be reached
        _kill_tree(proc)
        kills.append(where)
    assert len(kills) >= 4, kills

    final = subprocess.run(command, stdout=log, stderr=log, timeout=600)
    log.close()
    assert final.returncode == 0, (tmp_path / "manager.log").read_text()[-3000:]
    _assert_as_uninterrupted(survey, sessions, campaign_id, expected)


#: Phases of a group's run in the bookkeeping process where the manager is killed:
#: expanding, finishing (ingest), cleaning intermediates; executing is the test above.
#: (Every set-up phase of a single run is killed in tests/run/test_run_setup_kill.py.)
POOL_PHASES = ["setup:expand", "finish:ingest", "finish:clean"]


@pytest.mark.parametrize("point", POOL_PHASES)
def test_manager_killed_in_a_group_phase_with_groups_in_flight(
    point: str, _pristine_demo_survey: Path, tmp_path: Path, expected: Outputs
) -> None:
    survey, home, campaign_id = _submit(_pristine_demo_survey, tmp_path)
    sessions = open_state_db(load_settings(home=home))
    command = [SKYBATCH, "--home", str(home), "manager", "run", "--once"]
    log_path = tmp_path / "manager.log"
    with log_path.open("ab") as log:
        killed = subprocess.run(
            command,
            stdout=log,
            stderr=log,
            timeout=600,
            env={**os.environ, "SKYBATCH_FAULT_KILL_AT": point},
        )
    assert killed.returncode == -signal.SIGKILL, log_path.read_text()[-3000:]
    with sessions() as session:
        in_flight = session.scalar(
            select(func.count()).where(
                CampaignGroupRow.campaign_id == campaign_id, CampaignGroupRow.state == "running"
            )
        )
    assert in_flight is not None and in_flight >= 2  # the pool had several groups

    with log_path.open("ab") as log:
        final = subprocess.run(command, stdout=log, stderr=log, timeout=600)
    assert final.returncode == 0, log_path.read_text()[-3000:]
    _assert_as_uninterrupted(survey, sessions, campaign_id, expected)


def _assert_as_uninterrupted(
    survey: Path, sessions: sessionmaker[Session], campaign_id: int, expected: Outputs
) -> None:
    with sessions() as session:
        assert session.get(CampaignRow, campaign_id).state == "succeeded"  # type: ignore[union-attr]
        # No job that had succeeded ran again.
        twice = session.execute(
            text(
                "SELECT job_id FROM job_attempts WHERE state = 'succeeded' "
                "GROUP BY job_id HAVING count(*) > 1"
            )
        ).all()
    assert twice == []
    runs = _runs(sessions, campaign_id)
    assert _outputs(survey / "repo", runs) == expected
    with sessions() as session:
        report = campaign_report(session, campaign_id)
        reasons = [e.reason for e in campaign_history(session, campaign_id)]
    for counts in report.tasks.values():
        assert counts.succeeded == counts.expected > 0
    assert "resumed after a manager restart" in reasons

    # The catalog holds each output once, and every Butler dataset has its file
    # (provenance files have no dataset id).
    with sessions() as session:
        datasets = FileRow.run.in_(runs) & FileRow.dataset_id.is_not(None)
        ids = session.execute(select(FileRow.dataset_id, FileRow.path).where(datasets)).all()
        n_distinct = session.scalar(
            select(func.count(func.distinct(FileRow.dataset_id))).where(datasets)
        )
    assert len(ids) == n_distinct
    with Butler.from_config(str(survey / "repo")) as butler:
        for run in runs:
            refs = butler.query_all_datasets(run, find_first=False, limit=None)
            in_catalog = {d for d, path in ids if path.startswith(f"{run}/")}
            assert {str(r.id) for r in refs} == in_catalog, run
            for ref in refs:
                assert Path(butler.getURI(ref).ospath).is_file()
    with sessions() as session:
        for path, size, md5 in session.execute(
            select(FileRow.path, FileRow.size_bytes, FileRow.md5).where(FileRow.run.in_(runs))
        ):
            assert md5_file(survey / "repo" / path) == (size, md5), path
