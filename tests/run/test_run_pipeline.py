"""`skybatch run` end to end on the demo survey: outputs, catalog, retries, resume, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from runworld import SKYBATCH, Outputs, run_command, run_outputs
from sqlalchemy import select

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.models import FileRow
from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.graph.workflow import ResourceRequest
from skybatch.read.models import jsonable
from skybatch.read.runs import run_report
from skybatch.run.driver import RunOptions, submit_run
from skybatch.run.models import JobAttemptRow, JobRow, RunRow
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


def _options(survey: Survey, **kw) -> RunOptions:  # type: ignore[no-untyped-def]
    return RunOptions(
        repo=survey.repo, pipeline=str(pipeline_path()), inputs=[DEFAULTS], workers=2, **kw
    )


def _outputs(survey: Survey, run: str) -> Outputs:
    return run_outputs(survey.repo, run)


def test_run_ingests_outputs_registers_files_and_reports_success(
    survey: Survey, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    summary = submit_run(settings, _options(survey, output_run="t/run"))
    assert summary.state == "succeeded"
    outputs = _outputs(survey, "t/run")
    types = {t for t, _ in outputs}
    assert {"postISRCCD", "calexp", "src", "visitSummary", "deepCoadd", "deepCoadd_src"} <= types
    assert {"isr_config", "calibrate_metadata", "coadd_log", "packages"} <= types

    from skybatch.backbone.service import Backbone

    backbone = Backbone.from_settings(settings)
    with Butler.from_config(str(survey.repo)) as butler:
        refs = butler.query_all_datasets("t/run", find_first=False, limit=None)
        files = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
        assert len(files) == len(refs), "every output file is in the backbone catalog"
        for ref in refs:
            f = files[str(ref.id)]
            assert f.producer and f.md5 and f.run == "t/run"
            local = Path(butler.getURI(ref).ospath)
            assert md5_file(local) == (f.size_bytes, f.md5)
    # Inputs are registered with the RUN collection the Butler holds them in.
    raws = backbone.catalog.files(dataset_type="raw")
    assert raws and {f.run for f in raws} == {"DemoCam/raw/all"}
    # They were staged to the site cache pinned, and are unpinned once the run is done.
    staged = backbone.catalog.placements([f.id for f in raws], "site:local")
    assert len(staged) == len(raws)
    assert all(p.replica.pinned_until is None for p in staged)
    with backbone.catalog.sessions() as session:
        report = run_report(session, "t/run")
    assert report.state == "succeeded" and report.failures == []
    for counts in report.tasks.values():
        assert counts.succeeded == counts.expected > 0
    # The submission provenance is archived and linked to the run.
    provenance = backbone.catalog.files(path_prefix="skybatch/provenance/t/run/")
    assert {Path(f.path).name for f in provenance} == {
        "config.json",
        "pipeline-expanded.yaml",
        "packages.json",
    }


def test_an_out_of_memory_job_is_retried_with_more_memory(survey: Survey, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    options = _options(
        survey,
        output_run="t/oom",
        query="visit = 1000 AND detector = 0",
        resources={"calibrate": ResourceRequest(memory_mb=60)},
        memory_factor=20.0,
        memory_cap_mb=4096,
    )
    summary = submit_run(settings, options)
    assert summary.state == "succeeded"
    from skybatch.backbone.service import Backbone

    sessions = Backbone.from_settings(settings).catalog.sessions
    with sessions() as session:
        job = session.scalars(select(JobRow).where(JobRow.label == "calibrate")).one()
        attempts = session.scalars(
            select(JobAttemptRow)
            .where(JobAttemptRow.job_id == job.id)
            .order_by(JobAttemptRow.attempt)
        ).all()
    assert [a.failure for a in attempts] == ["out_of_memory", "none"]
    assert [a.memory_mb for a in attempts] == [60, 1200]
    assert job.memory_mb == 1200


def test_kill_9_then_resume_gives_the_outputs_of_an_uninterrupted_run(
    survey: Survey, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    reference = submit_run(
        load_settings(home=tmp_path / "ref-home"), _options(survey, output_run="t/ref")
    )
    assert reference.state == "succeeded"
    expected = {(t, d) for t, d in _outputs(survey, "t/ref")}

    cmd = run_command(home, survey, "t/killed", "--workers", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sessions = None
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        db = home / "state.sqlite3"
        if not db.exists():
            continue
        from skybatch.db.state import open_state_db

        sessions = sessions or open_state_db(load_settings(home=home))
        with sessions() as session:
            done = len(session.scalars(select(JobRow).where(JobRow.state == "succeeded")).all())
        if done >= 4:
            break
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 4 <= done < 18

    resumed = subprocess.run(
        [SKYBATCH, "--home", str(home), "run", "--resume", "t/killed"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = _outputs(survey, "t/killed")
    assert got == expected
    assert sessions is not None
    with sessions() as session:
        run = session.scalars(select(RunRow).where(RunRow.name == "t/killed")).one()
        assert run.state == "succeeded"
        paths = session.scalars(select(FileRow.path).where(FileRow.run == "t/killed")).all()
    assert len(paths) == len(set(paths))  # no duplicate outputs
    with Butler.from_config(str(survey.repo)) as butler:
        n_refs = len(butler.query_all_datasets("t/killed", find_first=False, limit=None))
    assert n_refs == len(expected)


def test_intermediates_are_gone_after_cleanup_and_final_outputs_are_not(
    survey: Survey, tmp_path: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    options = _options(survey, output_run="t/clean", intermediates=["postISRCCD"])
    assert submit_run(settings, options).state == "succeeded"
    types = {t for t, _ in _outputs(survey, "t/clean")}
    assert "postISRCCD" not in types and {"calexp", "deepCoadd"} <= types
    from skybatch.backbone.service import Backbone

    catalog = Backbone.from_settings(settings).catalog
    assert catalog.files(run="t/clean", dataset_type="postISRCCD") == []
    assert catalog.files(run="t/clean", dataset_type="calexp")
    leftovers = list((survey.repo / "t/clean").rglob("postISRCCD*"))
    leftovers += list((tmp_path / "home" / "site-cache" / "t/clean").rglob("postISRCCD*"))
    assert [p for p in leftovers if p.is_file()] == []


def test_a_failing_task_is_retried_then_held_with_its_error_and_blocks_downstream(
    survey: Survey, tmp_path: Path
) -> None:
    """A damaged raw makes isr fail: the job is retried up to the limit, held
    with the task's error; everything downstream is blocked (the run ends, it does not
    hang) and the outputs of the jobs that succeeded are ingested."""
    settings = load_settings(home=tmp_path / "home")
    with Butler.from_config(str(survey.repo)) as butler:
        (ref,) = butler.query_datasets(
            "raw",
            collections="DemoCam/raw/all",
            where="instrument = 'DemoCam' AND exposure = 1000 AND detector = 0",
        )
        raw = Path(butler.getURI(ref).ospath)
    raw.write_bytes(b"this is not a FITS file\n" * 200)
    options = _options(survey, output_run="t/bad", query="visit = 1000", max_attempts=2)
    summary = submit_run(settings, options)
    assert summary.state == "failed"
    assert summary.jobs == {"held": 1, "pending": 4, "succeeded": 4}

    from skybatch.backbone.service import Backbone

    sessions = Backbone.from_settings(settings).catalog.sessions
    with sessions() as session:
        report = jsonable(run_report(session, "t/bad"))  # as `skybatch report --json` prints
    (failure,) = report["failures"]
    assert failure["job"] == "isr-exp1000-det0" and failure["state"] == "held"
    assert failure["attempts"] == 2 and failure["exit_code"] == 1
    # The job's butler reads inputs through the graph's datastore records, which hold
    # the size the file had at ingest: the damage is caught before the task reads it.
    assert "FileIntegrityError" in failure["error"]
    assert "does not match size recorded" in failure["error"]
    assert report["tasks"]["isr"] == {
        "expected": 2,
        "succeeded": 1,
        "failed": 1,
        "running": 0,
        "blocked": 0,
    }
    assert report["tasks"]["calibrate"]["blocked"] == 1
    assert report["tasks"]["visitSummary"]["blocked"] == 1
    assert report["tasks"]["coadd"] == {
        "expected": 4,
        "succeeded": 2,
        "failed": 0,
        "running": 0,
        "blocked": 2,
    }
    # What succeeded is already in the Butler.
    types = {t for t, _ in _outputs(survey, "t/bad")}
    assert {"postISRCCD", "calexp"} <= types and "visitSummary" not in types
