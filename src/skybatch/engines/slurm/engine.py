"""The Slurm engine: skybatch jobs as Slurm jobs, or pulled by warm pilot allocations.

**per-job mode.** :meth:`SlurmEngine.submit` writes each job's spec file, groups the
jobs by resource shape (memory, cores, walltime) and submits each group as one job
array of ``job.sbatch`` (throttled to ``max_jobs`` running tasks); task ``i`` of array
``A`` has the engine id ``A_i``, which is Slurm's own name for it, so a restarted
manager polls and cancels jobs submitted before (``reattach``).

**pilot mode** (:mod:`skybatch.engines.slurm.pilot`): jobs go to a queue directory
on the shared filesystem and ``skybatch pilot`` allocations, started and stopped with
the backlog, run them in warm workers.

A job's end is known, in order of preference, from the ``exit-<attempt>.json`` the
job script writes (exit code, failure kind, peak RSS; see
:mod:`skybatch.engines.slurm.task`), from ``squeue`` (which keeps finished jobs for
``MinJobAge``), or from ``sacct`` when accounting is on. Slurm states map to
:class:`~skybatch.engines.base.JobState` through :data:`~.states.SLURM_STATES` only.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from skybatch.engines.base import (
    Engine,
    EngineCapabilities,
    FailureKind,
    JobState,
    JobStatus,
    Resources,
)
from skybatch.engines.errors import EngineClosedError, EngineConfigError
from skybatch.engines.local.jobs import describe_exit, log_tail

from .admission import PartitionLimits, parse_sinfo
from .admission import admission_problem as slurm_admission
from .commands import AccountRecord, QueueRecord, SlurmCommands
from .settings import SlurmSettings
from .states import FINISHED, translate
from .task import read_exit_file

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from skybatch.job.spec import JobSpec

    from .pilot import PilotQueue

__all__ = [
    "SlurmEngine",
    "format_time",
    "job_name",
    "render_template",
    "spec_shape",
    "write_job_spec",
]

log = logging.getLogger(__name__)

_SLURM_ID = re.compile(r"^\d+(_\d+)?$")
_TEMPLATE_DIR = Path(__file__).parent
#: A job Slurm does not list this soon after sbatch returned is not lost yet.
_SUBMIT_GRACE_S = 10.0


def format_time(seconds: int) -> str:
    """Slurm's ``--time`` as ``D-HH:MM:SS``, rounded up to whole minutes (Slurm's unit)."""
    minutes = max(1, -(-seconds // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:00"


def render_template(name: str, values: dict[str, str]) -> str:
    """Fill ``{{key}}`` placeholders of a template kept beside the engine, each value
    shell-quoted: a name or path never reaches the shell unquoted."""
    text = (_TEMPLATE_DIR / name).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", shlex.quote(value) if value else "")
    if "{{" in text:
        raise EngineConfigError(f"template {name} has unfilled placeholders")
    return text


def job_name(run: str) -> str:
    """The Slurm job name of run ``run``'s arrays (how :meth:`SlurmEngine.strays`
    finds them again)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"skybatch-{run}")[:100]


def spec_shape(spec: JobSpec) -> tuple[int, int, int]:
    return (spec.memory_mb, spec.cores, spec.walltime_s)


def write_job_spec(spec: JobSpec, engine_id: str | None = None) -> Path:
    """Write ``spec-<attempt>.json`` beside the job's report, atomically."""
    directory = Path(spec.report_path).absolute().parent
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"spec-{spec.attempt}.json"
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(spec.model_copy(update={"engine_job_id": engine_id}).model_dump_json())
    os.replace(partial, path)
    return path


def _beside(specs: Sequence[JobSpec]) -> Path:
    """``.slurm`` in the deepest directory holding every job's report."""
    common = os.path.commonpath([str(Path(s.report_path).absolute().parent) for s in specs])
    return Path(common) / ".slurm"


@dataclass(eq=False)
class _Job:
    engine_id: str
    name: str
    spec_path: Path
    attempt: int
    submitted: float
    memory_mb: int
    final: JobStatus | None = None

    @property
    def exit_path(self) -> Path:
        return self.spec_path.parent / f"exit-{self.attempt}.json"

    @property
    def log_path(self) -> Path:
        return self.spec_path.parent / f"engine-{self.attempt}.log"


