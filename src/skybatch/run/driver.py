"""``skybatch run``: one pipeline over one data selection, carried through every step.

submit: provenance files (step 4) → expansion into a quantum graph (step 5) → workflow
of jobs (step 9) → init outputs → scheduler: staging of each job's inputs (steps 6, 8),
execution on the engine (steps 10, 11) → end of pipeline: stage-back (14), Butler
ingest and object catalogs (12), intermediate cleanup (15). Every step records its
state, so ``resume`` after a crash or ``kill -9`` continues without re-running
succeeded jobs.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from skybatch import heap
from skybatch.backbone.catalog import FileRecord
from skybatch.backbone.errors import FileMissingError
from skybatch.backbone.replication import replicate
from skybatch.backbone.service import Backbone
from skybatch.engines.base import Engine, JobState
from skybatch.engines.registry import EngineRegistry
from skybatch.errors import DataError, InputError
from skybatch.graph.workflow import JobNode, Workflow
from skybatch.job.spec import FileSpec, JobSpec
from skybatch.settings import Settings

from . import setup
from .context import (
    RunContext,
    RunEnd,
    RunOptions,
    RunSummary,
    engine_settings,
    make_engine,
    read_reports,
)
from .models import JobRow, RunRow, RunState
from .runlog import run_log
from .scheduler import RetryPolicy, Scheduler, SchedulerHooks
from .states import INITIAL, change_run_state

__all__ = [
    "RunOptions",
    "RunSummary",
    "SetUp",
    "check_engine",
    "conclude_run",
    "engine_settings",
    "finish_run_in_process",
    "make_engine",
    "prepare_execution",
    "read_reports",
    "resume_run",
    "run_engine_name",
    "set_up_run",
    "submit_run",
]

_log = logging.getLogger(__name__)


class _Phases:
    """Wall time per phase of a run, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


def _default_run_name(pipeline: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(pipeline.partition("#")[0]).stem)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"u/{getpass.getuser()}/{stem}/{stamp}"


def check_engine(options: RunOptions, registry: EngineRegistry | None = None) -> None:
    """Validate the engine name and settings of ``options`` without building the engine.

    Raises:
        EngineConfigError: unknown engine, or its plugin cannot be loaded.
        EngineSettingsError: a setting is unknown or invalid (names the field).
    """
    registry = registry or EngineRegistry.default()
    registry.parse_settings(options.engine, engine_settings(options), where="engine settings")
    from .admission import check_admission

    check_admission(options, registry)  # jobs no allocation could take: refused now


def submit_run(settings: Settings, options: RunOptions, progress: Any = None) -> RunSummary:
    """Validate, expand and execute a new run; returns when it has finished."""
    run = options.output_run or _default_run_name(options.pipeline)
    check_engine(options)  # before anything is written
    ctx = RunContext(settings, options, run)
    try:
        existing = _refuse_existing(ctx)
        with setup.claim(ctx.workdir, run), run_log(ctx.workdir):
            if existing is not None:  # killed during its set-up: set up again
                setup.discard(ctx.backbone, ctx.repo, run)
            _record(ctx)
            setup.boundary("record")
            try:
                # Workers start now: their imports overlap the expansion.
                with ctx.make_engine() as engine:
                    engine.warm_up()
                    workflow, phases = _set_up(ctx)
                    return _execute(ctx, engine, workflow, progress, phases=phases)
            except Exception:
                setup.abandon(ctx.backbone, ctx.repo, run)  # only if no job exists yet
                raise
    finally:
        ctx.close()
        # The graph was frozen out of collections while it was needed (skybatch.heap);
        # a long-lived caller (the campaign manager) must get its garbage back.
        heap.release()


def _refuse_existing(ctx: RunContext) -> int | None:
    """The id of a run of this name killed during its set-up (to set up again), None
    if there is none; a run whose set-up finished is refused (before anything is
    written)."""
    with ctx.sessions() as session:
        existing = session.scalar(select(RunRow.id).where(RunRow.name == ctx.run))
        if existing is not None and setup.setup_finished(session, existing):
            raise InputError(
                f"run {ctx.run!r} already exists",
                where="--output-run",
                hint=f"resume it with `skybatch run --resume {ctx.run}` or choose another name",
            )
    return existing


