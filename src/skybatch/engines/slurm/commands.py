"""Slurm's command-line tools as functions: ``sbatch``, ``squeue``, ``sacct``, ``scancel``.

Every call goes through one injectable ``runner`` (argv in, completed process out),
the process boundary unit tests replace with captured outputs
(``tests/engines/slurm_fixtures``). Arguments are argv lists, never a shell line, so
no job or file name is ever interpreted by a shell.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from skybatch.engines.errors import EngineError

__all__ = [
    "AccountRecord",
    "QueueRecord",
    "SlurmCommandError",
    "SlurmCommands",
    "parse_memory_mb",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol",
    "parse_squeue",
]

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]

#: ``squeue`` output: job id (``123`` or ``123_4`` for an array task), state, reason,
#: job name (last: a name may hold any character).
SQUEUE_FORMAT = "%i|%T|%r|%j"
SACCT_FIELDS = "JobID,State,ExitCode,MaxRSS"


class SlurmCommandError(EngineError):
    """A Slurm command failed or printed what skybatch cannot read."""


@dataclass(frozen=True)
class QueueRecord:
    job_id: str
    state: str
    reason: str
    name: str = ""


@dataclass(frozen=True)
class AccountRecord:
    job_id: str
    state: str
    exit_code: int | None
    signal: int | None
    max_rss_mb: float | None


def _run_subprocess(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def parse_sbatch(text: str) -> str:
    """``sbatch --parsable`` prints ``ID`` or ``ID;CLUSTER``."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmCommandError(f"sbatch printed no job id: {text.strip()!r}")
    return job_id


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o``: space-separated ``Key=Value`` fields of the first job."""
    fields: dict[str, str] = {}
    line = text.strip().splitlines()[0] if text.strip() else ""
    for token in line.split(" "):
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def parse_squeue(text: str) -> dict[str, QueueRecord]:
    """Lines of ``squeue -h -r -o '%i|%T|%r|%j'`` (the name may be missing), by job id."""
    out: dict[str, QueueRecord] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) < 3 or not parts[0]:
            continue
        record = QueueRecord(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else "")
        out[record.job_id] = record
    return out


def parse_memory_mb(text: str) -> float | None:
    """``sacct`` sizes: ``123456K``, ``12M``, ``1.5G``, ``0``, or empty."""
    text = text.strip()
    if not text:
        return None
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}
    factor = units.get(text[-1].upper())
    try:
        if factor is None:
            return float(text) / (1024 * 1024)  # bytes
        return float(text[:-1]) * factor
    except ValueError:
        return None


def parse_sacct(text: str) -> dict[str, AccountRecord]:
    """``sacct -n -P -o JobID,State,ExitCode,MaxRSS``: one record per job, its state
    and exit code from the job line, its MaxRSS the largest of its steps'."""
    jobs: dict[str, AccountRecord] = {}
    rss: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        job_id, state, exit_field, max_rss = parts[:4]
        base, _, step = job_id.partition(".")
        memory = parse_memory_mb(max_rss)
        if memory is not None:
            rss[base] = max(rss.get(base, 0.0), memory)
        if step:
            continue
        code, _, sig = exit_field.partition(":")
        jobs[base] = AccountRecord(
            base,
            state,
            int(code) if code.isdigit() else None,
            int(sig) if sig.isdigit() else None,
            None,
        )
    return {
        job_id: AccountRecord(r.job_id, r.state, r.exit_code, r.signal, rss.get(job_id))
        for job_id, r in jobs.items()
    }


class SlurmCommands:
    """Calls the Slurm tools; ``runner`` replaces the process boundary in unit tests."""

    def __init__(self, runner: Runner | None = None) -> None:
        self._runner = runner or _run_subprocess
        self.accounting: bool | None = None  # learned at the first sacct call

    @staticmethod
    def installed() -> bool:
        return all(shutil.which(tool) for tool in ("sbatch", "squeue", "scancel"))

    def _call(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = self._runner(argv)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmCommandError(
                f"{argv[0]} could not run: {exc}",
                hint="is Slurm installed and its controller up? (scripts/slurm/up.sh)",
            ) from exc
        if check and done.returncode != 0:
            raise SlurmCommandError(
                f"{' '.join(argv[:2])} exited with code {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[:500]}",
                hint="check the Slurm controller (scontrol ping) and the engine settings",
            )
        return done

    def ping(self) -> bool:
        """Whether a Slurm controller answers."""
        try:
            done = self._call(["scontrol", "ping"], check=False)
        except SlurmCommandError:
            return False
        return done.returncode == 0 and "UP" in done.stdout

    def sbatch(self, args: Sequence[str], script: str, script_args: Sequence[str] = ()) -> str:
        """Submit ``script`` with ``args`` (sbatch options); returns the job id."""
        done = self._call(["sbatch", "--parsable", *args, script, *script_args])
        return parse_sbatch(done.stdout)

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o ID`` as ``key=value`` fields (empty if unknown)."""
        done = self._call(["scontrol", "show", "job", "-o", job_id], check=False)
        return parse_scontrol(done.stdout) if done.returncode == 0 else {}

    def squeue(self) -> dict[str, QueueRecord]:
        """Every job of this user Slurm still remembers (finished ones for MinJobAge)."""
        done = self._call(["squeue", "--me", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT])
        return parse_squeue(done.stdout)

    def sacct(self, job_ids: Iterable[str]) -> dict[str, AccountRecord]:
        """Accounting records of ``job_ids``; empty when accounting is disabled."""
        ids = sorted(set(job_ids))
        if not ids or self.accounting is False:
            return {}
        done = self._call(
            ["sacct", "-n", "-P", "-o", SACCT_FIELDS, "-j", ",".join(ids)], check=False
        )
        if done.returncode != 0 or "accounting storage is disabled" in done.stderr + done.stdout:
            if self.accounting is None:
                log.info("Slurm accounting is not available: %s", done.stderr.strip()[:200])
            self.accounting = False
            return {}
        self.accounting = True
        return parse_sacct(done.stdout)

    def sinfo_limits(self) -> str:
        """``sinfo -h -o '%P|%l|%m|%c'``: partition, time limit, node memory (MB) and
        CPUs (see :func:`skybatch.engines.slurm.admission.parse_sinfo`)."""
        return self._call(["sinfo", "-h", "-o", "%P|%l|%m|%c"]).stdout

    def scancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._call(["scancel", *job_ids], check=False)
