"""The demo campaign on a real Slurm: the same outputs as on the local engine, and a
manager killed while its jobs sit in Slurm reattaches to them instead of submitting
them again.

"The same outputs": the same dataset types and data ids in every run; images (FITS)
byte-identical (same md5); tables (parquet) with identical data: their files differ
only in the provenance the Butler writes into them (the UUIDs of the dataset, its
quantum and inputs, new in every run); task logs, task metadata and package lists
record times and hosts, so only their presence is compared.

Skipped, with the reason, when no Slurm controller answers (``scripts/slurm/up.sh``
starts one on this machine; ``.ci/run`` does before the tests).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.backbone.models import FileRow
from skybatch.campaign.demo import demo_campaign_path, run_demo_campaign
from skybatch.campaign.models import CampaignGroupRow, CampaignRow
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.engines.slurm.commands import SlurmCommands
from skybatch.read.campaigns import campaign_report
from skybatch.run.models import JobAttemptRow, JobRow, RunRow
from skybatch.settings import load_settings

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))
from slurmworld import require_slurm

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
SKYBATCH = str(Path(sys.executable).parent / "skybatch")

#: {run family (run name without the campaign id): {(dataset type, data id): (md5, path)}}
Checksums = dict[str, dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[str, str]]]


def _checksums(sessions: sessionmaker[Session], campaign_id: int) -> Checksums:
    """Every output file of the campaign's runs, by dataset type and data id."""
    out: Checksums = {}
    with sessions() as session:
        runs = list(
            session.scalars(
                select(CampaignGroupRow.run_name).where(CampaignGroupRow.campaign_id == campaign_id)
            )
        )
        rows = session.execute(
            select(
                FileRow.run, FileRow.dataset_type, FileRow.data_id, FileRow.md5, FileRow.path
            ).where(FileRow.run.in_(runs), FileRow.dataset_id.is_not(None))
        ).all()
    for run, dataset_type, data_id, md5, path in rows:
        name, _, rest = run.split("/", 2)
        key = (dataset_type, tuple(sorted((data_id or {}).items())))
        family = out.setdefault(f"{name}/{rest}", {})
        assert key not in family, f"{key} twice in {run}"
        family[key] = (md5, path)
    return out


def _same_outputs(got: Checksums, got_repo: Path, expected: Checksums, repo: Path) -> None:
    assert got.keys() == expected.keys()
    compared = {"md5": 0, "table": 0}
    for family, files in expected.items():
        assert files.keys() == got[family].keys(), family
        for key, (md5, path) in files.items():
            dataset_type = key[0]
            if dataset_type == "packages" or dataset_type.endswith(("_log", "_metadata")):
                continue  # times, hosts: different in every run by nature
            other_md5, other_path = got[family][key]
            if path.endswith(".parq"):
                mine = pq.read_table(repo / path).replace_schema_metadata(None)
                theirs = pq.read_table(got_repo / other_path).replace_schema_metadata(None)
                # DataFrame.equals: NaN (e.g. no reference match) equals NaN
                assert mine.to_pandas().equals(theirs.to_pandas()), (family, key)
                compared["table"] += 1
            else:
                assert md5 == other_md5, (family, key)
                compared["md5"] += 1
    assert compared["md5"] > 0 and compared["table"] > 0, compared


def _all_succeeded(sessions: sessionmaker[Session], campaign_id: int) -> None:
    with sessions() as session:
        report = campaign_report(session, campaign_id)
    assert [s.state for s in report.steps] == ["succeeded", "succeeded"]
    for label, counts in report.tasks.items():
        assert counts.succeeded == counts.expected > 0, label


@pytest.fixture(autouse=True)
def _slurm() -> None:
    require_slurm()


