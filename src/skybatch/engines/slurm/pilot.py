"""Pilot mode: Slurm allocations of warm workers that pull skybatch jobs.

Thousands of short jobs should not each pay Slurm's scheduling and an interpreter
start. In pilot mode the engine puts jobs in a **queue directory** on the shared
filesystem and keeps between ``min_pilots`` and ``max_pilots`` ``skybatch pilot``
allocations in Slurm, following the backlog. A pilot runs a
:class:`~skybatch.engines.local.LocalEngine` of ``cores`` warm workers (the LSST stack
imported once, memory and walltime enforced per job) and pulls jobs until it has been
idle for ``idle_timeout_s``, is told to stop, or could not finish another job before
its walltime ends.

The queue is plain files, each change one atomic rename, so any number of pilots and
engines share it without a server and a restarted manager finds every job again::

    queued/<id>.json             the job's spec, waiting
    claimed/<id>@<pilot>.json    taken by a pilot, not started yet
    claimed/<id>@<pilot>.run     running in that pilot
    done/<id>.json               its final JobStatus
    cancel/<id>                  the engine asks the pilot running it to stop it
    pilots/<pilot>.json          heartbeat (host, pid, jobs); pilots/<pilot>.stop: drain
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import signal
import socket
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from skybatch.engines.base import FailureKind, JobState, JobStatus

from .engine import SlurmEngine, format_time, render_template, write_job_spec
from .states import FINISHED, translate

if TYPE_CHECKING:
    from skybatch.job.spec import JobSpec

    from .commands import SlurmCommands
    from .settings import SlurmSettings

__all__ = ["PilotQueue", "QueueDirs", "run_pilot"]

log = logging.getLogger(__name__)


class QueueDirs:
    """The queue directory's layout (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.queued = root / "queued"
        self.claimed = root / "claimed"
        self.done = root / "done"
        self.cancel = root / "cancel"
        self.pilots = root / "pilots"
        for directory in (self.queued, self.claimed, self.done, self.cancel, self.pilots):
            directory.mkdir(parents=True, exist_ok=True)

    def write_done(self, status: JobStatus) -> None:
        path = self.done / f"{status.engine_id}.json"
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(status.model_dump_json())
        os.replace(partial, path)

    def read_done(self, task: str) -> JobStatus | None:
        try:
            return JobStatus.model_validate_json((self.done / f"{task}.json").read_text())
        except (OSError, ValueError):
            return None

    def claims(self) -> dict[str, tuple[str, bool]]:
        """``{task: (pilot, started)}`` of every claimed job."""
        out: dict[str, tuple[str, bool]] = {}
        for name in os.listdir(self.claimed):
            stem, dot, suffix = name.rpartition(".")
            task, at, pilot = stem.partition("@")
            if dot and at and suffix in ("json", "run"):
                started = suffix == "run" or out.get(task, ("", False))[1]
                out[task] = (pilot, started)
        return out

    def queued_tasks(self) -> set[str]:
        return {n[:-5] for n in os.listdir(self.queued) if n.endswith(".json")}


# -- the engine side --------------------------------------------------------------------


