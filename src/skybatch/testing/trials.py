"""Fault trials on the demo survey: interrupt skybatch, restart it as an operator would,
and compare what it left with an uninterrupted reference.

A :class:`TrialWorld` holds a pristine demo survey and the reference outcomes of the
demo campaign (``campaign submit`` + ``manager run --once``) and of ``skybatch run``
of the demo pipeline. Each trial works on its own copy of the survey and its own
skybatch home, drives the real CLI in subprocesses and returns a :class:`TrialResult`:

- ``manager_kill``: the manager and all its workers SIGKILLed at a moment of the
  campaign, then ``manager run --once`` (and ``campaign retry`` if the campaign
  failed) until it ends;
- ``run_kill``: ``skybatch run`` killed at a moment or at a named kill point
  (:mod:`skybatch.faults`), then ``--resume`` (or the same command again if the run
  was never recorded);
- ``worker_kill``: one worker killed while it runs a job; the run must succeed;
- ``disk_full``: the site cache on a small tmpfs that fills up: the campaign fails
  with a disk-full cause, and ``campaign retry`` after freeing space finishes it;
- ``db_locked``: another process holds the state database with ``BEGIN EXCLUSIVE``
  for a while during the campaign; it must still succeed;
- ``corrupt_replica``: a cached input in the site cache has a flipped byte; the run
  must not consume it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .outcomes import Snapshot, compare, snapshot
from .processes import Finished, kill_group, run_until

__all__ = ["TrialResult", "TrialWorld"]

#: The demo survey of the trials: a campaign of 4 groups that runs in 10-20 s.
SURVEY = {"visits": 3, "detectors": 2, "size": 128, "seed": 13}
RUN_NAME = "trial/run"


@dataclass
class TrialResult:
    name: str
    ok: bool
    lost: int = 0
    duplicated: int = 0
    detail: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Reference:
    snapshot: Snapshot
    seconds: float


class TrialWorld:
    """A pristine demo survey under ``root`` and the references of both kinds of work."""

    def __init__(self, root: Path, *, workers: int = 2, keep: bool = False) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self.keep = keep
        self.pristine = self.root / "pristine-survey"
        self._campaign: _Reference | None = None
        self._run: _Reference | None = None
        self._counter = 0

    # -- set-up ---------------------------------------------------------------------
    def build(self) -> None:
        """Build the survey (once) and both references."""
        if not (self.pristine / "repo" / "butler.yaml").exists():
            from skybatch.demo.params import SurveyParams
            from skybatch.demo.survey import build_survey

            shutil.rmtree(self.pristine, ignore_errors=True)
            build_survey(self.pristine, SurveyParams(**SURVEY))
        self._campaign = self._reference_campaign()
        self._run = self._reference_run()

    @property
    def campaign_seconds(self) -> float:
        assert self._campaign is not None
        return self._campaign.seconds

    @property
    def run_seconds(self) -> float:
        assert self._run is not None
        return self._run.seconds

    def _fresh(self, name: str) -> tuple[Path, Path]:
        """A new trial directory: its own survey copy and skybatch home."""
        self._counter += 1
        base = self.root / f"{self._counter:03d}-{name}"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        shutil.copytree(self.pristine, base / "survey", symlinks=True)
        return base / "survey", base / "home"

    def _done(self, survey: Path) -> None:
        if not self.keep:
            shutil.rmtree(survey.parent, ignore_errors=True)

    # -- commands -------------------------------------------------------------------
    def cli(self, home: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "skybatch", "--home", str(home), *args]

    def env(self, survey: Path, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DEMO_SURVEY": str(survey),
            "DEMO_WORKERS": str(self.workers),
            **extra,
        }

    def run_command(self, survey: Path, home: Path) -> list[str]:
        from skybatch.demo.driver import pipeline_path
        from skybatch.demo.survey import DEFAULTS

        return self.cli(
            home, "run", "--repo", str(survey / "repo"), "--pipeline", str(pipeline_path()),
            "--input", DEFAULTS, "--output-run", RUN_NAME, "--workers", str(self.workers),
            "--intermediate", "postISRCCD",
        )  # fmt: skip

    def submit(self, survey: Path, home: Path, log: Path) -> int:
        from skybatch.campaign.demo import demo_campaign_path

        out = subprocess.run(
            self.cli(home, "campaign", "submit", "--quiet", str(demo_campaign_path())),
            env=self.env(survey),
            capture_output=True,
            text=True,
            check=False,
        )
        with log.open("a") as f:
            f.write(out.stdout + out.stderr)
        if out.returncode != 0:
            raise RuntimeError(f"campaign submit failed: {out.stderr.strip()[-500:]}")
        return int(out.stdout.strip().splitlines()[-1])

    def manager(
        self, survey: Path, home: Path, log: Path, kill_when: Callable[[float], bool] | None = None
    ) -> Finished:
        return run_until(
            self.cli(home, "manager", "run", "--once", "--poll-s", "0.5"),
            log=log,
            env=self.env(survey),
            kill_when=kill_when,
        )

    # -- references -----------------------------------------------------------------
    def _reference_campaign(self) -> _Reference:
        survey, home = self._fresh("reference-campaign")
        log = survey.parent / "log.txt"
        campaign_id = self.submit(survey, home, log)
        done = self.manager(survey, home, log)
        state, families = campaign_state(home, campaign_id)
        if done.returncode != 0 or state != "succeeded":
            raise RuntimeError(f"the reference campaign ended {state}; see {log}")
        snap = snapshot(home, survey / "repo", families, family=families.__getitem__)
        if snap.problems or not snap.total:
            raise RuntimeError(f"the reference campaign is not clean: {snap.problems[:5]}")
        self._done(survey)
        return _Reference(snap, done.seconds)

    def _reference_run(self) -> _Reference:
        survey, home = self._fresh("reference-run")
        log = survey.parent / "log.txt"
        done = run_until(self.run_command(survey, home), log=log, env=self.env(survey))
        if done.returncode != 0:
            raise RuntimeError(f"the reference run failed; see {log}")
        snap = snapshot(home, survey / "repo", [RUN_NAME])
        if snap.problems or not snap.total:
            raise RuntimeError(f"the reference run is not clean: {snap.problems[:5]}")
        self._done(survey)
        return _Reference(snap, done.seconds)

    # -- judging --------------------------------------------------------------------
    def _judge_campaign(
        self, name: str, survey: Path, home: Path, campaign_id: int, start: float, detail: str
    ) -> TrialResult:
        assert self._campaign is not None
        state, families = campaign_state(home, campaign_id)
        got = snapshot(home, survey / "repo", families, family=families.__getitem__)
        return self._judge(name, self._campaign.snapshot, got, state, start, detail, survey)

    def _judge_run(
        self, name: str, survey: Path, home: Path, start: float, detail: str
    ) -> TrialResult:
        assert self._run is not None
        state = run_state(home, RUN_NAME)
        got = snapshot(home, survey / "repo", [RUN_NAME])
        return self._judge(name, self._run.snapshot, got, state, start, detail, survey)

    def _judge(
        self,
        name: str,
        reference: Snapshot,
        got: Snapshot,
        state: str | None,
        start: float,
        detail: str,
        survey: Path,
    ) -> TrialResult:
        diff = compare(reference, got)
        problems = list(got.problems) + [f"lost: {x}" for x in diff.lost[:5]]
        problems += [f"unexpected: {x}" for x in diff.extra[:5]]
        problems += [f"duplicated: {x}" for x in diff.duplicated[:5]]
        if state != "succeeded":
            problems.insert(0, f"ended {state}")
        ok = not problems
        if ok:
            self._done(survey)
        else:
            detail += f" (kept in {survey.parent})"
            problems += [f"log: {line}" for line in _error_lines(survey.parent / "log.txt")]
        return TrialResult(
            name,
            ok,
            lost=len(diff.lost),
            duplicated=len(diff.duplicated),
            detail=detail,
            seconds=time.monotonic() - start,
            problems=problems,
        )

    def _finish_campaign(
        self, survey: Path, home: Path, campaign_id: int, log: Path, *, retries: int = 2
    ) -> list[str]:
        """Restart the manager until the campaign ends; retry it if it failed."""
        notes = []
        for _ in range(retries + 1):
            done = self.manager(survey, home, log)
            state, _ = campaign_state(home, campaign_id)
            notes.append(f"manager exit {done.returncode}: {state}")
            if state in ("succeeded", "cancelled"):
                break
            if state == "failed":
                subprocess.run(
                    self.cli(home, "campaign", "retry", str(campaign_id)),
                    env=self.env(survey),
                    stdout=log.open("a"),
                    stderr=subprocess.STDOUT,
                    check=False,
                )
                notes.append("retry")
        return notes

    # -- trials ---------------------------------------------------------------------
    def manager_kill(self, at_s: float) -> TrialResult:
        """SIGKILL the manager and its workers ``at_s`` seconds into the campaign."""
        start = time.monotonic()
        name = f"manager killed at {at_s:.1f}s"
        survey, home = self._fresh("manager-kill")
        log = survey.parent / "log.txt"
        campaign_id = self.submit(survey, home, log)
        first = self.manager(survey, home, log, kill_when=lambda t: t >= at_s)
        notes = ["killed" if first.killed else f"ended first (exit {first.returncode})"]
        notes += self._finish_campaign(survey, home, campaign_id, log)
        return self._judge_campaign(name, survey, home, campaign_id, start, "; ".join(notes))

    def run_kill(self, *, at_s: float | None = None, point: str | None = None) -> TrialResult:
        """SIGKILL ``skybatch run`` at ``at_s`` seconds or at kill point ``point``."""
        from skybatch.faults import ENV

        start = time.monotonic()
        name = f"run killed at {point}" if point else f"run killed at {at_s:.1f}s"
        survey, home = self._fresh("run-kill")
        log = survey.parent / "log.txt"
        command = self.run_command(survey, home)
        env = self.env(survey, **({ENV: point} if point else {}))
        first = run_until(
            command,
            log=log,
            env=env,
            kill_when=(lambda t: t >= at_s) if at_s is not None else None,
        )
        killed = first.killed or first.returncode == -9
        notes = ["killed" if killed else f"not killed (exit {first.returncode})"]
        for _ in range(2):
            if run_state(home, RUN_NAME) is None:
                again = run_until(command, log=log, env=self.env(survey))
                notes.append(f"run again: exit {again.returncode}")
            else:
                again = run_until(
                    self.cli(home, "run", "--resume", RUN_NAME), log=log, env=self.env(survey)
                )
                notes.append(f"--resume: exit {again.returncode}")
            if again.returncode == 0:
                break
        return self._judge_run(name, survey, home, start, "; ".join(notes))

    def worker_kill(self) -> TrialResult:
        """Kill one worker of ``skybatch run`` while it runs a job."""
        import psutil

        start = time.monotonic()
        survey, home = self._fresh("worker-kill")
        log = survey.parent / "log.txt"
        victims: list[int] = []

        def kill_a_worker(elapsed: float) -> bool:
            if victims or elapsed < 1.0 or not _running_jobs(home):
                return False
            for proc in _driver_children(home):
                with contextlib.suppress(psutil.Error):
                    if proc.cpu_percent(interval=0.2) > 5:
                        proc.kill()
                        victims.append(proc.pid)
                        break
            return False

        done = run_until(self.run_command(survey, home), log=log, env=self.env(survey),
                         kill_when=kill_a_worker)  # fmt: skip
        kinds = failure_kinds(home, RUN_NAME)  # before judging removes a passed trial
        detail = f"killed worker {victims or 'none found'}; run exit {done.returncode}"
        detail += "; attempts by failure kind: " + json.dumps(kinds, sort_keys=True)
        result = self._judge_run("worker killed mid-job", survey, home, start, detail)
        if not victims:
            result.problems.append("no busy worker was found to kill")
        if kinds.get("error"):
            result.problems.append(
                "the lost worker's job was charged an attempt as an ordinary error"
            )
        result.ok = not result.problems
        return result

    def disk_full(self, size_mb: int = 24, spare_kb: int = 256) -> TrialResult:
        """The site cache on a ``size_mb`` tmpfs filled up to the size of the inputs
        plus ``spare_kb``, so the jobs' outputs fill it: the campaign must fail saying
        the disk is full, and a retry after freeing space must finish it."""
        start = time.monotonic()
        survey, home = self._fresh("disk-full")
        log = survey.parent / "log.txt"
        mount = survey.parent / "tmpfs"
        mount.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "skybatch-trial", str(mount)],
            check=True,
        )
        problems: list[str] = []
        try:
            home.mkdir(parents=True)
            (home / "site-cache").symlink_to(mount)
            inputs = sum(
                f.stat().st_size
                for d in ("DemoCam", "refcats", "skymaps")
                for f in (survey / "repo" / d).rglob("*")
                if f.is_file()
            )
            filler = mount / "filler"
            stat = os.statvfs(mount)
            _fill(filler, stat.f_bavail * stat.f_frsize - inputs - spare_kb * 1024)
            campaign_id = self.submit(survey, home, log)
            first = self.manager(survey, home, log)
            state, families = campaign_state(home, campaign_id)
            said = disk_full_said(home, campaign_id, list(families))
            notes = [f"first: exit {first.returncode}, {state}; {said or 'no disk-full cause'}"]
            if state != "failed":
                problems.append(f"with a full disk the campaign ended {state}, not failed")
            elif not said:
                problems.append(
                    "the failure does not say the disk is full (first error line and failure "
                    f"kind): {failure_text(home, campaign_id)[:300]!r}"
                )
            filler.unlink()
            notes += self._finish_campaign(survey, home, campaign_id, log)
            result = self._judge_campaign(
                "disk full during a run", survey, home, campaign_id, start, "; ".join(notes)
            )
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
        result.problems = problems + result.problems
        result.ok = result.ok and not problems
        if result.ok:
            self._done(survey)  # again: the mounted cache kept the first removal from ending
        return result

    def db_locked(self, hold_s: float = 60.0, after_s: float = 3.0) -> TrialResult:
        """Another process holds the state database exclusively for ``hold_s`` seconds,
        ``after_s`` into the campaign."""
        start = time.monotonic()
        survey, home = self._fresh("db-locked")
        log = survey.parent / "log.txt"
        campaign_id = self.submit(survey, home, log)
        holder = threading.Thread(
            target=_hold_exclusive, args=(home / "state.sqlite3", after_s, hold_s)
        )
        holder.start()
        first = self.manager(survey, home, log)
        holder.join()
        state, _ = campaign_state(home, campaign_id)
        notes = [f"locked {hold_s:.0f}s; manager exit {first.returncode}: {state}"]
        problems = []
        if state != "succeeded":
            problems.append(
                f"the lock made the campaign end {state}: {failure_text(home, campaign_id)[:300]}"
            )
            notes += self._finish_campaign(survey, home, campaign_id, log)
        result = self._judge_campaign(
            f"state database locked {hold_s:.0f}s", survey, home, campaign_id, start,
            "; ".join(notes),
        )  # fmt: skip
        result.problems = problems + result.problems
        result.ok = result.ok and not problems
        return result

    def corrupt_replica(self) -> TrialResult:
        """A raw cached in the site cache gets a flipped byte before the run reads it."""
        start = time.monotonic()
        survey, home = self._fresh("corrupt-replica")
        log = survey.parent / "log.txt"
        # An earlier run over one visit leaves its raws cached on the site.
        warm = self.run_command(survey, home)
        warm[warm.index(RUN_NAME)] = "trial/warm-cache"
        run_until([*warm, "--query", "visit = 1000"], log=log, env=self.env(survey))
        cached = [
            p for p in sorted((home / "site-cache").rglob("raw_*"))
            if p.is_file() and not p.is_symlink()
        ]  # fmt: skip
        if not cached:
            detail = f"no cached raw to corrupt (see {log})"
            return TrialResult("corrupt input replica", False, detail=detail)
        victim = cached[0]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        done = run_until(self.run_command(survey, home), log=log, env=self.env(survey))
        detail = f"flipped a byte of {victim.name}; run exit {done.returncode}"
        return self._judge_run("corrupt input replica", survey, home, start, detail)


# -- helpers --------------------------------------------------------------------------
def _sessions(home: Path) -> Any:
    from skybatch.db.state import open_state_db
    from skybatch.settings import load_settings

    return open_state_db(load_settings(home=home))


def campaign_state(home: Path, campaign_id: int) -> tuple[str | None, dict[str, str]]:
    """The campaign's state and its runs, each with its ``STEP/GROUP`` family."""
    from skybatch.campaign.models import CampaignGroupRow, CampaignRow, CampaignStepRow

    with _sessions(home)() as session:
        row = session.get(CampaignRow, campaign_id)
        rows = session.execute(
            select(CampaignGroupRow.run_name, CampaignStepRow.name, CampaignGroupRow.name)
            .join(CampaignStepRow, CampaignStepRow.id == CampaignGroupRow.step_id)
            .where(CampaignGroupRow.campaign_id == campaign_id)
        ).all()
    return (row.state if row else None), {run: f"{step}/{group}" for run, step, group in rows}