def test_demo_campaign_on_slurm_matches_the_local_engine_and_survives_a_manager_kill(
    _pristine_demo_survey: Path, tmp_path: Path
) -> None:
    local_survey = tmp_path / "local"
    shutil.copytree(_pristine_demo_survey, local_survey, symlinks=True)
    local_settings = load_settings(home=tmp_path / "local-home")
    local = run_demo_campaign(local_settings, local_survey)
    assert local.succeeded
    expected = _checksums(open_state_db(local_settings), local.campaign_id)
    assert len(expected) == 4 and all(expected.values())

    survey = tmp_path / "slurm"
    shutil.copytree(_pristine_demo_survey, survey, symlinks=True)
    home = tmp_path / "slurm-home"
    settings = load_settings(home=home)
    environ = {
        **os.environ,
        "DEMO_SURVEY": str(survey),
        "DEMO_SITE": "demo_site_slurm.yaml",
        "DEMO_WORKERS": "2",
    }
    campaign_id = submit_campaign(settings, demo_campaign_path(), environ).id
    sessions = open_state_db(settings)
    log = (tmp_path / "manager.log").open("ab")
    command = [SKYBATCH, "--home", str(home), "manager", "run", "--once"]
    manager = subprocess.Popen(command, stdout=log, stderr=log)
    try:
        in_slurm = _wait_for_jobs_in_slurm(sessions, manager)
    finally:
        manager.send_signal(signal.SIGKILL)  # the manager dies; its Slurm jobs do not
        manager.wait()
    # One job script serves every group (the manager's one engine), in its pool
    # directory; each array's spec list and Slurm's logs are beside its jobs, in the
    # work directory of the group's run.
    scripts = list(home.rglob("job-*.sbatch"))
    assert len(scripts) == 1 and scripts[0].parent.parent == home / "pool", scripts
    lists = list(home.rglob("array-*.list"))
    assert lists and all(home / "runs" in p.parents for p in lists), lists
    final = subprocess.run(command, stdout=log, stderr=log, timeout=900)
    log.close()
    assert final.returncode == 0, (tmp_path / "manager.log").read_text()[-3000:]
    with sessions() as session:
        assert session.get(CampaignRow, campaign_id).state == "succeeded"  # type: ignore[union-attr]
        engine_ids = {
            name: (engine_id, attempts)
            for name, engine_id, attempts in session.execute(
                select(JobRow.name, JobAttemptRow.engine_id, JobRow.attempts)
                .join(JobAttemptRow, JobAttemptRow.job_id == JobRow.id)
                .where(JobAttemptRow.attempt == 1)
            )
        }
        engines = set(session.scalars(select(RunRow.engine)))
    assert engines == {"slurm"}
    # The jobs that were in Slurm when the manager died ran once: reattached, polled,
    # never submitted again.
    for name, engine_id in in_slurm.items():
        assert engine_ids[name] == (engine_id, 1), name
    _all_succeeded(sessions, campaign_id)
    # The campaign's end cleanup took the runs' Slurm files away with the work
    # directories; the pool keeps only its job scripts.
    assert not list(home.rglob("slurm-*.out")) and not list(home.rglob("array-*.list"))
    assert all(p.parent.parent == home / "pool" for p in home.rglob("*.sbatch"))
    _same_outputs(
        _checksums(sessions, campaign_id), survey / "repo", expected, local_survey / "repo"
    )


def _wait_for_jobs_in_slurm(
    sessions: sessionmaker[Session], manager: subprocess.Popen[bytes], timeout_s: float = 300
) -> dict[str, str]:
    """Wait until jobs of the campaign are queued or running in Slurm; return their ids."""
    deadline = time.monotonic() + timeout_s
    queue = SlurmCommands()
    while time.monotonic() < deadline and manager.poll() is None:
        with sessions() as session:
            rows = session.execute(
                select(JobRow.name, JobRow.engine_id).where(
                    JobRow.state.in_(["submitted", "running"]), JobRow.engine_id.is_not(None)
                )
            ).all()
        if len(rows) >= 2:
            states = queue.squeue()
            active = {n: str(i) for n, i in rows if i in states and states[i].state != "COMPLETED"}
            if active:
                return active
        time.sleep(0.05)
    raise AssertionError(f"no job of the campaign went to Slurm (manager exit {manager.poll()})")
