"""The per-process caches of warm workers: the same reports, catalog rows and provenance
as without them, the graph file kept open (and reopened when it changes), bad quantum
ids still spec errors, and the warm worker turning the caches on."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobworld import JobWorld
from sqlalchemy import select

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import Activity
from skybatch.engines.local.worker import WARM_HOOK, _warm_up
from skybatch.job import cache, execute, stageout
from skybatch.job.main import EXIT_SPEC, enable_process_cache, run_job
from skybatch.job.spec import JobReport, JobSpec

pytestmark = pytest.mark.slow

#: Report fields that differ from run to run (timings, and files whose content has a
#: timestamp: task metadata and logs).
_VOLATILE = {"stats", "md5", "size_bytes", "log_path", "traceback"}


@pytest.fixture
def cached() -> Iterator[None]:
    enable_process_cache()
    try:
        yield
    finally:
        enable_process_cache(False)


def _comparable(report: JobReport, root: Path) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(root), "<root>")
        return value

    view = strip(report.model_dump(mode="json"))
    view["phases_s"] = list(report.phases_s)  # the same phases, each taking its own time
    return view


def _archive_spec(world: JobWorld, job: str, quantum_id: uuid.UUID) -> tuple[JobSpec, Path]:
    """A spec that stages out to a private directory and registers nothing."""
    target = world.root / "targets" / job
    target.mkdir(parents=True)
    spec = world.spec(
        job,
        [quantum_id],
        inputs=world.inputs(quantum_id),
        stage_out="archive",
        archive_root=str(target),
        db_url=None,
    )
    return spec, world.root / "jobs" / job


def test_cached_job_reports_what_an_uncached_one_does(world: JobWorld, cached: None) -> None:
    enable_process_cache(False)
    plain_spec, plain_root = _archive_spec(world, "isr-plain", world.isr)
    plain = run_job(plain_spec)
    enable_process_cache()
    warm_spec, warm_root = _archive_spec(world, "isr-warm", world.isr)
    warm = run_job(warm_spec)
    assert (plain.status, warm.status) == ("succeeded", "succeeded")
    plain_view, warm_view = _comparable(plain, plain_root), _comparable(warm, warm_root)
    for view in (plain_view, warm_view):
        del view["job"], view["engine_job_id"]
    assert warm_view == plain_view
    assert len(warm.outputs) == 3
    for output in warm.outputs:
        assert md5_file(Path(warm_spec.archive_root) / output.path) == (
            output.size_bytes,
            output.md5,
        )
    # The job still leaves its own butler.yaml, the same as without the cache.
    plain_yaml = (Path(plain_spec.workdir) / "butler.yaml").read_text()
    warm_yaml = (Path(warm_spec.workdir) / "butler.yaml").read_text()
    assert warm_yaml.replace(warm_spec.workdir, "W") == plain_yaml.replace(plain_spec.workdir, "W")


def test_warm_jobs_register_outputs_and_provenance(world: JobWorld, cached: None) -> None:
    isr = run_job(world.spec("isr", [world.isr], inputs=world.inputs(world.isr)))
    graph = execute._graph
    assert isr.status == "succeeded" and graph is not None
    inputs = world.inputs(world.calibrate)  # the isr output is in the catalog now
    calibrate = run_job(world.spec("calibrate", [world.calibrate], inputs=inputs))
    assert calibrate.status == "succeeded", calibrate.error
    assert execute._graph is graph  # one open graph file for both jobs
    assert world.db_url in stageout._engines
    catalog = world.backbone.catalog
    for report in (isr, calibrate):
        assert report.outputs and all(o.file_id is not None for o in report.outputs)
        rows = catalog.files_by_ids([o.file_id for o in report.outputs if o.file_id])
        assert {r.producer for r in rows.values()} == {f"job:{report.job}"}
        with catalog.sessions() as session:
            activity = session.scalars(
                select(Activity).where(Activity.name == report.quanta[0].quantum_id)
            ).one()
        assert activity.finished_at is not None and activity.info["job"] == report.job
    post_isr = next(o for o in isr.outputs if o.dataset_type == "postISRCCD")
    assert post_isr.file_id is not None
    used = [a.name for r, a, _ in catalog.provenance(post_isr.file_id) if r == "used" and a]
    assert used == [str(world.calibrate)]
    calexp = next(o for o in calibrate.outputs if o.dataset_type == "calexp")
    assert calexp.file_id is not None
    made = [a.name for r, a, _ in catalog.provenance(calexp.file_id) if r == "wasGeneratedBy" and a]
    assert made == [str(world.calibrate)]


def test_warm_job_of_two_quanta_keeps_provenance_per_quantum(world: JobWorld, cached: None) -> None:
    refcat = [f for f in world.inputs(world.calibrate) if f.dataset_type == "ref_cat"]
    target = world.root / "targets" / "both"
    target.mkdir(parents=True)
    spec = world.spec(
        "both",
        [world.isr, world.calibrate],
        inputs=world.inputs(world.isr) + refcat,
        stage_out="archive",
        archive_root=str(target),
        db_url=None,
    )
    report = run_job(spec)
    assert report.status == "succeeded", report.error
    isr, calibrate = report.quanta
    by_quantum: dict[str, set[str]] = {}
    for output in report.outputs:
        by_quantum.setdefault(output.generated_by, set()).add(output.dataset_type)
    assert by_quantum == {
        isr.quantum_id: {"postISRCCD", "isr_metadata", "isr_log"},
        calibrate.quantum_id: {
            "calexp",
            "src",
            "calexpSummary",
            "calibrate_metadata",
            "calibrate_log",
        },
    }
    post_isr = next(o for o in report.outputs if o.dataset_type == "postISRCCD")
    isr_inputs = {f.dataset_id for f in world.inputs(world.isr)}
    for output in report.outputs:
        if output.generated_by == isr.quantum_id:
            assert set(output.used) == isr_inputs
        else:
            assert post_isr.dataset_id in output.used and not isr_inputs & set(output.used)


def test_graph_is_reopened_when_its_file_changes(world: JobWorld, cached: None) -> None:
    first, _ = _archive_spec(world, "reopen-1", world.isr)
    assert run_job(first).status == "succeeded"
    graph = execute._graph
    assert graph is not None
    stat = world.qgraph.stat()
    os.utime(world.qgraph, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second, _ = _archive_spec(world, "reopen-2", world.isr)
    assert run_job(second).status == "succeeded"
    assert execute._graph is not None and execute._graph is not graph


def test_bad_quantum_id_is_a_spec_error_and_the_graph_stays_usable(
    world: JobWorld, cached: None, tmp_path: Path
) -> None:
    spec, _ = _archive_spec(world, "unknown-warm", world.isr)
    spec.quantum_ids = ["00000000-0000-0000-0000-000000000001"]
    report = run_job(spec)
    assert report.exit_code == EXIT_SPEC
    assert report.error is not None and "quantum" in report.error
    good, _ = _archive_spec(world, "after-unknown", world.isr)
    assert run_job(good).status == "succeeded"


def test_caches_are_off_unless_enabled_and_cleared_when_disabled(world: JobWorld) -> None:
    assert not cache.process_cache_enabled()
    spec, _ = _archive_spec(world, "cold", world.isr)
    assert run_job(spec).status == "succeeded"
    assert execute._graph is None and not execute._repos and not stageout._engines
    enable_process_cache()
    spec, _ = _archive_spec(world, "warm-then-off", world.isr)
    assert run_job(spec).status == "succeeded"
    assert execute._graph is not None and execute._repos
    enable_process_cache(False)
    assert execute._graph is None and not execute._repos and not execute._central_configs


def test_warm_worker_calls_the_runner_modules_hook() -> None:
    errors: dict[str, str] = {}
    try:
        _warm_up("skybatch.job.main:run_job_file", errors)
        assert errors == {} and cache.process_cache_enabled()
    finally:
        enable_process_cache(False)
    _warm_up("skybatch.engines.testing:behave", errors)  # no hook: nothing happens
    assert errors == {} and not cache.process_cache_enabled()
    assert WARM_HOOK == "enable_process_cache"