def _set_up(ctx: RunContext) -> tuple[Workflow, _Phases]:
    """Set-up phases ``expand`` to ``inputs`` (see :mod:`skybatch.run.setup`): the
    quantum graph, the workflow, provenance, init-outputs and the inputs' catalog
    entries. The jobs are created by whoever executes the run."""
    from skybatch.graph.build import build_workflow
    from skybatch.graph.expand import expand

    options, run = ctx.options, ctx.run
    qgraph = ctx.workdir / "graph.qg"
    phases = _Phases()
    if options.file_templates:
        from skybatch.campaign.naming import write_templated_config

        write_templated_config(ctx.repo, options.file_templates, Path(ctx.butler_config))
    expansion = expand(options.repo, options.pipeline, options.inputs, run, options.query, qgraph)
    phases.mark("expand")
    setup.boundary("expand")
    workflow = build_workflow(
        expansion,  # the graph in memory: no second read of the file
        repo=ctx.repo,
        butler_config=ctx.butler_config,
        run=run,
        pipeline=options.pipeline,
        input_collections=options.inputs,
        where=options.query,
        expansion_s=expansion.expansion_s,
        cluster_rules=options.cluster,
        resources=options.resources,
        default_resources=options.default_resources,
        catalog=ctx.backbone.catalog,
    )
    workflow.save(ctx.workdir / "workflow.json")
    phases.mark("workflow")
    setup.boundary("workflow")
    from .provenance import write_submission_provenance

    write_submission_provenance(ctx.backbone, ctx.workdir, run, options.to_json(), options.pipeline)
    with ctx.sessions.begin() as session:
        live = session.scalar(select(RunRow).where(RunRow.name == run))
        assert live is not None
        change_run_state(live, RunState.RUNNING)
        live.summary = {
            "quanta_per_task": workflow.quanta_per_task,
            "expansion_s": workflow.expansion_s,
        }
    phases.mark("provenance")
    setup.boundary("provenance")
    from skybatch.ingest.butler import write_init_outputs

    init_refs = write_init_outputs(expansion.graph, ctx.butler_config)
    (ctx.workdir / "init-outputs.json").write_text(json.dumps([asdict(r) for r in init_refs]))
    _register_init_outputs(ctx, init_refs, expansion.graph)
    phases.mark("init_outputs")
    setup.boundary("init_outputs")
    _register_inputs(ctx, workflow, expansion.graph)
    phases.mark("inputs")
    setup.boundary("inputs")
    return workflow, phases


@dataclass
class SetUp:
    """A run set up by :func:`set_up_run` (its jobs exist): what the process that
    executes it needs to go on."""

    run: str
    run_id: int
    workdir: Path
    phases: dict[str, float]
    #: Seconds of CPU the set-up took in its process.
    cpu_s: float = 0.0


def set_up_run(settings: Settings, options: RunOptions) -> SetUp:
    """Set a new run up to its jobs (set-up phases ``record`` to ``jobs``), for an
    execution pool (:mod:`skybatch.run.pool`) that executes it on its shared engine:
    the work of :func:`submit_run` before the engine is needed, in a process of its
    own (graph building is CPU-bound Python). A run killed during its set-up is
    discarded and set up again, as :func:`submit_run` does; a failed set-up discards
    what it wrote and raises."""
    from .scheduler import create_jobs

    cpu = time.process_time()
    run = options.output_run
    assert run is not None, "a pooled run is named by its caller"
    ctx = RunContext(settings, options, run)
    try:
        existing = _refuse_existing(ctx)
        with setup.claim(ctx.workdir, run), run_log(ctx.workdir):
            if existing is not None:
                setup.discard(ctx.backbone, ctx.repo, run)
            _record(ctx)
            setup.boundary("record")
            try:
                workflow, phases = _set_up(ctx)
                with ctx.sessions() as session:
                    run_id = session.scalar(select(RunRow.id).where(RunRow.name == run))
                assert run_id is not None
                create_jobs(ctx.sessions, run_id, workflow)
                setup.boundary("jobs")
            except Exception:
                setup.abandon(ctx.backbone, ctx.repo, run)
                raise
    finally:
        ctx.close()
        heap.release()
    return SetUp(run, run_id, ctx.workdir, dict(phases.seconds), cpu_s=time.process_time() - cpu)


def run_engine_name(settings: Settings, run: str) -> str:
    """The engine run ``run`` was submitted with (for its ``--resume`` flags)."""
    from skybatch.db.state import open_state_db

    with open_state_db(settings)() as session:
        engine = session.scalar(select(RunRow.engine).where(RunRow.name == run))
    if engine is None:
        raise InputError(
            f"no run named {run!r}",
            where="--resume",
            hint="list runs with `skybatch report --list`",
        )
    return engine


