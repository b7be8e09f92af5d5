"""Running one group as a skybatch run through the execution driver.

The group's run is named by the group (``run_name``) and its options come from the
campaign: the step's pipeline, the campaign's inputs after the output runs of the
steps it depends on, the group's query, the step's policies (retries, resources,
intermediates) with the operator's ``retry`` overrides, the campaign's site (its
endpoint, cache root and whether the compute nodes see it) and engine (its name and
settings), and ``max_running_jobs`` as the most jobs the scheduler hands the engine at
once (on every engine; for the local engine also its number of workers).

What happens depends on what the group's run already is, so a manager killed at any
point picks the group up again without running finished work twice:

- no run yet: submitted (:func:`skybatch.run.driver.submit_run`);
- a run that had started executing (it has jobs): resumed
  (:func:`skybatch.run.driver.resume_run`; jobs of the killed driver are lost and
  retried, held jobs get new attempts, succeeded jobs never run again);
- a run that had succeeded: nothing to do;
- a run killed while it was being set up (a run row without jobs: its init-outputs
  may be half written): submitted again under the same name, which discards what it
  left (:mod:`skybatch.run.setup`, the same mechanism as ``skybatch run``'s).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func, select

from skybatch.engines.registry import EngineRegistry
from skybatch.errors import SkybatchError
from skybatch.settings import Settings

from .config import Campaign, Step

__all__ = ["GroupExecutor", "GroupOutcome", "GroupStopped", "group_run_options", "run_group"]

_log = logging.getLogger(__name__)

DEFAULT_SITE = "site:local"


class GroupStopped(Exception):
    """Raised from the run's progress callback when the group was cancelled."""


@dataclass(frozen=True)
class GroupOutcome:
    """How a group's run ended: ``succeeded``, ``failed`` or ``stopped`` (cancelled)."""

    state: str
    message: str
    resumed: bool = False


class GroupExecutor(Protocol):
    """What runs a group's run for the manager: :func:`run_group` (the execution
    driver), or a stand-in with the same contract (the ``manager_scale`` benchmark
    drives the scheduler on an instant engine without a Butler). It gets the group's
    :class:`~skybatch.run.driver.RunOptions` (``options.output_run`` is the group's
    run name), reports progress, asks ``stop()`` whether the group was cancelled, and
    returns the outcome without raising for a failed run."""

    def __call__(
        self,
        settings: Settings,
        options: Any,
        *,
        progress: Callable[[int, int], None] | None = None,
        stop: Callable[[], bool] | None = None,
        after_restart: bool = False,
    ) -> GroupOutcome: ...


def group_run_options(
    campaign: Campaign,
    step: Step,
    *,
    inputs: list[str],
    query: str,
    run: str,
    overrides: dict[str, Any] | None = None,
    registry: EngineRegistry | None = None,
) -> Any:
    """The :class:`skybatch.run.driver.RunOptions` of a group's run (``registry``: the
    engines, by default the installed ones; a caller starting many groups passes one,
    since finding the installed engines takes ~10 ms)."""
    from skybatch.run.driver import RunOptions

    overrides = overrides or {}
    policies = campaign.policies_for(step)
    memory_floor = int(overrides.get("memory_mb") or 0)

    def raised(request: Any) -> Any:
        if request.memory_mb >= memory_floor:
            return request
        return request.model_copy(update={"memory_mb": memory_floor})

    engine = campaign.engine
    registry = registry or EngineRegistry.default()
    settings = registry.normalize_settings(engine.name, engine.settings)
    workers = None
    if engine.name == "local":  # other engines take their limits from their settings
        workers = engine.workers or settings.get("max_workers")
        limit = policies.concurrency.max_running_jobs
        if limit is not None:
            workers = min(workers or os.cpu_count() or 1, limit)
    retries = policies.retries
    return RunOptions(
        repo=campaign.repo,
        pipeline=step.pipeline_uri,
        inputs=inputs,
        query=query,
        output_run=run,
        site=None if campaign.site.name == DEFAULT_SITE else campaign.site.name,
        site_root=str(campaign.site.root) if campaign.site.root is not None else None,
        shared_filesystem=campaign.site.shared_filesystem,
        engine=engine.name,
        engine_settings=settings,
        workers=workers,
        max_running_jobs=policies.concurrency.max_running_jobs,
        max_attempts=int(overrides.get("max_attempts") or retries.max_attempts),
        memory_factor=retries.memory_factor,
        memory_cap_mb=max(retries.memory_cap_mb, memory_floor),
        infrastructure_retries=retries.infrastructure_retries,
        resources={label: raised(policies.resources_for(label)) for label in policies.resources},
        default_resources=raised(policies.default_resources),
        intermediates=list(policies.intermediates),
        catalog_tables=policies.catalogs.selection,
        catalog_db_url=policies.catalogs.database,
        file_templates=dict(campaign.file_templates),
    )