class SlurmEngine(Engine):
    """Runs jobs on a Slurm cluster; see the module docstring and :class:`SlurmSettings`."""

    name: ClassVar[str] = "slurm"
    settings_model: ClassVar[type[SlurmSettings]] = SlurmSettings

    def __init__(
        self, settings: SlurmSettings | None = None, commands: SlurmCommands | None = None
    ) -> None:
        self.settings = settings or SlurmSettings()
        if commands is None and not SlurmCommands.installed():
            raise EngineConfigError(
                "Slurm's commands (sbatch, squeue, scancel) are not on PATH",
                where="engine: slurm",
                hint="install Slurm (for one machine: scripts/slurm/up.sh) or use the local engine",
            )
        self.commands = commands or SlurmCommands()
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._queue: dict[str, QueueRecord] = {}
        self._queue_at = -math.inf
        self._script: Path | None = None
        self._closed = False
        self._pilots: PilotQueue | None = None
        self.submitted_arrays = 0  # sbatch calls for jobs (benchmarks, tests)
        self._partition: PartitionLimits | bool | None = False  # False: not asked yet

    @property
    def capabilities(self) -> EngineCapabilities:
        pilot = self.settings.mode == "pilot"
        return EngineCapabilities(
            max_parallel_jobs=(
                self.settings.pilot.max_pilots * self.settings.pilot.cores
                if pilot
                else self.settings.max_jobs
            ),
            enforces_memory=True,
            warm_workers=pilot,
            isolation_modes=("warm",) if pilot else ("process",),
            reattach=True,
            # Per job: max_jobs is the most skybatch jobs in Slurm (queued or running),
            # across every array of every run; pilots pull from their own queue.
            queue_ahead=None if pilot else 0,
            shared_filesystem=True,
        )

    @property
    def jobs_held(self) -> int:
        """Jobs whose state this engine keeps in memory: submitted and not ended, or
        ended and not forgotten (:meth:`forget`)."""
        if self._pilots is not None:
            return self._pilots.jobs_held
        return len(self._jobs)

    # -- the Engine interface --------------------------------------------------------

    @classmethod
    def admission_problem_for(cls, settings: BaseModel, job: Resources) -> str | None:
        assert isinstance(settings, SlurmSettings)
        return slurm_admission(settings, job)

    def admission_problem(self, job: Resources) -> str | None:
        """The settings' answer, with the partition's limits (asked of ``sinfo`` once;
        unknown if it cannot answer)."""
        return slurm_admission(self.settings, job, self._partition_limits())

    def _partition_limits(self) -> PartitionLimits | None:
        if self._partition is False:
            try:
                limits = parse_sinfo(self.commands.sinfo_limits())
            except Exception as exc:  # no sinfo, a fake runner: the limits are unknown
                log.debug("partition limits unknown: %s", exc)
                limits = {}
            self._partition = limits.get(self.settings.partition or "")
        return self._partition if isinstance(self._partition, PartitionLimits) else None

    def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        with self._lock:
            if self._closed:
                raise EngineClosedError("the Slurm engine is closed", hint="make a new engine")
            if not specs:
                return []
            if self.settings.mode == "pilot":
                return self._pilot_queue(specs).submit(specs)
            ids: dict[int, str] = {}
            shapes: dict[tuple[int, int, int], list[int]] = {}
            for index, spec in enumerate(specs):
                shapes.setdefault(spec_shape(spec), []).append(index)
            for indices in shapes.values():
                group = [specs[i] for i in indices]
                for i, engine_id in zip(indices, self._submit_array(group), strict=True):
                    ids[i] = engine_id
            return [ids[i] for i in range(len(specs))]

    def poll(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        with self._lock:
            if self.settings.mode == "pilot" and self._pilots is None:
                self._pilots = self._open_pilot_queue(None)
            if self._pilots is not None:
                return self._pilots.poll(engine_ids)
            return self._poll_jobs(engine_ids)

    def cancel(self, engine_ids: Sequence[str]) -> None:
        with self._lock:
            if self._pilots is not None:
                self._pilots.cancel(engine_ids)
                return
            doomed = []
            for engine_id in engine_ids:
                job = self._jobs.get(engine_id)
                if job is not None:
                    if job.final is None:
                        self._refresh_from_exit_file(job)
                    if job.final is not None:
                        continue  # finished: nothing to cancel
                    job.final = JobStatus(
                        engine_id=engine_id,
                        state=JobState.CANCELLED,
                        failure=FailureKind.CANCELLED,
                        message="cancelled by skybatch",
                    )
                if _SLURM_ID.match(engine_id):
                    doomed.append(engine_id)
            self.commands.scancel(doomed)

    def strays(self, run: str, known: Collection[str]) -> list[str]:
        """Run ``run``'s jobs Slurm queues or runs (per-job mode: array tasks named
        after the run; pilot mode: tasks queued or claimed for the run) not in ``known``."""
        with self._lock:
            if self.settings.mode == "pilot":
                if self._pilots is None:
                    self._pilots = self._open_pilot_queue(None)
                return self._pilots.strays(run, known)
            name = job_name(run)
            self._queue = self.commands.squeue()
            self._queue_at = time.monotonic()
            return sorted(
                job_id
                for job_id, record in self._queue.items()
                if record.name == name
                and record.state.split(" ")[0] not in FINISHED
                and job_id not in known
                and _SLURM_ID.match(job_id)
            )

    def forget(self, engine_ids: Sequence[str]) -> None:
        """Drop the ended jobs among ``engine_ids`` (pilot mode forgets ended jobs by
        itself; their done files answer a later poll)."""
        with self._lock:
            if self._pilots is not None:
                self._pilots.forget(engine_ids)
                return
            for engine_id in engine_ids:
                job = self._jobs.get(engine_id)
                if job is not None and job.final is not None:
                    del self._jobs[engine_id]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._pilots is not None:
                self._pilots.close()
            else:
                self.cancel([j.engine_id for j in self._jobs.values() if j.final is None])
            self._closed = True

    # -- per-job mode ----------------------------------------------------------------

    def _script_dir(self, specs: Sequence[JobSpec]) -> Path:
        if self.settings.script_dir is not None:
            directory = self.settings.script_dir
        else:
            directory = _beside(specs)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _job_script(self, directory: Path) -> Path:
        if self._script is None or self._script.parent != directory:
            text = render_template(
                "job.sbatch",
                {
                    "spec_list": "$1",
                    "python": self.settings.python,
                    "runner": self.settings.runner,
                    "watchdog": "--memory-watchdog" if self.settings.job_memory_watchdog else "",
                },
            ).replace("'$1'", '"$1"')
            path = directory / f"job-{secrets.token_hex(4)}.sbatch"
            path.write_text(text)
            path.chmod(0o755)
            self._script = path
        return self._script

    @staticmethod
    def directives_for(settings: SlurmSettings) -> list[str]:
        """The sbatch options every submission carries (from the typed settings)."""
        # --no-requeue: after a node failure Slurm would requeue the job itself;
        # skybatch's retry policy decides instead, and records the attempt.
        out = ["--nodes=1", "--ntasks=1", "--kill-on-invalid-dep=yes", "--no-requeue"]
        for option, value in (
            ("partition", settings.partition),
            ("account", settings.account),
            ("qos", settings.qos),
        ):
            if value:
                out.append(f"--{option}={value}")
        return out + list(settings.extra_directives)

    def _submit_array(self, specs: list[JobSpec]) -> list[str]:
        script = self._job_script(self._script_dir(specs))
        # The array's own files (its spec list, Slurm's output of its tasks) go beside
        # its jobs, in their run's work directory: an engine shared by many runs (the
        # campaign manager's pool) leaves nothing of a run behind in its script_dir.
        directory = _beside(specs)
        directory.mkdir(parents=True, exist_ok=True)
        spec_paths = [write_job_spec(spec) for spec in specs]
        token = secrets.token_hex(6)
        spec_list = directory / f"array-{token}.list"
        spec_list.write_text("".join(f"{p}\n" for p in spec_paths))
        memory_mb, cores, walltime_s = spec_shape(specs[0])
        name = job_name(specs[0].run)
        args = [
            *self.directives_for(self.settings),
            f"--job-name={name}",
            f"--array=0-{len(specs) - 1}%{self.settings.max_jobs}",
            f"--mem={memory_mb + self.settings.memory_margin_mb}M",
            f"--cpus-per-task={cores}",
            f"--time={format_time(walltime_s + self.settings.walltime_grace_s)}",
            f"--output={directory / 'slurm-%A_%a.out'}",
        ]
        array_id = self.commands.sbatch(args, str(script), [str(spec_list)])
        self.submitted_arrays += 1
        now = time.monotonic()
        ids = []
        for index, (spec, path) in enumerate(zip(specs, spec_paths, strict=True)):
            engine_id = f"{array_id}_{index}"
            self._jobs[engine_id] = _Job(
                engine_id, spec.job, path, spec.attempt, now, spec.memory_mb
            )
            ids.append(engine_id)
        self._queue_at = -math.inf  # the next poll asks squeue again
        return ids

    def _refresh_from_exit_file(self, job: _Job) -> None:
        record = read_exit_file(job.exit_path)
        if record is None:
            return
        code = int(record.get("exit_code", 1))
        failure = FailureKind(record.get("failure") or ("none" if code == 0 else "error"))
        message = record.get("message")
        if code != 0 and failure == FailureKind.ERROR:
            detail = message or log_tail(job.log_path)
            message = f"job {job.name} {describe_exit(code)}" + (f": {detail}" if detail else "")
        job.final = JobStatus(
            engine_id=job.engine_id,
            state=JobState.SUCCEEDED if code == 0 else JobState.FAILED,
            exit_code=code,
            failure=FailureKind.NONE if code == 0 else failure,
            message=message,
            max_rss_mb=record.get("max_rss_mb"),
        )

    def _refresh_queue(self) -> None:
        now = time.monotonic()
        if now - self._queue_at >= self.settings.poll_interval_s:
            self._queue = self.commands.squeue()
            self._queue_at = now

    def _poll_jobs(self, engine_ids: Sequence[str]) -> list[JobStatus]:
        out: dict[str, JobStatus] = {}
        need_queue = []
        for engine_id in engine_ids:
            job = self._jobs.get(engine_id)
            if job is not None and job.final is None:
                self._refresh_from_exit_file(job)
            if job is not None and job.final is not None:
                out[engine_id] = job.final
            else:
                need_queue.append(engine_id)
        if need_queue:
            self._refresh_queue()
            accounted = self._account(
                [i for i in need_queue if i not in self._queue or self._finished_in_queue(i)]
            )
            for engine_id in need_queue:
                out[engine_id] = self._status_from_slurm(engine_id, accounted.get(engine_id))
        return [out[engine_id] for engine_id in engine_ids]

    def _finished_in_queue(self, engine_id: str) -> bool:
        record = self._queue.get(engine_id)
        return record is not None and record.state.split(" ")[0] in FINISHED

    def _account(self, engine_ids: list[str]) -> dict[str, AccountRecord]:
        ids = [i for i in engine_ids if _SLURM_ID.match(i)]
        if not ids:
            return {}
        return self.commands.sacct(ids)

    def _status_from_slurm(self, engine_id: str, account: AccountRecord | None) -> JobStatus:
        job = self._jobs.get(engine_id)
        record = self._queue.get(engine_id)
        slurm_state = account.state if account is not None else record.state if record else None
        if slurm_state is None:
            if job is not None and time.monotonic() - job.submitted < _SUBMIT_GRACE_S:
                return JobStatus(engine_id=engine_id, state=JobState.SUBMITTED)
            return self._remember(
                job,
                JobStatus(
                    engine_id=engine_id,
                    state=JobState.FAILED,
                    failure=FailureKind.LOST,
                    message=f"Slurm does not know job {engine_id} (any more)",
                ),
            )
        state, failure = translate(slurm_state)
        if state in (JobState.SUBMITTED, JobState.RUNNING):
            return JobStatus(engine_id=engine_id, state=state)
        if job is not None:  # the job script may have finished its exit file meanwhile
            self._refresh_from_exit_file(job)
            if job.final is not None:
                return job.final
        code = account.exit_code if account is not None else None
        if account is not None and not code and account.signal and failure == FailureKind.ERROR:
            code = -account.signal  # killed by a signal (sacct's ExitCode 0:9)
        if account is None and state != JobState.SUCCEEDED:
            code = self._exit_code_from_scontrol(engine_id)
        message = f"Slurm: {slurm_state}"
        if record is not None and record.reason not in ("None", ""):
            message += f" ({record.reason})"
        if state == JobState.CANCELLED:
            message = (
                f"cancelled in Slurm, not by skybatch (scancel or an administrator): {slurm_state}"
            )
        elif failure == FailureKind.OUT_OF_MEMORY and job is not None:
            message += f": over its memory request of {job.memory_mb} MB (Slurm's --mem)"
        elif code not in (None, 0):
            message += f": job {describe_exit(code)}"
            if job is not None and (tail := log_tail(job.log_path)):
                message += f": {tail}"
        return self._remember(
            job,
            JobStatus(
                engine_id=engine_id,
                state=state,
                exit_code=0 if state == JobState.SUCCEEDED and code is None else code,
                failure=failure,
                message=None if state == JobState.SUCCEEDED else message,
                max_rss_mb=account.max_rss_mb if account is not None else None,
            ),
        )

    def _exit_code_from_scontrol(self, engine_id: str) -> int | None:
        fields = self.commands.show_job(engine_id)
        code, _, sig = fields.get("ExitCode", "").partition(":")
        if code.isdigit() and int(code):
            return int(code)
        if sig.isdigit() and int(sig):
            return -int(sig)
        return None

    @staticmethod
    def _remember(job: _Job | None, status: JobStatus) -> JobStatus:
        if job is not None and status.state not in (JobState.SUBMITTED, JobState.RUNNING):
            job.final = status
        return status

    # -- pilot mode -------------------------------------------------------------------

    def _open_pilot_queue(self, specs: Sequence[JobSpec] | None) -> PilotQueue:
        from .pilot import PilotQueue

        if self.settings.script_dir is None and specs is None:
            raise EngineConfigError(
                "pilot mode needs script_dir to find its queue before the first submit",
                where="engine.settings.script_dir",
                hint="set script_dir to a directory on the shared filesystem",
            )
        directory = self._script_dir(specs or [])
        return PilotQueue(directory / "pilot", self.settings, self.commands)

    def _pilot_queue(self, specs: Sequence[JobSpec]) -> PilotQueue:
        if self._pilots is None:
            self._pilots = self._open_pilot_queue(specs)
        return self._pilots