def _record(ctx: RunContext) -> None:
    """The run's row, before anything else of it is written (set-up phase ``record``)."""
    options = ctx.options
    with ctx.sessions.begin() as session:
        session.add(
            RunRow(
                name=ctx.run,
                repo=str(ctx.repo),
                pipeline=options.pipeline,
                input_collections=options.inputs,
                data_query=options.query,
                site=ctx.site,
                engine=options.engine,
                workdir=str(ctx.workdir),
                state=INITIAL.value,
                options=options.to_json(),
                summary={},
            )
        )


def resume_run(
    settings: Settings,
    run: str,
    progress: Any = None,
    engine_settings: dict[str, Any] | None = None,
) -> RunSummary:
    """Finish a run after a crash: succeeded jobs stay, the rest run (again). A run
    killed during its set-up is set up again (see :mod:`skybatch.run.setup`).

    ``engine_settings``: settings of the run's engine that replace the stored ones
    (nested settings merge: ``{"pilot": {"walltime_s": 7200}}`` keeps the other pilot
    settings); checked, and stored with the run, before anything runs.
    """
    backbone = Backbone.from_settings(settings)
    with backbone.catalog.sessions() as session:
        row = session.scalar(select(RunRow).where(RunRow.name == run))
        if row is None:
            raise InputError(
                f"no run named {run!r}",
                where="--resume",
                hint="list runs with `skybatch report --list`",
            )
        options = RunOptions.from_json(row.options)
        workdir = Path(row.workdir)
        set_up = setup.setup_finished(session, row.id)
    if engine_settings:
        from .admission import with_engine_settings

        options = with_engine_settings(backbone.catalog.sessions, run, options, engine_settings)
    if not set_up:
        return submit_run(settings, replace(options, output_run=run), progress)
    ctx = RunContext(settings, options, run, workdir=workdir)
    try:
        with setup.claim(workdir, run), run_log(workdir):
            return _resume(ctx, progress)
    finally:
        ctx.close()


def _resume(ctx: RunContext, progress: Any) -> RunSummary:
    run, workdir = ctx.run, ctx.workdir
    workflow = Workflow.load(workdir / "workflow.json")
    ctx.butler_config = workflow.butler_config  # the outputs' names were predicted with it
    with ctx.sessions.begin() as session:
        live = session.scalar(select(RunRow).where(RunRow.name == run))
        assert live is not None
        change_run_state(live, RunState.RUNNING)
        live.message = None
    with ctx.make_engine() as engine:
        engine.warm_up()
        return _execute(ctx, engine, workflow, progress, resume=True)


def _register_init_outputs(ctx: RunContext, init_refs: list[Any], graph: Any) -> None:
    """Configs, packages and init-outputs: into the Butler and the backbone catalog now,
    since jobs may read them (init-inputs) and must find them staged."""
    from skybatch.backbone.butler import register_refs
    from skybatch.ingest.butler import ingest_outputs

    from .caches import repository_butler

    ingest_outputs(ctx.repo, ctx.butler_config, graph, init_refs)
    with repository_butler(ctx.repo) as butler:
        refs = [r for o in init_refs if (r := butler.get_dataset(o.dataset_id)) is not None]
        register_refs(ctx.backbone, butler, refs, endpoint=ctx.archive, producer="pre-exec-init")


def _register_inputs(ctx: RunContext, workflow: Workflow, graph: Any) -> None:
    """Register the run's pre-existing input files (archive) in the backbone catalog,
    with the RUN collection the Butler holds each in (from the quantum graph)."""
    produced = {o.dataset_id for job in workflow.jobs for o in job.outputs}
    inputs = {
        f.dataset_id: f for job in workflow.jobs for f in job.inputs if f.dataset_id not in produced
    }
    known = ctx.backbone.catalog.files_by_dataset_ids(list(inputs))
    archive = ctx.backbone.endpoint(ctx.archive)
    nodes = graph.bipartite_xgraph.nodes
    records = []
    for f in inputs.values():
        if f.dataset_id in known:
            continue
        path = f"{archive.location.rstrip('/')}/{f.path}"  # a file, or an object
        try:
            size, md5 = archive.checksum(f.path)
        except FileMissingError:
            data_id = ", ".join(f"{k}={v}" for k, v in f.data_id.items())
            raise DataError(
                f"input {f.dataset_type} ({data_id}; dataset {f.dataset_id}) is in the Butler "
                f"but its file is missing: {path}",
                where=f.path,
                hint="put the file back (from a backup or another copy), or remove the dataset "
                "from the Butler; then run the same command again",
            ) from None
        node = nodes.get(uuid.UUID(f.dataset_id))
        records.append(
            FileRecord(
                f.path,
                size,
                md5,
                f.dataset_id,
                f.dataset_type,
                f.data_id,
                run=node.get("run") if node is not None else None,
                producer="butler",
            )
        )
    if records:
        ctx.backbone.catalog.register(records, ctx.archive)


