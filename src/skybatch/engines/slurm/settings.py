"""Settings of the Slurm engine (seed step 10 on a batch system).

Every ``#SBATCH`` directive the engine writes comes from these typed fields;
``extra_directives`` are checked to be single ``--option[=value]`` words, so nothing
in them can break out of the script.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["PilotSettings", "SlurmSettings"]

_DIRECTIVE = re.compile(r"^--[A-Za-z][\w-]*(=[^\s'\"`$\\;|&<>]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9_.,+-]+$")


class PilotSettings(BaseModel):
    """Pilot mode: Slurm allocations of warm ``skybatch pilot`` workers pull jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cores: int = Field(default=2, ge=1, description="cores (parallel jobs) per pilot")
    memory_mb: int = Field(default=8192, ge=128, description="memory per pilot allocation")
    walltime_s: int = Field(
        default=7200,
        ge=60,
        description="walltime of a pilot allocation: a pilot takes a job whose walltime "
        "plus end_margin_s fits in it (jobs ask for 3600 s by default)",
    )
    min_pilots: int = Field(default=0, ge=0, description="pilots kept even with no backlog")
    max_pilots: int = Field(default=4, ge=1, description="most pilots at once")
    jobs_per_pilot: int = Field(
        default=8, ge=1, description="backlog (queued jobs) that justifies one more pilot"
    )
    idle_timeout_s: float = Field(
        default=60.0, gt=0, description="a pilot with nothing to do for this long exits"
    )
    end_margin_s: float = Field(
        default=120.0,
        ge=0,
        description="a pilot takes no job that could not finish before its walltime ends "
        "(job walltime + this margin)",
    )
    preload: list[str] = Field(
        default_factory=lambda: ["lsst.daf.butler", "lsst.pipe.base", "skybatch.job.main"],
        description="modules the pilot's warm workers import once",
    )
    heartbeat_s: float = Field(default=5.0, gt=0, description="seconds between pilot heartbeats")
    done_retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="seconds a finished job's result file is kept in the pilot queue "
        "(a restarted manager reads it there; by then its database has it long since)",
    )


class SlurmSettings(BaseModel):
    """How skybatch uses a Slurm cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["per_job", "pilot"] = Field(
        default="per_job",
        description="per_job: one Slurm job (array task) per skybatch job; pilot: "
        "allocations of warm workers that pull jobs",
    )
    partition: str | None = Field(default=None, description="--partition")
    account: str | None = Field(default=None, description="--account")
    qos: str | None = Field(default=None, description="--qos")
    extra_directives: list[str] = Field(
        default_factory=list, description="more #SBATCH options, each one --option[=value]"
    )
    max_jobs: int = Field(
        default=64, ge=1, description="skybatch jobs running in Slurm at once (its queue depth)"
    )
    python: str = Field(default=sys.executable, description="interpreter on the compute nodes")
    runner: str = Field(
        default="skybatch.job.main:run_job_file",
        pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$",
        description="'module:function' the job script calls with the spec path",
    )
    script_dir: Path | None = Field(
        default=None,
        description="where job scripts and Slurm's own logs go (shared filesystem); "
        "default: '.slurm' under the jobs' common directory",
    )
    poll_interval_s: float = Field(
        default=0.5, gt=0, description="least seconds between two squeue calls"
    )
    walltime_grace_s: int = Field(
        default=60,
        ge=0,
        description="Slurm's --time is the job's walltime plus this: the job enforces its "
        "own walltime to the second, Slurm's limit is the backstop",
    )
    memory_margin_mb: int = Field(
        default=64,
        ge=0,
        description="Slurm's --mem is memory_mb plus this: the job's own watchdog kills at "
        "memory_mb and reports the peak; Slurm's cgroup limit is the backstop",
    )
    job_memory_watchdog: bool = Field(
        default=True,
        description="the job script samples its RSS and stops the job over memory_mb "
        "(off: only Slurm enforces --mem)",
    )
    pilot: PilotSettings = Field(default_factory=PilotSettings)

    @field_validator("extra_directives")
    @classmethod
    def _directives(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _DIRECTIVE.match(item):
                raise ValueError(
                    f"{item!r} is not one --option or --option=value without spaces or "
                    "shell characters"
                )
        return value

    @field_validator("partition", "account", "qos")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a Slurm name (letters, digits, _ . , + -)")
        return value
