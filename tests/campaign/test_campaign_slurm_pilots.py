"""A 24-group campaign in Slurm pilot mode shares one set of pilots: Slurm never sees
more pilot allocations than the campaign's ``max_pilots``, in total, while the groups
run in flight together on the manager's one engine.

What Slurm saw is read from Slurm itself: a watcher lists this test's pilot jobs with
``squeue`` (which keeps finished jobs for ``MinJobAge``, 5 minutes with
``scripts/slurm/up.sh``) every half second during the campaign, and ``sacct`` confirms
the count afterwards when accounting is on. Pilots are told apart from other users'
(other tests on the same Slurm) by their queue directory in the command line.

Skipped, with the reason, when no Slurm controller answers (``scripts/slurm/up.sh``
starts one on this machine; ``.ci/run`` does before the tests).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from skybatch.campaign.manager import Manager
from skybatch.campaign.models import CampaignEventRow, CampaignGroupRow
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.demo.driver import pipeline_path
from skybatch.engines.slurm.states import FINISHED
from skybatch.run.models import QuantumRunRow, RunRow
from skybatch.settings import load_settings

sys.path.insert(0, str(Path(__file__).parents[1] / "engines"))
from slurmworld import require_slurm

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

VISITS = 24
MAX_PILOTS = 2


@pytest.fixture(autouse=True)
def _slurm() -> None:
    require_slurm()


@pytest.fixture(scope="module")
def _pristine_24_visits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 visits of one small detector: 24 groups of step 1, little work each."""
    from skybatch.demo.params import SurveyParams
    from skybatch.demo.survey import build_survey

    root = tmp_path_factory.mktemp("pilots-survey") / "survey"
    build_survey(root, SurveyParams(visits=VISITS, detectors=1, size=64, seed=24))
    return root