def _execute(
    ctx: RunContext,
    engine: Engine,
    workflow: Workflow,
    progress: Any,
    *,
    resume: bool = False,
    phases: _Phases | None = None,
) -> RunSummary:
    start = time.perf_counter()
    phases = phases or _Phases()
    scheduler = prepare_execution(ctx, engine, workflow, progress, resume=resume)
    result = scheduler.run()
    # Workers take a moment to exit: let them while the outputs are ingested.
    closer = threading.Thread(target=engine.close, name="skybatch-engine-close")
    closer.start()
    phases.mark("execute")
    try:
        return conclude_run(
            ctx, workflow, scheduler.run_id, result.counts, phases.seconds, start=start
        )
    finally:
        closer.join()


def prepare_execution(
    ctx: RunContext, engine: Engine, workflow: Workflow, progress: Any, *, resume: bool = False
) -> Scheduler:
    """The run's scheduler on ``engine``, its jobs created (set-up phase ``jobs``) and,
    when ``resume``, what a killed driver left in the engine adopted or retried. The
    caller runs it (:meth:`Scheduler.run`, or step by step in an execution pool)."""
    with ctx.sessions() as session:
        run_id = session.scalar(select(RunRow.id).where(RunRow.name == ctx.run))
        assert run_id is not None
    produced = {o.dataset_id for job in workflow.jobs for o in job.outputs}
    pin_until = datetime.now(UTC) + timedelta(days=1)
    # Nodes that do not see the site cache (the run says so, or the engine cannot
    # offer a shared filesystem) read from and write to the archive.
    ctx.via_archive = not (ctx.options.shared_filesystem and engine.capabilities.shared_filesystem)

    def stage_inputs(jobs: Sequence[JobNode]) -> None:
        ids = [f.dataset_id for job in jobs for f in job.inputs if f.dataset_id not in produced]
        if not ids:
            return
        files = list(ctx.backbone.catalog.files_by_dataset_ids(ids).values())
        if ctx.via_archive:
            # Jobs read the archive's disk front: nearline inputs are recalled there.
            from skybatch.backbone.staging import recall

            recall(ctx.backbone, files, ctx.archive)
            return
        replicate(ctx.backbone, files, ctx.site, pin_until=pin_until)
        setup.boundary("replicate")

    site_root = str(ctx.backbone.endpoint(ctx.site).root)

    def make_spec(job: JobNode, row: JobRow) -> JobSpec:
        # The engine creates the directory when it writes the job's files there (a
        # directory per job costs two file-system operations in the loop that every
        # group in flight shares, for engines that write nothing).
        job_dir = ctx.workdir / "jobs" / job.name / f"attempt-{row.attempts}"
        spec = JobSpec(
            run=ctx.run,
            job=job.name,
            attempt=row.attempts,
            qgraph=str(ctx.workdir / "graph.qg"),
            quantum_ids=job.quanta,
            butler_config=ctx.butler_config,
            workdir=str(job_dir / "work"),
            report_path=str(job_dir / "report.json"),
            inputs=job.inputs,
            outputs=job.outputs,
            site_endpoint=ctx.site,
            site_root=site_root,
            archive_endpoint=ctx.archive,
            archive_root=str(ctx.archive_root),
            stage_in="archive" if ctx.via_archive else "symlink",
            stage_out="archive" if ctx.via_archive else "site",
            db_url=ctx.settings.database_url(),
            memory_mb=row.memory_mb,
            cores=row.cores,
            walltime_s=row.walltime_s,
            junk_tarball=ctx.options.junk_tarball,
            job_id=row.id,
        )
        # The engine writes the spec file the job runs with (with its engine job id).
        return spec

    def before_retry(job: JobNode) -> None:
        _forget_outputs(ctx, job.outputs)

    policy = RetryPolicy(
        ctx.options.max_attempts,
        ctx.options.memory_factor,
        ctx.options.memory_cap_mb,
        ctx.options.infrastructure_retries,
    )
    scheduler = Scheduler(
        ctx.sessions,
        run_id,
        workflow,
        engine,
        SchedulerHooks(make_spec, stage_inputs, before_retry, progress or (lambda d, t: None)),
        policy,
        max_in_flight=ctx.options.max_running_jobs,
    )
    scheduler.create_jobs()
    setup.boundary("jobs")
    if resume:
        # Jobs the engine still runs (or ran) after a restart keep their outputs and
        # are polled; the rest of the unfinished jobs start afresh.
        adopted = set(scheduler.reattach())
        for name in _unfinished_jobs(ctx, run_id):
            if name not in adopted:
                _forget_outputs(ctx, scheduler.nodes[name].outputs)
        scheduler.recover_orphans()
        released = scheduler.release_held()
        if released:
            _log.info("resume: %d held job(s) get new attempts", len(released))
    return scheduler


