"""Failures of a job: missing or corrupt inputs, a task that raises, bad specs; and
stage-in from the archive on a site without a shared filesystem."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from jobworld import JobWorld
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import Activity
from skybatch.job.main import EXIT_FAILED, EXIT_SPEC, run_job, run_job_file
from skybatch.job.spec import FileSpec, JobReport

pytestmark = pytest.mark.slow


def _registered_by(world: JobWorld, job: str) -> list[str]:
    return [f.path for f in world.backbone.catalog.files() if f.producer == f"job:{job}"]


def _bad_site(world: JobWorld, name: str, inputs: list[FileSpec]) -> Path:
    """A private copy of the site cache holding ``inputs``, with the raw overwritten."""
    root = world.root / name
    for item in inputs:
        target = root / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(world.site_root / item.path, target)
        if item.dataset_type == "raw":
            target.write_bytes(os.urandom(target.stat().st_size))  # same size, wrong bytes
    return root


def test_missing_input_fails_in_stage_in_naming_the_file(world: JobWorld) -> None:
    inputs = world.inputs(world.isr)
    gone = "DemoCam/raw/all/raw/20260228/not_there.fits"
    inputs = [f.model_copy(update={"path": gone}) if f.dataset_type == "raw" else f for f in inputs]
    report = run_job(world.spec("missing", [world.isr], inputs=inputs))
    assert (report.status, report.exit_code) == ("failed", EXIT_FAILED)
    assert report.error is not None and report.error.startswith("stage-in: StageInError")
    assert gone in report.error and "\n" not in report.error
    (quantum,) = report.quanta
    assert quantum.status == "skipped" and "stage-in" in (quantum.error or "")
    assert report.outputs == [] and _registered_by(world, "missing") == []
    on_disk = JobReport.model_validate_json(Path(world.spec("missing", []).report_path).read_text())
    assert on_disk == report


@pytest.mark.parametrize("stage_in", ["copy", "symlink"])
def test_a_corrupt_site_input_is_replaced_by_the_archive_copy(
    world: JobWorld, stage_in: str
) -> None:
    inputs = world.inputs(world.isr)
    site = _bad_site(world, f"corrupt-site-{stage_in}", inputs)
    # Without a database (copy) the spec's size and md5 are the reference; with one
    # (symlink) the catalog's, and the outputs are registered (once per module's run).
    spec = world.spec(
        f"corrupt-{stage_in}",
        [world.isr],
        inputs=inputs,
        site_root=str(site),
        stage_in=stage_in,
        **({"db_url": None} if stage_in == "copy" else {}),
    )
    report = run_job(spec)
    assert report.status == "succeeded", report.error
    raw = next(f for f in inputs if f.dataset_type == "raw")
    assert report.inputs_replaced == [raw.path]
    staged = Path(spec.workdir) / "datastore" / raw.path
    assert not staged.is_symlink()  # a verified copy of the archive's file
    assert md5_file(staged) == md5_file(world.repo / raw.path)
    assert list(Path(spec.workdir).rglob("*.skybatch-part")) == []


def test_a_corrupt_input_with_no_good_copy_fails_the_stage_in(world: JobWorld) -> None:
    inputs = world.inputs(world.isr)
    site = _bad_site(world, "corrupt-everywhere", inputs)
    spec = world.spec(
        "corrupt",
        [world.isr],
        inputs=inputs,
        site_root=str(site),
        stage_in="copy",
        archive_root=str(site),  # the "archive" holds the same bad bytes
    )
    report = run_job(spec)
    assert (report.status, report.exit_code) == ("failed", EXIT_FAILED)
    assert report.error is not None and "the archive's copy is corrupt too" in report.error
    assert report.outputs == [] and _registered_by(world, "corrupt") == []
    partial = list(Path(spec.workdir).rglob("*.skybatch-part"))
    assert partial == []


def test_failing_quantum_is_recorded_and_its_dependents_skipped(world: JobWorld) -> None:
    # Symlinks with no size/md5 in the spec, to a raw the catalog does not know (the raw
    # rows are gone from a copy of the database): the corrupt raw reaches the task.
    database = world.root / "raising.sqlite3"
    with (
        sqlite3.connect(world.db_url.removeprefix("sqlite:///")) as source,
        sqlite3.connect(database) as connection,
    ):
        source.backup(connection)
        connection.execute("DELETE FROM bb_file WHERE dataset_type = 'raw'")
    inputs = [
        f.model_copy(update={"size_bytes": None, "md5": None})
        for f in world.inputs(world.isr)
        + [f for f in world.inputs(world.calibrate) if f.dataset_type == "ref_cat"]
    ]
    site = _bad_site(world, "raising-site", inputs)
    spec = world.spec(
        "raises",
        [world.isr, world.calibrate],
        inputs=inputs,
        site_root=str(site),
        junk_tarball=True,
        db_url=f"sqlite:///{database}",
    )
    report = run_job(spec)
    assert (report.status, report.exit_code) == ("failed", EXIT_FAILED)
    isr, calibrate = report.quanta
    assert isr.status == "failed" and isr.error and "\n" not in isr.error
    assert isr.traceback and "Traceback" in isr.traceback
    assert isr.stats is not None and isr.stats.cpu_s > 0
    assert calibrate.status == "skipped" and calibrate.stats is None
    assert report.error == f"isr {isr.data_id}: {isr.error}"
    assert report.outputs == [] and _registered_by(world, "raises") == []
    # The failed quantum's own log dataset is not an output, but it is kept as junk.
    assert any(name.endswith(".json") and "isr_log" in name for name in report.junk_files)
    with Session(create_engine(f"sqlite:///{database}")) as session:
        activity = session.scalars(  # the newest: an earlier test ran the same quantum
            select(Activity).where(Activity.name == isr.quantum_id).order_by(Activity.id.desc())
        ).first()
    assert activity is not None
    assert activity.info["status"] == "failed" and activity.info["error"] == isr.error


def test_stage_in_from_the_archive_without_a_site(world: JobWorld) -> None:
    archive = world.root / "archive-copy"
    shutil.copytree(world.repo, archive, ignore=shutil.ignore_patterns("*.sqlite3"))
    spec = world.spec(
        "archive",
        [world.isr],
        inputs=world.inputs(world.isr),
        site_endpoint=None,
        site_root=None,
        stage_in="archive",
        stage_out="archive",
        archive_root=str(archive),
        db_url=None,
    )
    report = run_job(spec)
    assert (report.status, report.stage_in_mode, report.inputs_staged) == (
        "succeeded",
        "archive",
        3,
    )
    staged = Path(spec.workdir) / "datastore"
    assert all(not p.is_symlink() for p in staged.rglob("*"))
    assert len(report.outputs) == 3
    for output in report.outputs:
        assert md5_file(archive / output.path) == (output.size_bytes, output.md5)
        assert output.file_id is None  # no database: copied, not registered


def test_spec_errors_exit_2_with_a_report(world: JobWorld, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"job": "j", "run": "r", "report_path": str(report_path)}))
    assert run_job_file(str(broken)) == EXIT_SPEC
    report = JobReport.model_validate_json(report_path.read_text())
    assert (report.status, report.exit_code, report.job) == ("failed", EXIT_SPEC, "j")
    assert report.error is not None and "qgraph" in report.error

    unknown = "00000000-0000-0000-0000-000000000001"
    spec = world.spec("unknown", [world.isr], report_path=str(report_path))
    spec.quantum_ids = [unknown]
    assert run_job(spec).exit_code == EXIT_SPEC
    report = JobReport.model_validate_json(report_path.read_text())
    assert report.error is not None and "quantum" in report.error

    spec = world.spec("nosite", [world.isr], site_root=None, report_path=str(report_path))
    assert run_job(spec).exit_code == EXIT_SPEC
    report = JobReport.model_validate_json(report_path.read_text())
    assert report.error is not None and "site_root" in report.error


def test_entry_point_usage_error_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "skybatch.job"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == EXIT_SPEC and "usage" in proc.stderr