def run_state(home: Path, run: str) -> str | None:
    from skybatch.run.models import RunRow

    if not (home / "state.sqlite3").exists():
        return None
    with _sessions(home)() as session:
        return session.scalar(select(RunRow.state).where(RunRow.name == run))


def failure_text(home: Path, campaign_id: int) -> str:
    """Every message the campaign's groups and their runs' failed attempts recorded."""
    from skybatch.campaign.models import CampaignGroupRow

    with _sessions(home)() as session:
        messages = session.scalars(
            select(CampaignGroupRow.message).where(CampaignGroupRow.campaign_id == campaign_id)
        ).all()
    return " | ".join(m for m in messages if m)


def disk_full_said(home: Path, campaign_id: int, runs: list[str]) -> str:
    """Where the campaign's failure says the disk is full: a failed job attempt whose
    first error line carries the cause and whose failure kind says disk full, or a
    group's message (a failure outside jobs, e.g. staging); empty if nowhere."""
    from skybatch.run.models import JobAttemptRow, JobRow, RunRow

    def full(text: str | None) -> bool:
        text = (text or "").lower()
        return "no space left" in text or "disk full" in text or "disk_full" in text

    with _sessions(home)() as session:
        attempts = session.execute(
            select(JobAttemptRow.failure, JobAttemptRow.error)
            .join(JobRow, JobRow.id == JobAttemptRow.job_id)
            .join(RunRow, RunRow.id == JobRow.run_id)
            .where(RunRow.name.in_(runs), JobAttemptRow.state == "failed")
        ).all()
    for failure, error in attempts:
        first_line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
        if full(first_line) and "disk" in (failure or ""):
            return f"job attempt: {failure}: {first_line[:120]}"
    if attempts:
        return ""  # jobs failed: their own record must say it
    message = failure_text(home, campaign_id)
    return f"group: {message[:120]}" if full(message) else ""