class PilotQueue:
    """The Slurm engine's pilot mode: queues jobs, keeps pilots, reads their results."""

    def __init__(self, root: Path, settings: SlurmSettings, commands: SlurmCommands) -> None:
        self.dirs = QueueDirs(root)
        self.settings = settings
        self.commands = commands
        self._instance = secrets.token_hex(3)
        self._n = 0
        self._final: dict[str, JobStatus] = {}
        self._mine: set[str] = set()
        self._pilots: set[str] = set()  # Slurm ids of the pilots this engine started
        self._adopted: set[str] = set()  # and of pilots another engine started
        self._checked_at = -math.inf
        self._swept_at = -math.inf  # time.time() of the last sweep of old results
        self._alive = 0  # pilots queued or running at the last check (and started since)
        self._dead: dict[str, FailureKind] = {}  # at the last check
        self._script: Path | None = None
        self.pilots_started = 0

    def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        ids = []
        for spec in specs:
            self._n += 1
            task = f"p{self._instance}-{self._n:08d}"
            write_job_spec(spec, task)  # the job's own record, as other engines keep it
            path = self.dirs.queued / f"{task}.json"
            partial = self.dirs.queued / f".{task}.partial"
            partial.write_text(spec.model_copy(update={"engine_job_id": task}).model_dump_json())
            os.replace(partial, path)
            self._mine.add(task)
            ids.append(task)
        if self._alive < self.settings.pilot.max_pilots:
            # Start pilots for the new backlog now. With every pilot there, the
            # periodic check is enough: the many runs of a campaign manager's pool
            # submit every tick, and an squeue for each submission was most of the
            # engine's Slurm calls.
            self._checked_at = -math.inf
        self.manage_pilots()
        return ids

    def poll(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        open_ids = [i for i in engine_ids if i not in self._final]
        claims: dict[str, tuple[str, bool]] = {}
        queued: set[str] = set()
        ended: dict[str, JobStatus] = {}
        if open_ids:
            claims = self.dirs.claims()
            queued = self.dirs.queued_tasks()
            dead = self.manage_pilots(claims)
            for task in open_ids:
                status = self.dirs.read_done(task)
                if status is None and task in claims and claims[task][0] in dead:
                    status = self._lost_with_pilot(task, claims[task][0], dead[claims[task][0]])
                if status is not None:
                    ended[task] = status
        out = []
        for task in engine_ids:
            final = self._final.get(task) or ended.get(task)
            if final is not None:
                out.append(final)
            elif task in claims:
                started = claims[task][1]
                out.append(
                    JobStatus(
                        engine_id=task, state=JobState.RUNNING if started else JobState.SUBMITTED
                    )
                )
            elif task in queued or task in self._mine:
                out.append(JobStatus(engine_id=task, state=JobState.SUBMITTED))
            else:
                out.append(
                    JobStatus(
                        engine_id=task,
                        state=JobState.FAILED,
                        failure=FailureKind.LOST,
                        message=f"job {task} is not in the pilot queue {self.dirs.root}",
                    )
                )
        # An ended job is forgotten here (its done file answers a later poll): one
        # engine serves every group a manager runs, for as long as the manager runs.
        self._mine.difference_update(ended)
        return out

    def forget(self, engine_ids: Sequence[str]) -> None:
        """Drop what is kept of ended jobs (cancelled while a pilot held them)."""
        for task in engine_ids:
            self._final.pop(task, None)
            self._mine.discard(task)

    @property
    def jobs_held(self) -> int:
        """Jobs this engine keeps in memory: submitted and not seen ended, or cancelled
        while a pilot held them."""
        return len(self._mine) + len(self._final)

    def strays(self, run: str, known: Collection[str]) -> list[str]:
        """Tasks queued or claimed for run ``run`` (their spec says so) not in ``known``."""
        out = []
        for directory in (self.dirs.queued, self.dirs.claimed):
            for path in directory.iterdir():
                task = path.name.partition("@")[0].removesuffix(".json")
                hidden = path.name.startswith(".")
                if hidden or task in known or path.suffix not in (".json", ".run"):
                    continue
                try:
                    spec_run = json.loads(path.read_text()).get("run")
                except (OSError, ValueError):
                    continue  # taken or finished meanwhile
                if spec_run == run:
                    out.append(task)
        return sorted(set(out))

    def cancel(self, engine_ids: Sequence[str]) -> None:
        for task in engine_ids:
            if task in self._final or self.dirs.read_done(task) is not None:
                continue
            status = JobStatus(
                engine_id=task,
                state=JobState.CANCELLED,
                failure=FailureKind.CANCELLED,
                message="cancelled by skybatch",
            )
            self._mine.discard(task)
            try:  # still queued: no pilot can take it any more
                os.unlink(self.dirs.queued / f"{task}.json")
                self.dirs.write_done(status)
            except FileNotFoundError:  # a pilot has it: ask the pilot to stop it
                (self.dirs.cancel / task).touch()
                self._final[task] = status  # until the pilot writes it done

    def close(self) -> None:
        self.cancel([t for t in self._mine if t not in self._final])
        waiting = []
        queue = self.commands.squeue()
        for pilot in self._pilots:
            (self.dirs.pilots / f"{pilot}.stop").touch()
            record = queue.get(pilot)
            if record is not None and translate(record.state)[0] == JobState.SUBMITTED:
                waiting.append(pilot)
        self.commands.scancel(waiting)  # pilots that never started

    # -- pilots -----------------------------------------------------------------------

    def manage_pilots(
        self, claims: dict[str, tuple[str, bool]] | None = None
    ) -> dict[str, FailureKind]:
        """Start pilots for the backlog; return the dead pilots that held claims, with
        the failure their jobs get. Talks to Slurm at most every poll_interval_s, and
        for all the runs an engine serves at once (one squeue, however many poll)."""
        now = time.monotonic()
        if now - self._checked_at < self.settings.poll_interval_s:
            return self._dead
        self._checked_at = now
        self._sweep_done()
        queue = self.commands.squeue()
        self._adopted.update(self._still_beating())
        alive = 0
        for pilot in list(self._pilots | self._adopted):
            record = queue.get(pilot)
            if record is not None and record.state.split(" ")[0] not in FINISHED:
                alive += 1
            elif record is None and not self._heartbeat_fresh(pilot):
                self._pilots.discard(pilot)
                self._adopted.discard(pilot)
        backlog = len(self.dirs.queued_tasks())
        config = self.settings.pilot
        wanted = max(config.min_pilots, math.ceil(backlog / config.jobs_per_pilot))
        wanted = min(config.max_pilots, wanted)
        if wanted > alive:
            self._start_pilots(wanted - alive)
            alive = wanted
        self._alive = alive
        dead: dict[str, FailureKind] = {}
        for pilot in {p for p, _ in (claims or {}).values()}:
            record = queue.get(pilot)
            if record is not None and record.state.split(" ")[0] not in FINISHED:
                continue
            if record is None and self._heartbeat_fresh(pilot):
                continue
            failure = translate(record.state)[1] if record is not None else FailureKind.LOST
            if failure in (FailureKind.CANCELLED, FailureKind.ERROR, FailureKind.LOST):
                # cancelled, killed or vanished under its jobs: a lost worker, which the
                # scheduler retries without using up the jobs' own attempts
                failure = FailureKind.WORKER_LOST
            elif failure not in (FailureKind.NODE_FAILURE, FailureKind.PREEMPTED):
                failure = FailureKind.LOST  # out of memory or time: maybe the job's doing
            dead[pilot] = failure
        self._dead = dead
        return dead

    def _sweep_done(self) -> None:
        """Remove the result files of jobs that ended more than ``done_retention_s``
        ago (at most once a minute): a manager that runs for months would otherwise
        keep one file per job it ever ran."""
        now = time.time()
        if now - self._swept_at < 60.0:
            return
        self._swept_at = now
        horizon = now - self.settings.pilot.done_retention_s
        with os.scandir(self.dirs.done) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.name.endswith(".json") and entry.stat().st_mtime < horizon:
                        os.unlink(entry.path)

    def _still_beating(self) -> set[str]:
        """Pilots of this queue that another engine started and that still work: those
        of a manager before its restart count against ``max_pilots`` instead of
        running beside as many new ones (they are not told to stop at :meth:`close`:
        they end when idle, as they would have)."""
        out: set[str] = set()
        now = time.time()
        fresh_s = 3 * self.settings.pilot.heartbeat_s + 5
        with os.scandir(self.dirs.pilots) as entries:
            for entry in entries:
                pilot = entry.name[:-5]
                known = pilot in self._pilots or pilot in self._adopted
                if not entry.name.endswith(".json") or known:
                    continue
                try:
                    if now - entry.stat().st_mtime >= fresh_s:
                        continue
                    state = json.loads(Path(entry.path).read_text()).get("state")
                except (OSError, ValueError):
                    continue
                if state != "exited":
                    out.add(pilot)
        return out

    def _heartbeat_fresh(self, pilot: str) -> bool:
        try:
            age = time.time() - (self.dirs.pilots / f"{pilot}.json").stat().st_mtime
        except FileNotFoundError:
            return False
        return age < 3 * self.settings.pilot.heartbeat_s + 5

    def _lost_with_pilot(self, task: str, pilot: str, failure: FailureKind) -> JobStatus:
        status = JobStatus(
            engine_id=task,
            state=JobState.FAILED,
            failure=failure,
            message=f"pilot {pilot} ended while it held the job ({failure})",
        )
        self.dirs.write_done(status)
        for suffix in ("json", "run"):
            (self.dirs.claimed / f"{task}@{pilot}.{suffix}").unlink(missing_ok=True)
        return status

    def _start_pilots(self, count: int) -> None:
        config = self.settings.pilot
        if self._script is None:
            self._script = self.dirs.root / f"pilot-{self._instance}.sbatch"
            self._script.write_text(
                render_template("pilot.sbatch", {"python": self.settings.python})
            )
            self._script.chmod(0o755)
        args = [
            *SlurmEngine.directives_for(self.settings),
            "--job-name=skybatch-pilot",
            f"--array=0-{count - 1}",
            f"--cpus-per-task={config.cores}",
            f"--mem={config.memory_mb}M",
            f"--time={format_time(config.walltime_s)}",
            f"--output={self.dirs.root / 'pilot-%A_%a.out'}",
        ]
        script_args = [
            "--queue",
            str(self.dirs.root),
            "--cores",
            str(config.cores),
            "--walltime-s",
            str(config.walltime_s),
            "--idle-timeout-s",
            str(config.idle_timeout_s),
            "--end-margin-s",
            str(config.end_margin_s),
            "--heartbeat-s",
            str(config.heartbeat_s),
            "--runner",
            self.settings.runner,
            *[arg for module in config.preload for arg in ("--preload", module)],
        ]
        array = self.commands.sbatch(args, str(self._script), script_args)
        self._pilots.update(f"{array}_{i}" for i in range(count))
        self.pilots_started += count


# -- the pilot side ---------------------------------------------------------------------


def _pilot_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or f"{socket.gethostname()}-{os.getpid()}"


def run_pilot(
    queue: Path,
    *,
    cores: int,
    walltime_s: float,
    idle_timeout_s: float,
    end_margin_s: float,
    heartbeat_s: float,
    runner: str,
    preload: Sequence[str],
    poll_s: float = 0.01,
) -> int:
    """Pull and run jobs until idle, told to stop, or near the walltime; return the
    number of jobs run."""
    from skybatch.engines.local import LocalEngine, LocalSettings
    from skybatch.job.spec import JobSpec

    dirs = QueueDirs(queue)
    me = _pilot_id()
    started = time.monotonic()
    deadline = started + walltime_s
    stop_flag = dirs.pilots / f"{me}.stop"
    heartbeat = dirs.pilots / f"{me}.json"
    terminated: list[int] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        terminated.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    engine = LocalEngine(
        LocalSettings(max_workers=cores, runner=runner, preload=list(preload), worker_nice=0)
    )
    engine.warm_up()
    running: dict[str, str] = {}  # local id -> task
    started_tasks: set[str] = set()
    ran = 0
    idle_since = time.monotonic()
    beat_at = -math.inf

    def beat(state: str) -> None:
        record = {"pilot": me, "host": socket.gethostname(), "pid": os.getpid(), "state": state}
        record.update(running=len(running), ran=ran, cores=cores)
        partial = heartbeat.with_name(f".{heartbeat.name}.partial")
        partial.write_text(json.dumps(record))
        os.replace(partial, heartbeat)

    try:
        while True:
            now = time.monotonic()
            if now - beat_at >= heartbeat_s:
                beat("running")
                beat_at = now
            if terminated:
                break
            draining = stop_flag.exists() or now + end_margin_s >= deadline
            changed = False
            for local_id, task in running.items():
                if (dirs.cancel / task).exists():
                    engine.cancel([local_id])
            room = cores + 1 - len(running)
            if room > 0 and not draining:
                claimed = _claim(dirs, me, room, deadline - now - end_margin_s)
                if claimed:
                    specs = [JobSpec.model_validate_json(path.read_text()) for _, path in claimed]
                    for (task, _), local_id in zip(claimed, engine.submit(specs), strict=True):
                        running[local_id] = task
                    changed = True
            if running:
                for status in engine.poll(list(running)):
                    task = running[status.engine_id]
                    if status.state == JobState.RUNNING and task not in started_tasks:
                        started_tasks.add(task)
                        _mark_started(dirs, task, me)
                    elif status.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
                        _finish_task(dirs, task, me, status)
                        del running[status.engine_id]
                        started_tasks.discard(task)
                        ran += 1
                        changed = True
                idle_since = time.monotonic()
            elif draining or time.monotonic() - idle_since > idle_timeout_s:
                break
            if not changed:
                time.sleep(poll_s)
    finally:
        stopping = [(local, task) for local, task in running.items()]
        engine.cancel([local for local, _ in stopping])
        for _, task in stopping:
            _finish_task(
                dirs,
                task,
                me,
                JobStatus(
                    engine_id=task,
                    state=JobState.FAILED,
                    failure=FailureKind.PREEMPTED,
                    message=f"pilot {me} was stopped (walltime, scancel or preemption) "
                    "while running the job",
                ),
            )
        engine.close()
        beat("exited")
    return ran


def _claim(dirs: QueueDirs, me: str, room: int, time_left: float) -> list[tuple[str, Path]]:
    """Take up to ``room`` queued jobs (oldest names first) that fit in ``time_left``."""
    out: list[tuple[str, Path]] = []
    for name in sorted(n for n in os.listdir(dirs.queued) if n.endswith(".json")):
        if len(out) >= room:
            break
        task = name[:-5]
        target = dirs.claimed / f"{task}@{me}.json"
        try:
            os.rename(dirs.queued / name, target)
        except FileNotFoundError:
            continue  # another pilot (or a cancel) was first
        walltime = json.loads(target.read_text()).get("walltime_s", 0)
        if walltime > time_left:  # would outlive this pilot: leave it to another
            os.rename(target, dirs.queued / name)
            break
        out.append((task, target))
    return out


def _mark_started(dirs: QueueDirs, task: str, me: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rename(dirs.claimed / f"{task}@{me}.json", dirs.claimed / f"{task}@{me}.run")


def _finish_task(dirs: QueueDirs, task: str, me: str, status: JobStatus) -> None:
    if (dirs.cancel / task).exists() and status.state != JobState.SUCCEEDED:
        status = JobStatus(
            engine_id=task,
            state=JobState.CANCELLED,
            failure=FailureKind.CANCELLED,
            message="cancelled by skybatch",
        )
    dirs.write_done(status.model_copy(update={"engine_id": task}))
    for suffix in ("json", "run"):
        (dirs.claimed / f"{task}@{me}.{suffix}").unlink(missing_ok=True)
    (dirs.cancel / task).unlink(missing_ok=True)