def conclude_run(
    ctx: RunContext,
    workflow: Workflow,
    run_id: int,
    counts: dict[str, int],
    phases: dict[str, float],
    *,
    start: float,
) -> RunSummary:
    """The end of a run whose jobs ended (``counts``: jobs per state): its finish
    (:mod:`skybatch.run.finish`; in full if every job succeeded), then its state and
    summary. ``start``: the run's start (``perf_counter``) in this process."""
    succeeded = set(counts) <= {JobState.SUCCEEDED.value}
    cancelled = JobState.CANCELLED.value in counts
    summary = RunSummary(
        run=ctx.run,
        state=RunState.SUCCEEDED.value
        if succeeded
        else (RunState.CANCELLED.value if cancelled else RunState.FAILED.value),
        workdir=ctx.workdir,
        quanta=sum(workflow.quanta_per_task.values()),
        jobs=counts,
        expansion_s=workflow.expansion_s,
        wall_s=0.0,
    )
    from .finish import finish_partial, finish_run

    finish_start = time.perf_counter()
    (finish_run if succeeded else finish_partial)(ctx, workflow, summary)
    phases = {**phases, "finish": phases.get("finish", 0.0) + time.perf_counter() - finish_start}
    summary.phases = {k: round(v, 3) for k, v in {**phases, **summary.phases}.items()}
    summary.wall_s = time.perf_counter() - start
    with ctx.sessions.begin() as session:
        live = session.get(RunRow, run_id)
        assert live is not None
        change_run_state(live, RunState(summary.state))
        live.summary = {
            **live.summary,
            "jobs": counts,
            "wall_s": summary.wall_s,
            "outputs_ingested": summary.outputs_ingested,
            "catalog_rows": summary.catalog_rows,
            "cleaned": summary.cleaned,
            "phases_s": summary.phases,
            "warnings": summary.warnings,
        }
    return summary


def finish_run_in_process(settings: Settings, end: RunEnd) -> RunSummary:
    """:func:`conclude_run` for a run an execution pool executed in another process."""
    run, workdir = end.run, end.workdir
    ctx = RunContext(settings, end.options, run, workdir=workdir)
    try:
        workflow = Workflow.load(workdir / "workflow.json")
        ctx.butler_config = workflow.butler_config
        ctx.via_archive = end.via_archive
        with ctx.sessions() as session:
            run_id = session.scalar(select(RunRow.id).where(RunRow.name == run))
        assert run_id is not None
        with setup.claim(workdir, run), run_log(workdir):
            start = time.perf_counter() - end.elapsed_s
            return conclude_run(ctx, workflow, run_id, end.counts, end.phases, start=start)
    finally:
        ctx.close()
        heap.release()


def _unfinished_jobs(ctx: RunContext, run_id: int) -> list[str]:
    with ctx.sessions() as session:
        return list(
            session.scalars(
                select(JobRow.name).where(
                    JobRow.run_id == run_id, JobRow.state != JobState.SUCCEEDED.value
                )
            )
        )


def _forget_outputs(ctx: RunContext, outputs: list[FileSpec]) -> None:
    """Remove what a failed or interrupted attempt left, so the retry writes afresh."""
    from skybatch.backbone.maintenance import delete
    from skybatch.backbone.removal import remove_unregistered

    known = ctx.backbone.catalog.files_by_dataset_ids([o.dataset_id for o in outputs])
    if known:
        delete(ctx.backbone, list(known.values()))
    # Unregistered leftovers (e.g. copied out, then killed before registering).
    remove_unregistered(
        ctx.backbone, ctx.archive if ctx.via_archive else ctx.site, [o.path for o in outputs]
    )