def attempts_summary(home: Path, run: str) -> str:
    """How many attempts the run's jobs used, by the failure kind recorded."""
    return "attempts by failure kind: " + json.dumps(failure_kinds(home, run), sort_keys=True)


def failure_kinds(home: Path, run: str) -> dict[str, int]:
    """Attempts of the run's jobs per failure kind (``none``: succeeded)."""
    from skybatch.run.models import JobAttemptRow, JobRow, RunRow

    with _sessions(home)() as session:
        rows = session.execute(
            select(JobAttemptRow.failure)
            .join(JobRow, JobRow.id == JobAttemptRow.job_id)
            .join(RunRow, RunRow.id == JobRow.run_id)
            .where(RunRow.name == run)
        ).all()
    kinds: dict[str, int] = {}
    for (failure,) in rows:
        kinds[str(failure)] = kinds.get(str(failure), 0) + 1
    return kinds


def _running_jobs(home: Path) -> bool:
    from skybatch.run.models import JobRow

    if not (home / "state.sqlite3").exists():
        return False
    with contextlib.suppress(Exception), _sessions(home)() as session:
        return session.scalar(select(JobRow.id).where(JobRow.state == "running")) is not None
    return False


def _driver_children(home: Path) -> Sequence[Any]:
    """Worker processes of the skybatch process working in ``home``."""
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "skybatch" in cmd and str(home) in cmd:
            with contextlib.suppress(psutil.Error):
                out += [
                    c for c in proc.children(recursive=True)
                    if "resource_tracker" not in " ".join(c.cmdline())
                ]  # fmt: skip
    return out