def run_group(
    settings: Settings,
    options: Any,
    *,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    check_every_s: float = 1.0,
    after_restart: bool = False,
) -> GroupOutcome:
    """Submit, resume or finish the group's run (see the module); never raises for a
    failed run: the outcome says what happened. ``stop()`` is asked at most every
    ``check_every_s`` seconds while the run executes; when it returns True the run is
    abandoned (its engine closed) and the outcome is ``stopped``.

    ``after_restart``: the group was found running by a new manager. A run that had
    already ended then only has its end recorded: a failed run is not resumed (that
    would retry its held jobs, which is the operator's ``retry``)."""
    from skybatch.backbone.service import Backbone
    from skybatch.run.driver import resume_run, submit_run
    from skybatch.run.models import JobRow, RunRow

    run = options.output_run
    last_check = [time.monotonic()]

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)
        now = time.monotonic()
        if stop is not None and now - last_check[0] >= check_every_s:
            last_check[0] = now
            if stop():
                raise GroupStopped(run)

    if stop is not None and stop():
        return GroupOutcome("stopped", f"run {run} was not started: the group was cancelled")
    backbone = Backbone.from_settings(settings)
    sessions = backbone.catalog.sessions
    with sessions() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        state = row.state if row is not None else None
        jobs = (
            session.scalar(select(func.count()).select_from(JobRow).where(JobRow.run_id == row.id))
            if row is not None
            else 0
        )
    resumed = False
    try:
        if row is not None and state == "succeeded":
            return GroupOutcome("succeeded", f"run {run} had already succeeded", resumed=True)
        if row is not None and after_restart and state in ("failed", "cancelled"):
            message = f"run {run} had already {state}" + (f": {row.message}" if row.message else "")
            return GroupOutcome("failed", message, resumed=True)
        if row is not None and jobs:
            resumed = True
            summary = resume_run(settings, run, report)
        else:  # a run killed during its set-up is discarded by submit_run
            summary = submit_run(settings, options, report)
    except GroupStopped:
        _mark_cancelled(sessions, run)
        return GroupOutcome("stopped", f"run {run} was stopped: the group was cancelled", resumed)
    except SkybatchError as exc:
        return GroupOutcome("failed", f"run {run} could not run: {exc}", resumed)
    except Exception as exc:  # a bug or an LSST error the driver did not translate
        _log.exception("run %s of a campaign group failed unexpectedly", run)
        return GroupOutcome(
            "failed", f"run {run} failed unexpectedly: {type(exc).__name__}: {exc}", resumed
        )
    jobs_text = ", ".join(f"{k}={v}" for k, v in sorted(summary.jobs.items())) or "no jobs"
    if summary.state == "succeeded":
        warnings = "".join(f"; warning: {w}" for w in summary.warnings)
        return GroupOutcome(
            "succeeded",
            f"run {run} succeeded: {summary.quanta} quanta ({jobs_text}){warnings}",
            resumed,
        )
    return GroupOutcome("failed", f"run {run} {summary.state}: jobs {jobs_text}", resumed)


def _mark_cancelled(sessions: Any, run: str) -> None:
    """A stopped run is over: its row says so (its jobs were cancelled by the engine)."""
    from skybatch.run.models import RunRow, RunState
    from skybatch.run.states import change_run_state

    with sessions.begin() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        if row is not None and row.state == RunState.RUNNING.value:
            change_run_state(row, RunState.CANCELLED)
            row.message = "stopped: its campaign group was cancelled"