def _campaign(tmp_path: Path, survey: Path) -> Path:
    """Step 1 of the demo pipeline, one group per visit, on Slurm pilots. A pilot is
    wanted for every queued job (``jobs_per_pilot: 1``), so the backlog alone would
    ask for many more pilots than ``max_pilots``."""
    path = tmp_path / "pilots.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: pilots
            repo: {survey / "repo"}
            inputs: [DemoCam/defaults, DemoCam/calib]
            query: "instrument = 'DemoCam'"
            site: {{name: "site:local", shared_filesystem: true}}
            engine:
              name: slurm
              settings:
                mode: pilot
                pilot:
                  cores: 1
                  max_pilots: {MAX_PILOTS}
                  jobs_per_pilot: 1
                  memory_mb: 2048
                  walltime_s: 1800
                  idle_timeout_s: 120
                  heartbeat_s: 1
            policies:
              default_resources: {{memory_mb: 1024, cores: 1, walltime_s: 600}}
              concurrency: {{max_running_groups: 6}}
            steps:
              - name: step1
                pipeline: {pipeline_path()}#step1
                split: {{by: visit}}
            """
        )
    )
    return path


class _PilotWatcher:
    """Lists the pilot jobs Slurm knows whose command line names ``marker`` (this
    test's skybatch home), every ``interval_s``: every pilot ever seen, and the most
    not finished at one moment."""

    def __init__(self, marker: str, interval_s: float = 0.5) -> None:
        self.marker = marker
        self.interval_s = interval_s
        self.seen: set[str] = set()
        self.most_alive = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _PilotWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.look()  # the last word, after the manager closed its engine

    def look(self) -> None:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-n", "skybatch-pilot", "-o", "%i|%T|%o"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            self.errors.append(done.stderr.strip())
            return
        alive = 0
        for line in done.stdout.splitlines():
            job_id, state, command = [*line.split("|", 2), "", ""][:3]
            if self.marker not in command:
                continue  # another test's (or user's) pilot
            self.seen.add(job_id)
            if state.split(" ")[0] not in FINISHED:
                alive += 1
        self.most_alive = max(self.most_alive, alive)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.look()
            self._stop.wait(self.interval_s)


def _accounted_pilots(marker: str, since: str) -> set[str] | None:
    """Pilot jobs of ``marker`` in Slurm's accounting since ``since``; None when
    accounting is off (no slurmdbd)."""
    done = subprocess.run(
        [
            *("sacct", "-X", "-n", "-P", "-S", since, "--name=skybatch-pilot"),
            *("-o", "JobID,SubmitLine%4000"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = done.stdout + done.stderr
    if done.returncode != 0 or "accounting storage is disabled" in text:
        return None
    out: set[str] = set()
    for line in done.stdout.splitlines():
        job_id, _, submit_line = line.partition("|")
        if marker in submit_line:
            out.add(job_id)
    return out


def _started_tasks(ids: set[str]) -> set[str]:
    """Array tasks as squeue -r names them (``A_i``); sacct -X prints tasks that
    never left the queue as one ``A_[i-j]`` record."""
    return {i for i in ids if "[" not in i}


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_a_24_group_pilot_campaign_starts_no_more_pilots_than_max_pilots(
    _pristine_24_visits: Path, tmp_path: Path
) -> None:
    survey = tmp_path / "survey"
    shutil.copytree(_pristine_24_visits, survey, symlinks=True)
    home = tmp_path / "home"
    settings = load_settings(home=home)
    campaign_id = submit_campaign(settings, _campaign(tmp_path, survey)).id
    sessions = open_state_db(settings)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    started = time.monotonic()
    with _PilotWatcher(str(home)) as watcher, Manager(settings) as manager:
        assert manager.run_until_done(campaign_id) == "succeeded"
        assert manager.pool.engines_built == 1  # one engine (one pilot set) for all groups
    elapsed = time.monotonic() - started
    # The engine's own record: a heartbeat file per pilot that ran, in its one queue.
    heartbeats = sorted(home.glob("pool/slurm-*/pilot/pilots/*.json"))
    pilots_ran = {p.stem for p in heartbeats}
    print(
        f"{VISITS} groups in {elapsed:.0f} s; pilots: {len(watcher.seen)} seen by squeue, "
        f"{watcher.most_alive} alive at most, {len(pilots_ran)} ran (heartbeats)"
    )
    assert not watcher.errors, watcher.errors
    # Slurm saw at least one pilot and never more than max_pilots, in total.
    assert 1 <= len(watcher.seen) <= MAX_PILOTS, sorted(watcher.seen)
    assert watcher.most_alive <= MAX_PILOTS
    assert pilots_ran and pilots_ran <= watcher.seen
    accounted = _accounted_pilots(str(home), since)
    if accounted is not None:
        # Slurm's accounting knows of no pilot the watcher missed.
        assert accounted and _started_tasks(accounted) <= watcher.seen, (accounted, watcher.seen)

    with sessions() as session:
        groups = session.scalars(
            select(CampaignGroupRow).where(CampaignGroupRow.campaign_id == campaign_id)
        ).all()
        events = session.execute(
            select(CampaignEventRow.what, CampaignEventRow.to_state, CampaignEventRow.created_at)
            .where(CampaignEventRow.campaign_id == campaign_id, CampaignEventRow.kind == "group")
            .order_by(CampaignEventRow.id)
        ).all()
        quanta = session.execute(
            select(RunRow.name, QuantumRunRow.start, QuantumRunRow.end).join(
                RunRow, RunRow.id == QuantumRunRow.run_id
            )
        ).all()
    assert len(groups) == VISITS and {g.state for g in groups} == {"succeeded"}
    group_start: dict[str, datetime] = {}
    in_flight = []
    for group_id, state, at in events:
        if state == "running":
            group_start[group_id] = at
        elif group_id in group_start:
            in_flight.append((group_start.pop(group_id), at))
    assert len(in_flight) == VISITS
    assert 2 <= _most_at_once(in_flight) <= 6  # groups in flight together, within the limit
    # Quanta of two different groups ran at the same moment (in the two pilots).
    overlapping = {
        (run_a, run_b)
        for run_a, start_a, end_a in quanta
        for run_b, start_b, end_b in quanta
        if run_a < run_b and start_a < end_b and start_b < end_a
    }
    assert overlapping, "no two groups ran quanta at the same time"