def _error_lines(log: Path, n: int = 3) -> list[str]:
    """The last ``n`` lines of ``log`` that say error (what the commands complained of)."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    said = [line.strip() for line in lines if line.lstrip().lower().startswith(("error", "held"))]
    return [line[:300] for line in said[-n:]]


def _fill(path: Path, size: int) -> None:
    chunk = b"\0" * (1024 * 1024)
    with path.open("wb") as out:
        while size > 0:
            try:
                out.write(chunk[: min(size, len(chunk))])
            except OSError:
                break
            size -= len(chunk)


def _hold_exclusive(db: Path, after_s: float, hold_s: float) -> None:
    """Wait until ``db`` exists and ``after_s`` passed, then hold it exclusively."""
    time.sleep(after_s)
    while not db.exists():
        time.sleep(0.1)
    conn = sqlite3.connect(str(db), timeout=120, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(hold_s)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


__all__ += [
    "attempts_summary",
    "campaign_state",
    "disk_full_said",
    "failure_kinds",
    "failure_text",
    "kill_group",
    "run_state",
]


# -- the plan -------------------------------------------------------------------------
@dataclass(frozen=True)
class Trial:
    """One planned trial: its kind and where it strikes."""

    kind: str  # manager_kill, run_kill, worker_kill, disk_full, db_locked, corrupt_replica
    at_s: float | None = None
    point: str | None = None

    def run(self, world: TrialWorld) -> TrialResult:
        if self.kind == "manager_kill":
            assert self.at_s is not None
            return world.manager_kill(self.at_s)
        if self.kind == "run_kill":
            return world.run_kill(at_s=self.at_s, point=self.point)
        result: TrialResult = getattr(world, self.kind)()
        return result


SPECIAL = ("worker_kill", "disk_full", "db_locked", "corrupt_replica")


def kill_points() -> list[str]:
    """Every named kill point of ``skybatch run``: its set-up phases (when the run
    declares them) and its finish steps."""
    import importlib

    from skybatch.run.finish import FINISH_POINTS

    points: list[str] = []
    with contextlib.suppress(ImportError):  # the set-up phases, where the driver has them
        setup = importlib.import_module("skybatch.run.setup")
        points += [f"setup:{p}" for p in getattr(setup, "SETUP_PHASES", ())]
    return points + list(FINISH_POINTS)


def plan(
    n: int,
    *,
    campaign_s: float,
    run_s: float,
    seed: int,
    special: Sequence[str] = SPECIAL,
) -> list[Trial]:
    """``n`` trials: the ``special`` ones, manager kills at random moments (at least
    3/8 of the rest), and run kills aimed at the kill points (set-up phases first,
    then the finish's clean-up, ingest and the other finish steps), then at random
    moments when there are more run trials than points."""
    import random

    rng = random.Random(seed)
    trials = [Trial(kind) for kind in special][:n]
    rest = n - len(trials)
    points = kill_points()
    # The finish steps a kill is likeliest to break first (inside the clean-up).
    first = ["finish:empty_trash", "finish:clean_files", "finish:ingest"]
    points = (
        [p for p in points if not p.startswith("finish:")]
        + [p for p in first if p in points]
        + [p for p in points if p.startswith("finish:") and p not in first]
    )
    n_manager = min(rest, max(rest - len(points), rest * 3 // 8))
    n_run = rest - n_manager
    aimed = points[:n_run]
    trials += [Trial("run_kill", point=p) for p in aimed]
    trials += [
        Trial("run_kill", at_s=round(rng.uniform(0.5, 0.95 * run_s), 1))
        for _ in range(n_run - len(aimed))
    ]
    trials += [
        Trial("manager_kill", at_s=round(rng.uniform(0.5, 0.95 * campaign_s), 1))
        for _ in range(n_manager)
    ]
    # Interleave kinds so a short run still shows each.
    order = sorted(range(len(trials)), key=lambda i: (rng.random(), i))
    return [trials[i] for i in order]


__all__ += ["SPECIAL", "Trial", "kill_points", "plan"]
