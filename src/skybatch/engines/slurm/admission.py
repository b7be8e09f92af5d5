"""Jobs no Slurm allocation of the engine's settings could ever take (seed step 10).

In pilot mode a pilot takes a job only if its walltime plus the end margin fits in the
pilot's walltime, its memory in the pilot's memory and its cores in the pilot's cores:
a job over any of them would wait forever while pilots come and go idle. In per-job
mode Slurm itself refuses (or holds forever) a job over its partition's limits.
Both are answered here, with the job's number and the limit's, so the job is refused
before the run starts or failed at once, never left waiting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skybatch.engines.base import Resources

from .settings import SlurmSettings

__all__ = ["PartitionLimits", "admission_problem", "parse_sinfo", "parse_slurm_time"]


@dataclass(frozen=True)
class PartitionLimits:
    """What one allocation of a partition can have at most (None: no limit known)."""

    name: str
    max_time_s: int | None = None
    memory_mb: int | None = None
    cpus: int | None = None


_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")


def parse_slurm_time(text: str) -> int | None:
    """Slurm's time limit (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``, ``D-HH``)
    in seconds; None for ``infinite``/``UNLIMITED`` or what cannot be read."""
    text = text.strip()
    match = _TIME.match(text)
    if not match:
        return None
    days, first, second, third = match.groups()
    if days is not None and first is None and third is None:  # D-HH
        return int(days) * 86400 + int(second) * 3600
    if first is None and third is None:  # MM
        values = [0, int(second), 0]
    elif third is None:  # MM:SS, or D-HH:MM
        values = [int(first), int(second), 0] if days else [0, int(first), int(second)]
    else:
        values = [int(first), int(second), int(third)]
    return int(days or 0) * 86400 + values[0] * 3600 + values[1] * 60 + values[2]


def parse_sinfo(text: str) -> dict[str, PartitionLimits]:
    """``sinfo -h -o '%P|%l|%m|%c'`` (one line per partition and node kind): the
    largest node of each partition; the default partition is also under ``""``."""
    out: dict[str, PartitionLimits] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[0]:
            continue
        name, default = parts[0].rstrip("*"), parts[0].endswith("*")
        memory = int(parts[2].rstrip("+")) if parts[2].rstrip("+").isdigit() else None
        cpus = int(parts[3].rstrip("+")) if parts[3].rstrip("+").isdigit() else None
        known = out.get(name)
        if known is not None:
            memory = max(memory or 0, known.memory_mb or 0) or None
            cpus = max(cpus or 0, known.cpus or 0) or None
        limits = PartitionLimits(name, parse_slurm_time(parts[1]), memory, cpus)
        out[name] = limits
        if default:
            out[""] = limits
    return out


def admission_problem(
    settings: SlurmSettings, job: Resources, partition: PartitionLimits | None = None
) -> str | None:
    """Why no allocation of ``settings`` (on ``partition``, if its limits are known)
    could take ``job``, or None."""
    if settings.mode == "pilot":
        pilot = settings.pilot
        if job.walltime_s + pilot.end_margin_s > pilot.walltime_s:
            return (
                f"walltime {job.walltime_s} s plus the pilots' end margin "
                f"{pilot.end_margin_s:g} s exceeds the pilots' walltime {pilot.walltime_s} s "
                "(pilot.walltime_s): no pilot can take it"
            )
        if job.memory_mb > pilot.memory_mb:
            return (
                f"memory {job.memory_mb} MB exceeds the pilots' memory {pilot.memory_mb} MB "
                "(pilot.memory_mb): no pilot can take it"
            )
        if job.cores > pilot.cores:
            return (
                f"{job.cores} cores exceed the pilots' {pilot.cores} cores (pilot.cores): "
                "no pilot can take it"
            )
        return _pilot_partition_problem(settings, partition)
    if partition is None:
        return None
    where = f"partition {partition.name!r}" if partition.name else "the default partition"
    asked_s = job.walltime_s + settings.walltime_grace_s
    if partition.max_time_s is not None and asked_s > partition.max_time_s:
        return (
            f"walltime {job.walltime_s} s (+ walltime_grace_s {settings.walltime_grace_s} s) "
            f"exceeds the time limit of {where}, {partition.max_time_s} s"
        )
    asked_mb = job.memory_mb + settings.memory_margin_mb
    if partition.memory_mb is not None and asked_mb > partition.memory_mb:
        return (
            f"memory {job.memory_mb} MB (+ memory_margin_mb {settings.memory_margin_mb} MB) "
            f"exceeds the largest node of {where}, {partition.memory_mb} MB"
        )
    if partition.cpus is not None and job.cores > partition.cpus:
        return f"{job.cores} cores exceed the largest node of {where}, {partition.cpus} CPUs"
    return None


def _pilot_partition_problem(
    settings: SlurmSettings, partition: PartitionLimits | None
) -> str | None:
    """A pilot allocation the partition can never grant leaves every job waiting."""
    if partition is None:
        return None
    pilot = settings.pilot
    where = f"partition {partition.name!r}" if partition.name else "the default partition"
    if partition.max_time_s is not None and pilot.walltime_s > partition.max_time_s:
        return (
            f"the pilots' walltime {pilot.walltime_s} s (pilot.walltime_s) exceeds the time "
            f"limit of {where}, {partition.max_time_s} s: no pilot can start"
        )
    if partition.memory_mb is not None and pilot.memory_mb > partition.memory_mb:
        return (
            f"the pilots' memory {pilot.memory_mb} MB (pilot.memory_mb) exceeds the largest "
            f"node of {where}, {partition.memory_mb} MB: no pilot can start"
        )
    if partition.cpus is not None and pilot.cores > partition.cpus:
        return (
            f"the pilots' {pilot.cores} cores (pilot.cores) exceed the largest node of "
            f"{where}, {partition.cpus} CPUs: no pilot can start"
        )
    return None
