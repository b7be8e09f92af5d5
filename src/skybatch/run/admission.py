"""Refuse, before anything is written, a run whose jobs the engine could never take.

Every resource request a run's jobs are made from (``--resources LABEL=...`` and the
default request, ``--memory-mb``; a campaign's ``policies.resources`` and
``default_resources``) is checked against the engine's settings with
:meth:`skybatch.engines.base.Engine.admission_problem_for`: in Slurm's pilot mode a
job whose walltime plus the end margin exceeds the pilots' walltime would otherwise
wait forever. Jobs that only become too large later (memory raised after an
out-of-memory failure) are failed by the scheduler with the same message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from skybatch.engines.base import Resources
from skybatch.engines.registry import EngineRegistry
from skybatch.errors import InputError

__all__ = ["admission_problems", "check_admission", "with_engine_settings"]


def admission_problems(
    engine: str,
    settings: Mapping[str, Any],
    requests: Mapping[str, Resources],
    registry: EngineRegistry | None = None,
) -> Iterator[tuple[str, str]]:
    """``(label, problem)`` for each request (by task label, or any key) the engine
    ``engine`` with raw ``settings`` could never take."""
    registry = registry or EngineRegistry.default()
    parsed = registry.parse_settings(engine, dict(settings), where="engine settings")
    cls = registry.get(engine)
    for label, request in requests.items():
        problem = cls.admission_problem_for(parsed, request)
        if problem:
            yield label, problem


def check_admission(options: Any, registry: EngineRegistry | None = None) -> None:
    """Raise InputError for the first request of ``options`` (RunOptions) that the
    run's engine could never take, naming the option and both numbers."""
    from .context import engine_settings

    requests: dict[str, Resources] = {"": options.default_resources, **options.resources}
    for label, problem in admission_problems(
        options.engine, engine_settings(options), requests, registry
    ):
        what = f"--resources {label}" if label else "the default request (--memory-mb)"
        raise InputError(
            f"jobs of {'task ' + label if label else 'every other task'} ask for more than "
            f"the {options.engine} engine can ever give: {problem}",
            where=what,
            hint="raise the engine's limit (e.g. --engine-setting pilot.walltime_s=7200) "
            "or ask for less (--resources LABEL=walltime_s:N)",
        )


def _merged(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        old = out.get(key)
        out[key] = (
            _merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


def with_engine_settings(sessions: Any, run: str, options: Any, new: Mapping[str, Any]) -> Any:
    """``options`` (a run's stored RunOptions) with engine settings ``new`` merged over
    its own, checked (settings and admission) and stored with the run, so this resume
    and later ones use them."""
    from dataclasses import replace

    from sqlalchemy import select

    from .driver import check_engine
    from .models import RunRow

    options = replace(options, engine_settings=_merged(options.engine_settings, new))
    check_engine(options)
    with sessions.begin() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        if row is not None:
            row.options = options.to_json()
    return options
