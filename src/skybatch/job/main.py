"""The job wrapper's orchestration (seed step 11): every phase, one report, one exit code.

:func:`run_job` is the in-process API (warm workers of the local engine call
:func:`run_job_file` with a spec path); ``python -m skybatch.job SPEC.json`` is the same
for every other engine. Order: read this job's quanta (a bad spec fails before
anything moves) → stage in → job-local butler config → execute → describe outputs →
junk tarball → stage out and register. The report is written whatever happens, atomically,
so the scheduler never reads half a report.

Exit codes: 0 every quantum succeeded and its outputs are staged out; 1 something
failed in this attempt (a quantum, staging, registration; the scheduler may retry);
2 the spec itself is wrong (retrying will not help); 28 (``EXIT_DISK_FULL``) the disk
is full so that not even the report could be written.

A process that runs many jobs (a warm worker) calls :func:`enable_process_cache` once;
the job wrapper then keeps what does not change between jobs (see
:mod:`skybatch.job.cache`). Reports are the same either way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from skybatch.engines.base import FailureKind

from .cache import enable_process_cache, on_clear, process_cache_enabled
from .causes import EXIT_DISK_FULL, error_line, failure_kind
from .errors import JobSpecError
from .execute import (
    ExecutedQuantum,
    JobQuanta,
    execute_quanta,
    load_quanta,
    write_job_butler_config,
)
from .joblog import capture_job_log
from .junk import find_junk, write_junk_tarball
from .metadata import ExtractorRegistry
from .outputs import collect_outputs
from .provenance import gather_provenance
from .spec import SCHEMA_VERSION, JobReport, JobSpec, OutputFileReport, QuantumReport
from .stagein import stage_in
from .stageout import stage_out, target_of
from .stats import Meter, PhaseClock

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SPEC",
    "enable_process_cache",
    "read_spec",
    "run_job",
    "run_job_file",
]

_log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SPEC = 2


@dataclass
class _Progress:
    """What the phases have produced so far (the report is built from it on any outcome)."""

    job: JobQuanta | None = None
    executed: list[ExecutedQuantum] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    outputs: list[OutputFileReport] = field(default_factory=list)
    junk: list[str] = field(default_factory=list)
    junk_tarball: str | None = None
    phase: str = "start"


def run_job(
    spec: JobSpec,
    *,
    extractors: ExtractorRegistry | None = None,
    spec_path: str | Path | None = None,
    clock: PhaseClock | None = None,
) -> JobReport:
    """Run the job ``spec`` describes; write and return its report (never raises for
    a failure of the job itself: that is in the report's status and exit code).

    Args:
        spec: The job.
        extractors: Science metadata extractors (default: installed plugins).
        spec_path: Where the spec was read from, so the junk tarball leaves it out.
        clock: Phases timed before this call (reading the spec); the report's
            ``phases_s`` holds them with the job's own.
    """
    meter = Meter().start()
    clock = clock or PhaseClock()
    started = time.perf_counter()
    provenance = gather_provenance(spec.env_allow_list, spec.engine_job_id)
    workdir = Path(spec.workdir).resolve()
    progress = _Progress()
    exit_code, error = EXIT_OK, None
    failure: FailureKind | None = None
    log_path: Path | None = None
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "job.log"
        with capture_job_log(log_path):
            _log.info(
                "job %s attempt %d of run %s on %s",
                spec.job,
                spec.attempt,
                spec.run,
                provenance.host,
            )
            clock.add("start", time.perf_counter() - started)
            try:
                _run_phases(spec, workdir, meter, progress, extractors, spec_path, clock)
            except JobSpecError as exc:
                exit_code, error = EXIT_SPEC, str(exc)
                _log.error("bad job spec: %s", exc)
            except Exception as exc:
                exit_code, error = EXIT_FAILED, f"{progress.phase}: {error_line(exc)}"
                failure = failure_kind(exc)
                _log.exception("job %s failed during %s", spec.job, progress.phase)
    except OSError as exc:  # the workdir itself is unusable: no log either
        exit_code, error = EXIT_FAILED, f"workdir: {error_line(exc)}"
        failure = failure_kind(exc)
    reporting = time.perf_counter()
    quanta = _quantum_reports(progress, error)
    failed = [q for q in quanta if q.status == "failed"]
    if failed and exit_code == EXIT_OK:
        exit_code = EXIT_FAILED
        first = next((q for q in failed if q.failure), failed[0])  # a known cause first
        error = f"{first.task_label} {first.data_id}: {first.error}"
        failure = FailureKind(first.failure) if first.failure else None
    report = JobReport(
        run=spec.run,
        job=spec.job,
        attempt=spec.attempt,
        status="succeeded" if exit_code == EXIT_OK else "failed",
        exit_code=exit_code,
        error=error,
        failure=failure.value if failure is not None else None,
        engine_job_id=provenance.engine_job_id,
        host=provenance.host,
        platform=provenance.platform,
        python=provenance.python,
        packages=provenance.packages,
        environment=provenance.environment,
        stats=meter.stop(),
        quanta=quanta,
        outputs=progress.outputs,
        inputs_staged=len(progress.staged),
        inputs_replaced=progress.replaced,
        stage_in_mode=spec.stage_in,
        junk_tarball=progress.junk_tarball,
        junk_files=progress.junk,
        log_path=str(log_path) if log_path is not None else None,
    )
    clock.add("report", time.perf_counter() - reporting)
    report.phases_s = clock.rounded()
    try:
        write_report(report, Path(spec.report_path))
    except OSError as exc:
        if failure_kind(exc) is None:
            raise
        # Not even the report fits: the exit code alone says why (EXIT_DISK_FULL).
        _log.error("cannot write the report of job %s: %s", spec.job, error_line(exc))
        report = report.model_copy(
            update={
                "status": "failed",
                "exit_code": EXIT_DISK_FULL,
                "error": f"report: {error_line(exc)}",
                "failure": FailureKind.DISK_FULL.value,
            }
        )
    return report


def _run_phases(
    spec: JobSpec,
    workdir: Path,
    meter: Meter,
    progress: _Progress,
    extractors: ExtractorRegistry | None,
    spec_path: str | Path | None,
    clock: PhaseClock,
) -> None:
    progress.phase = "spec"
    if spec.schema_version != SCHEMA_VERSION:
        raise JobSpecError(
            f"spec schema version {spec.schema_version}, this skybatch reads {SCHEMA_VERSION}",
            where="schema_version",
            hint="run the job with the skybatch version that wrote the spec",
        )
    # Everything that can be checked without moving data is checked first.
    target_of(spec)
    registry = extractors or _default_extractors()
    with clock.phase("graph"):
        progress.job = load_quanta(spec)
    datastore = workdir / "datastore"
    with clock.phase("butler_config"):
        config = write_job_butler_config(spec, workdir, datastore)
        if datastore.exists():  # left by an earlier attempt in this workdir: never reuse it
            shutil.rmtree(datastore)
    progress.phase = "stage-in"
    with clock.phase("stage_in"):
        staged = stage_in(spec, datastore)
    progress.staged, progress.replaced = staged.paths, staged.replaced
    progress.phase = "execute"
    progress.executed = execute_quanta(
        spec, progress.job, config, meter, datastore=datastore, clock=clock
    )
    progress.phase = "outputs"
    progress.outputs = collect_outputs(progress.executed, datastore, registry, clock)
    if spec.junk_tarball:
        progress.phase = "junk"
        junk_start = time.perf_counter()
        known = [datastore / p for p in progress.staged]
        known += [datastore / o.path for o in progress.outputs]
        known += [Path(spec.report_path).resolve(), Path(f"{spec.report_path}.partial").resolve()]
        if spec_path is not None:
            known.append(Path(spec_path).resolve())
        progress.junk = find_junk(workdir, known)
        tarball = write_junk_tarball(workdir, progress.junk)
        progress.junk_tarball = str(tarball) if tarball is not None else None
        clock.add("junk", time.perf_counter() - junk_start)
    progress.phase = "stage-out"
    stage_out(spec, datastore, progress.outputs, progress.executed, clock)
    progress.phase = "done"


_extractors: ExtractorRegistry | None = None


def _default_extractors() -> ExtractorRegistry:
    """The installed extractors; loaded once per process when the caches are on."""
    global _extractors
    if not process_cache_enabled():
        return ExtractorRegistry.default()
    if _extractors is None:
        _extractors = ExtractorRegistry.default()
    return _extractors


def _forget_extractors() -> None:
    global _extractors
    _extractors = None


on_clear(_forget_extractors)


def _quantum_reports(progress: _Progress, error: str | None) -> list[QuantumReport]:
    """Executed quanta as run; the rest (the job stopped before them) as skipped."""
    done = {item.quantum_id: item.report for item in progress.executed}
    if progress.job is None:
        return list(done.values())
    reason = f"not run: the job stopped in {progress.phase}" if error else None
    return [done.get(q) or progress.job.new_report(q, reason) for q in progress.job.ids]


def write_report(report: JobReport, path: Path) -> None:
    """Write ``report`` as JSON to ``path`` atomically (temp name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(report.model_dump_json(indent=1))
    os.replace(partial, path)


def read_spec(path: str | Path) -> JobSpec:
    """Read and validate a spec file; JobSpecError saying what is wrong where."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobSpecError(f"cannot read job spec: {exc}", where=str(path)) from None
    try:
        return JobSpec.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<spec>'}: {e['msg']}" for e in exc.errors()
        )
        raise JobSpecError(
            f"invalid job spec: {problems}",
            where=str(path),
            hint="specs are written by the skybatch scheduler; regenerate it",
        ) from None


def run_job_file(path: str) -> int:
    """Read the spec at ``path``, run it, write its report; return the exit code.

    This is the runner warm workers of the local engine call. A spec that cannot be
    read gets a minimal failure report when its ``report_path`` can still be found.
    """
    clock = PhaseClock()
    try:
        with clock.phase("spec"):
            spec = read_spec(path)
    except JobSpecError as exc:
        _log.error("%s", exc)
        _report_unreadable_spec(path, str(exc))
        return EXIT_SPEC
    return run_job(spec, spec_path=path, clock=clock).exit_code


def _report_unreadable_spec(path: str, error: str) -> None:
    try:
        raw: Any = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    if not isinstance(raw, dict) or not isinstance(raw.get("report_path"), str):
        return
    attempt = raw.get("attempt", 1)
    provenance = gather_provenance()
    meter = Meter()
    report = JobReport(
        run=str(raw.get("run", "?")),
        job=str(raw.get("job", "?")),
        attempt=attempt if isinstance(attempt, int) else 1,
        status="failed",
        exit_code=EXIT_SPEC,
        error=error,
        engine_job_id=provenance.engine_job_id,
        host=provenance.host,
        platform=provenance.platform,
        python=provenance.python,
        packages=provenance.packages,
        environment={},
        stats=meter.stop(),
        quanta=[],
        outputs=[],
    )
    try:
        write_report(report, Path(raw["report_path"]))
    except OSError:
        _log.error("cannot write the report of unreadable spec %s", path)
