"""Job provenance (seed step 11.2): what only the job itself can see.

The scheduler knows what it asked for; only the running job knows where it actually
ran: the host, the platform, the interpreter, the versions of the software that was
imported, and the environment. Environment variables are recorded only when they are
on the spec's allow list, since environments routinely hold tokens and passwords.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from .cache import on_clear, process_cache_enabled

__all__ = ["PACKAGES", "JobProvenance", "gather_provenance"]

#: Distributions whose versions go into every report.
PACKAGES = (
    "lsst-daf-butler",
    "lsst-pipe-base",
    "lsst-ctrl-mpexec",
    "skybatch",
    "numpy",
    "astropy",
)

#: Variables batch systems set to the job's own id, tried when the spec carries none.
_ENGINE_ID_VARIABLES = ("SKYBATCH_ENGINE_JOB_ID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")


@dataclass(frozen=True)
class JobProvenance:
    """Where and with what the job ran."""

    host: str
    platform: str
    python: str
    packages: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    engine_job_id: str | None = None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names``; ``"not installed"`` for those that are absent."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


#: Versions of PACKAGES, looked up once per process when the caches are on: the
#: modules a process has imported do not change while it runs.
_versions: dict[str, str] | None = None


def _package_versions() -> dict[str, str]:
    global _versions
    if not process_cache_enabled():
        return package_versions()
    if _versions is None:
        _versions = package_versions()
    return dict(_versions)


def _forget_versions() -> None:
    global _versions
    _versions = None


on_clear(_forget_versions)


def gather_provenance(
    env_allow_list: Sequence[str] = (), engine_job_id: str | None = None
) -> JobProvenance:
    """Describe this process's host, platform, software and (allowed) environment.

    ``engine_job_id`` is the id the engine gave the job (``JobSpec.engine_job_id``);
    without one, the batch system's variable is used when there is one.
    """
    environment = {name: os.environ[name] for name in env_allow_list if name in os.environ}
    engine_job_id = engine_job_id or next(
        (os.environ[name] for name in _ENGINE_ID_VARIABLES if os.environ.get(name)), None
    )
    return JobProvenance(
        host=socket.gethostname() or platform.node(),
        platform=platform.platform(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        packages=_package_versions(),
        environment=environment,
        engine_job_id=engine_job_id,
    )
