"""Command-line values checked when the command line is read, before anything is written.

Every command that takes the same kind of value uses the same type here, so
``skybatch run --workers 0`` and ``--retries -1`` are refused like any bad option
(exit 2, naming the option) instead of being ignored or reaching a database. Ids fit
the state database's integers; run names are Butler RUN collections and file names.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

from skybatch import limits

__all__ = [
    "ATTEMPTS",
    "DATABASE_ID",
    "HOURS",
    "MEMORY_FACTOR",
    "MEMORY_MB",
    "NON_NEGATIVE",
    "POSITIVE",
    "PRIORITY",
    "REPOSITORY",
    "RUN_NAME",
    "SECONDS",
    "Repository",
    "RunName",
    "check_run_name",
    "finite",
    "first_error",
]

#: Characters of one component of a run name (components are separated by ``/``).
_RUN_COMPONENT = re.compile(r"^[A-Za-z0-9_.+=@:-]+$")


class _IntRange(click.IntRange):
    """An integer range whose upper end defaults to what the database can store."""

    def __init__(self, min: int | None = None, max: int = limits.MAX_DATABASE_INTEGER) -> None:
        super().__init__(min=min, max=max)


class _FiniteFloat(click.FloatRange):
    """A float range that also refuses ``nan`` and ``inf``."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: Counts of at least one (workers, attempts, cores).
POSITIVE = _IntRange(min=1)
#: Counts that may be zero (extra attempts).
NON_NEGATIVE = _IntRange(min=0)
#: Attempts per job, the first included (the campaign's ``retries.max_attempts``).
ATTEMPTS = _IntRange(min=1)
#: Memory in MB.
MEMORY_MB = _IntRange(min=1)
#: Memory multiplier after a memory failure: a retry never asks for less.
MEMORY_FACTOR = _FiniteFloat(min=1.0, max=1e6)
#: Priorities (stored in the database).
PRIORITY = _IntRange(min=-limits.MAX_DATABASE_INTEGER)
#: Ids of rows in the state database (campaigns, jobs, requests).
DATABASE_ID = _IntRange(min=1)
#: TCP ports to listen on.
PORT = click.IntRange(min=1, max=65535)


def finite(min: float = 0.0, *, min_open: bool = False, max: float = 1e9) -> click.FloatRange:
    """A float option from ``min`` up to ``max`` that refuses ``nan`` and ``inf``."""
    return _FiniteFloat(min=min, min_open=min_open, max=max)


#: Durations in hours (pins): up to a century, what dates can hold.
HOURS = finite(0.0, min_open=True, max=1e6)
#: Durations in seconds (polls, timeouts, margins): up to a year.
SECONDS = finite(0.0, max=365 * 86400.0)


def check_run_name(name: str) -> str | None:
    """Why ``name`` cannot be an output run, or ``None`` if it can.

    A run name is a Butler RUN collection and, component by component, a directory
    (its files are ``RUN/...`` in the repository and the skybatch home), so it must not
    be absolute or climb out with ``..``, and each component is a file name.
    """
    if not name:
        return "the run name is empty"
    if name != name.strip():
        return "the run name starts or ends with white space"
    if name.startswith("/") or name.startswith("~"):
        return f"{name!r} is an absolute path, not a run name"
    size = len(name.encode())
    if size > limits.MAX_RUN_NAME_BYTES:
        return f"the run name is {size} bytes long, more than {limits.MAX_RUN_NAME_BYTES}"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            shown = "an empty component" if not part else f"a {part!r} component"
            return f"{name!r} has {shown}: run names are paths inside the repository"
        if not _RUN_COMPONENT.match(part):
            bad = sorted({c for c in part if not _RUN_COMPONENT.match(c)})
            return f"{name!r} has characters a run name cannot have: {''.join(bad)!r}"
    return None


class RunName(click.ParamType):
    """A Butler output RUN name that is also a safe relative path."""

    name = "RUN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        problem = check_run_name(str(value))
        if problem is not None:
            self.fail(
                f"{problem}; use components of letters, digits and _ . + = @ : - "
                "separated by '/', e.g. u/me/drp/2026-05-01",
                param,
                ctx,
            )
        return str(value)


RUN_NAME = RunName()


class Repository(click.ParamType):
    """A Butler repository as the Butler names it (a directory, a ``butler.yaml`` path or
    ``file://`` URI, a repository index label), converted to the path skybatch opens and
    records it by (:attr:`skybatch.repository.ButlerRepository.location`)."""

    name = "REPO"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pathlib import Path

        from skybatch.errors import InputError
        from skybatch.repository import resolve_repository

        if isinstance(value, Path):
            return value
        try:
            return resolve_repository(str(value), where="--repo").location
        except InputError as exc:
            self.fail(f"{exc.message}; {exc.hint}" if exc.hint else exc.message, param, ctx)


REPOSITORY = Repository()


def first_error(exc: Exception) -> str:
    """One line for ``exc``: a pydantic validation error's first problem, not its dump."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        return f"{field}: {error['msg'][:1].lower()}{error['msg'][1:]}"
    return str(exc)
