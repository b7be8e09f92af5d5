"""The job wrapper end to end on a real quantum graph: two jobs (isr, then calibrate).

The isr job runs in-process (as a warm worker runs it) with symlinked inputs and a
stray file in its workdir; the calibrate job runs as ``python -m skybatch.job`` with
copied inputs, one of them the isr job's output on the site cache.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from jobworld import RUN, JobWorld

from skybatch.backbone.checksums import md5_file
from skybatch.job.main import run_job
from skybatch.job.spec import JobReport
from skybatch.job.stats import PHASES

pytestmark = pytest.mark.slow


@dataclass
class Ran:
    isr: JobReport
    calibrate: JobReport
    calibrate_proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def ran(world: JobWorld) -> Ran:
    isr_spec = world.spec("isr", [world.isr], inputs=world.inputs(world.isr), junk_tarball=True)
    stray = Path(isr_spec.workdir) / "plots" / "debug.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("a file nobody declared\n")
    isr = run_job(isr_spec)
    # As the scheduler does: the isr output is in the catalog now, so it is an input.
    inputs = world.inputs(world.calibrate)
    assert {f.dataset_type for f in inputs} == {"postISRCCD", "ref_cat"}
    cal_spec = world.spec("calibrate", [world.calibrate], inputs=inputs, stage_in="copy")
    spec_path = world.root / "jobs" / "calibrate.json"
    spec_path.write_text(cal_spec.model_dump_json())
    proc = subprocess.run(
        [sys.executable, "-m", "skybatch.job", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    calibrate = JobReport.model_validate_json(Path(cal_spec.report_path).read_text())
    return Ran(isr, calibrate, proc)


def test_isr_job_succeeds_with_staged_inputs_and_provenance(ran: Ran, world: JobWorld) -> None:
    report = ran.isr
    assert (report.status, report.exit_code, report.error) == ("succeeded", 0, None)
    assert (report.stage_in_mode, report.inputs_staged) == ("symlink", 3)
    assert report.host and report.platform and report.python.startswith("CPython 3.11")
    for package in ("lsst-daf-butler", "lsst-pipe-base", "lsst-ctrl-mpexec", "skybatch"):
        assert report.packages[package] not in ("", "not installed")
    assert set(report.environment) <= {"PATH", "HOSTNAME", "SLURM_JOB_ID", "OMP_NUM_THREADS"}
    assert "PATH" in report.environment
    assert report.engine_job_id == "local-isr"
    assert report.log_path and "Execution of task 'isr'" in Path(report.log_path).read_text()
    staged = Path(report.log_path).parent / "datastore" / world.inputs(world.isr)[0].path
    assert staged.is_symlink()


def test_runtime_statistics_per_quantum_and_job(ran: Ran) -> None:
    for report in (ran.isr, ran.calibrate):
        (quantum,) = report.quanta
        assert quantum.status == "succeeded" and quantum.stats is not None
        assert quantum.stats.cpu_s > 0 and quantum.stats.max_rss_mb > 0
        assert quantum.stats.wall_s > 0 and quantum.stats.end >= quantum.stats.start
        assert report.stats.wall_s >= quantum.stats.wall_s
        assert report.stats.max_rss_mb >= quantum.stats.max_rss_mb


def test_outputs_match_the_files_on_the_site(ran: Ran, world: JobWorld) -> None:
    types = {o.dataset_type for o in ran.isr.outputs}
    assert types == {"postISRCCD", "isr_metadata", "isr_log"}
    types = {o.dataset_type for o in ran.calibrate.outputs}
    assert types == {"calexp", "src", "calexpSummary", "calibrate_metadata", "calibrate_log"}
    for report in (ran.isr, ran.calibrate):
        for output in report.outputs:
            site_file = world.site_root / output.path
            assert site_file.is_file() and not site_file.is_symlink()
            assert md5_file(site_file) == (output.size_bytes, output.md5)
            assert output.run == RUN and output.path.startswith(RUN + "/")
            assert output.generated_by == report.quanta[0].quantum_id
            assert output.file_id is not None


def test_science_metadata_by_storage_class(ran: Ran) -> None:
    by_type = {o.dataset_type: o for o in ran.isr.outputs + ran.calibrate.outputs}
    assert by_type["postISRCCD"].metadata["BIASEPO"] == "epoch1"
    calexp = by_type["calexp"]
    assert calexp.storage_class == "SkyImage"
    assert {"MAGZERO", "PSFFWHM", "NSRC", "FILTER"} <= set(calexp.metadata)
    assert calexp.data_id == {"instrument": "DemoCam", "detector": 0, "visit": 1000}
    src = by_type["src"]
    assert src.storage_class == "ArrowAstropy"
    assert src.metadata["n_rows"] > 0 and src.metadata["columns"]
    some = next(iter(src.metadata["columns"].values()))
    assert some["min"] <= some["max"]
    assert by_type["calibrate_log"].metadata == {}


def test_generated_by_and_used(ran: Ran, world: JobWorld) -> None:
    isr_inputs = {f.dataset_id for f in world.inputs(world.isr)}
    for output in ran.isr.outputs:
        assert set(output.used) == isr_inputs
    post_isr = next(o for o in ran.isr.outputs if o.dataset_type == "postISRCCD")
    calexp = next(o for o in ran.calibrate.outputs if o.dataset_type == "calexp")
    assert post_isr.dataset_id in calexp.used
    assert {f.dataset_id for f in world.inputs(world.calibrate)} <= set(calexp.used)


def test_catalog_rows_and_provenance_edges(ran: Ran, world: JobWorld) -> None:
    catalog = world.backbone.catalog
    rows = catalog.files_by_ids([o.file_id for o in ran.isr.outputs if o.file_id])
    assert len(rows) == 3
    for output in ran.isr.outputs:
        assert output.file_id is not None
        row = rows[output.file_id]
        assert (row.path, row.md5, row.dataset_id) == (output.path, output.md5, output.dataset_id)
        assert (row.producer, row.run, row.dataset_type) == ("job:isr", RUN, output.dataset_type)
        replicas = {p.endpoint: p.replica.state for p in catalog.placements([row.id])}
        assert replicas == {"site:test": "online"}
        generated = [act for rel, act, _ in catalog.provenance(row.id) if rel == "wasGeneratedBy"]
        assert [(a.kind, a.name) for a in generated if a] == [("quantum", str(world.isr))]
        activity = generated[0]
        assert activity is not None
        assert activity.info["task_label"] == "isr" and activity.info["job"] == "isr"
        assert activity.info["stats"]["cpu_s"] > 0
    # The calibrate quantum used the isr output (registered by the isr job) and the refcat.
    post_isr = next(o for o in ran.isr.outputs if o.dataset_type == "postISRCCD")
    assert post_isr.file_id is not None
    used = [
        act.name for rel, act, _ in catalog.provenance(post_isr.file_id) if rel == "used" and act
    ]
    assert used == [str(world.calibrate)]
    raw = next(f for f in world.inputs(world.isr) if f.dataset_type == "raw")
    assert raw.file_id is not None
    assert [a.name for r, a, _ in catalog.provenance(raw.file_id) if r == "used" and a] == [
        str(world.isr)
    ]


def test_junk_tarball_holds_the_stray_file_only(ran: Ran) -> None:
    assert ran.isr.junk_files == ["plots/debug.txt"]
    assert ran.isr.junk_tarball is not None
    with tarfile.open(ran.isr.junk_tarball) as tar:
        assert tar.getnames() == ["plots/debug.txt"]
        member = tar.extractfile("plots/debug.txt")
        assert member is not None and member.read() == b"a file nobody declared\n"


def test_subprocess_entry_point_copies_inputs_and_exits_0(ran: Ran) -> None:
    assert ran.calibrate_proc.returncode == 0, ran.calibrate_proc.stderr[-3000:]
    report = ran.calibrate
    assert (report.status, report.stage_in_mode, report.inputs_staged) == ("succeeded", "copy", 2)
    assert report.junk_tarball is None and report.junk_files == []
    assert report.log_path is not None
    staged = Path(report.log_path).parent / "datastore"
    assert not any(p.is_symlink() for p in staged.rglob("*"))


def test_reports_say_where_the_job_time_went(ran: Ran) -> None:
    for report in (ran.isr, ran.calibrate):
        phases = report.phases_s
        assert list(phases) == [p for p in PHASES if p in phases]  # in the order they ran
        expected = set(PHASES) - {"junk", "spec"}  # no junk tarball asked for calibrate
        assert expected <= set(phases), expected - set(phases)
        assert all(seconds >= 0 for seconds in phases.values())
        assert phases["execute"] > 0 and phases["butler_setup"] > 0
        # The phases cover the job: together at most its wall time (spec reading aside).
        inside = sum(s for p, s in phases.items() if p != "spec")
        assert inside <= report.stats.wall_s + 0.01
    assert "junk" in ran.isr.phases_s
    assert "spec" in ran.calibrate.phases_s  # read by the entry point, timed there


def test_a_report_written_before_phases_were_recorded_still_parses(ran: Ran) -> None:
    old = ran.isr.model_dump(mode="json")
    del old["phases_s"]
    assert JobReport.model_validate(old).phases_s == {}
