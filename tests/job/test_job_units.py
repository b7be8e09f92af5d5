"""The job wrapper's phases on their own: metadata plugins, statistics, junk, logs,
provenance, the job-local butler config and stage-in checks."""

from __future__ import annotations

import logging
import tarfile
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from astropy.io import fits
from lsst.daf.butler import ButlerConfig
from lsst.daf.butler.repo_relocation import replaceRoot

from skybatch.errors import ConfigError
from skybatch.job.errors import JobSpecError, StageInError
from skybatch.job.execute import write_job_butler_config
from skybatch.job.joblog import capture_job_log
from skybatch.job.junk import find_junk, write_junk_tarball
from skybatch.job.metadata import ENTRY_POINT_GROUP, ExtractorRegistry, MetadataExtractor
from skybatch.job.provenance import gather_provenance
from skybatch.job.spec import FileSpec, JobSpec
from skybatch.job.stagein import stage_in
from skybatch.job.stats import PHASES, Meter, PhaseClock


def _spec(tmp_path: Path, **fields: Any) -> JobSpec:
    values: dict[str, Any] = {
        "run": "r",
        "job": "j",
        "qgraph": str(tmp_path / "g.qg"),
        "quantum_ids": [],
        "butler_config": str(tmp_path / "butler.yaml"),
        "workdir": str(tmp_path / "work"),
        "report_path": str(tmp_path / "report.json"),
    }
    values.update(fields)
    return JobSpec(**values)


# -- metadata -------------------------------------------------------------------------


def test_parquet_extractor_reads_row_count_and_ranges_from_the_footer(tmp_path: Path) -> None:
    table = pa.table(
        {
            "flux": np.array([3.0, -1.5, 8.25, 2.0]),
            "id": np.array([10, 4, 7, 12], dtype=np.int64),
            "name": ["a", "b", "c", "d"],
        }
    )
    path = tmp_path / "t.parq"
    pq.write_table(table, path, row_group_size=2)  # ranges must merge across row groups
    meta = ExtractorRegistry.default().extract("ArrowAstropy", path)
    assert meta == {
        "n_rows": 4,
        "columns": {"flux": {"min": -1.5, "max": 8.25}, "id": {"min": 4, "max": 12}},
    }


def test_fits_extractor_takes_selected_primary_header_keys(tmp_path: Path) -> None:
    header = fits.Header({"MAGZERO": 27.5, "NSRC": 12, "FILTER": "DemoCam-g", "OBSERVER": "x"})
    path = tmp_path / "i.fits"
    fits.HDUList([fits.PrimaryHDU(header=header)]).writeto(path)
    meta = ExtractorRegistry.default().extract("SkyImage", path)
    assert meta == {"MAGZERO": 27.5, "NSRC": 12, "FILTER": "DemoCam-g"}


def test_unknown_storage_class_and_unreadable_file_give_empty_metadata(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ExtractorRegistry.default()
    assert registry.extract("TaskMetadata", tmp_path / "whatever.json") == {}
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"not a fits file")
    with caplog.at_level(logging.WARNING):
        assert registry.extract("SkyImage", broken) == {}
    assert "could not describe" in caplog.text


def test_extractor_plugins_are_checked_and_later_ones_win(tmp_path: Path) -> None:
    bad = EntryPoint(name="bad", value="skybatch.job.spec:JobSpec", group=ENTRY_POINT_GROUP)
    with pytest.raises(ConfigError, match="not a MetadataExtractor"):
        ExtractorRegistry.load([bad])
    with pytest.raises(ConfigError, match="not a MetadataExtractor"):
        ExtractorRegistry([object()])  # type: ignore[list-item]

    class Sizes(MetadataExtractor):
        storage_classes = frozenset({"SkyImage", "Thing"})

        def extract(self, path: Path) -> dict[str, Any]:
            return {"bytes": path.stat().st_size}

    registry = ExtractorRegistry.default()
    registry.register(Sizes())
    (tmp_path / "f").write_bytes(b"123")
    assert registry.extract("SkyImage", tmp_path / "f") == {"bytes": 3}
    assert {"SkyImage", "Thing", "ArrowAstropy"} <= set(registry.storage_classes())


# -- statistics, logs, junk, provenance ----------------------------------------------------


def test_meter_measures_cpu_and_passes_peaks_to_its_parent() -> None:
    with Meter() as job:
        with Meter(parent=job) as quantum:
            block = np.ones(40 * 1024 * 1024 // 8)  # 40 MB, touched
            total = sum(i * i for i in range(200_000))
            del block
        assert total > 0
    assert quantum.stats is not None and job.stats is not None
    assert quantum.stats.cpu_s > 0 and quantum.stats.wall_s > 0
    assert quantum.stats.max_rss_mb > 40
    assert job.stats.max_rss_mb >= quantum.stats.max_rss_mb
    assert job.stats.cpu_s >= quantum.stats.cpu_s


def test_phase_clock_sums_repeated_phases_and_keeps_the_order_they_run_in() -> None:
    clock = PhaseClock()
    for _ in range(2):
        with clock.phase("execute"):
            sum(range(10_000))
    clock.add("graph", 0.25)
    clock.add("a plugin's phase", 0.5)
    with pytest.raises(ValueError), clock.phase("stage_out"):
        raise ValueError("timed all the same")
    phases = clock.rounded()
    assert list(phases) == ["graph", "execute", "stage_out", "a plugin's phase"]
    assert phases["graph"] == 0.25 and phases["execute"] > 0 and phases["stage_out"] >= 0
    assert PHASES.index("butler_setup") < PHASES.index("execute") < PHASES.index("catalog")


def test_job_log_captures_info_and_restores_the_root_logger(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    with capture_job_log(tmp_path / "job.log"):
        logging.getLogger("lsst.some.task").info("hello from a task")
    assert (root.level, list(root.handlers)) == before
    assert "INFO lsst.some.task: hello from a task" in (tmp_path / "job.log").read_text()


def test_junk_is_everything_unknown_including_symlinks(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "datastore" / "run").mkdir(parents=True)
    (work / "datastore" / "run" / "out.fits").write_text("output")
    (work / "datastore" / "in.fits").symlink_to(tmp_path)
    (work / "core.123").write_text("crash")
    (work / "job.log").write_text("log")
    (work / "butler.yaml").write_text("config")
    known = [work / "datastore" / "run" / "out.fits"]
    junk = find_junk(work, known)
    assert junk == ["core.123", "datastore/in.fits"]
    tarball = write_junk_tarball(work, junk)
    assert tarball is not None
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == junk
        assert tar.getmember("datastore/in.fits").issym()
    assert write_junk_tarball(work, []) is None


def test_provenance_records_only_allowed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    prov = gather_provenance(["SLURM_JOB_ID", "NOT_SET_ANYWHERE"])
    assert prov.environment == {"SLURM_JOB_ID": "4242"}
    assert prov.engine_job_id == "4242"
    assert gather_provenance([], "local-7").engine_job_id == "local-7"
    assert set(prov.packages) >= {"lsst-daf-butler", "lsst-pipe-base", "numpy", "astropy"}


# -- job-local butler config and stage-in checks ------------------------------------------------


def test_job_butler_config_moves_only_the_datastore_root(tmp_path: Path) -> None:
    central = {
        "datastore": {
            "cls": "lsst.daf.butler.datastores.fileDatastore.FileDatastore",
            "root": "<butlerRoot>",
            "formatters": {"SkyImage": "skybatch.demo.formatters.SkyImageFormatter"},
        },
        "registry": {"db": "sqlite:///<butlerRoot>/gen3.sqlite3"},
    }
    (tmp_path / "butler.yaml").write_text(yaml.safe_dump(central))
    (tmp_path / "work").mkdir()
    spec = _spec(tmp_path)
    path = write_job_butler_config(spec, tmp_path / "work", tmp_path / "work" / "datastore")
    written = yaml.safe_load(path.read_text())
    assert written["datastore"]["root"] == "<butlerRoot>/datastore"  # next to the file
    assert written["datastore"]["formatters"] == central["datastore"]["formatters"]
    assert written["datastore"]["name"] == "FileDatastore@<butlerRoot>"  # the central name
    # As the datastore resolves it: next to the job's butler.yaml.
    resolved = replaceRoot(ButlerConfig(str(path))["datastore", "root"], path.parent)
    assert resolved == str(tmp_path / "work" / "datastore")
    elsewhere = write_job_butler_config(spec, tmp_path / "work", tmp_path / "scratch")
    root = yaml.safe_load(elsewhere.read_text())["datastore"]["root"]
    assert root == str((tmp_path / "scratch").resolve())

    central["datastore"]["cls"] = "lsst.daf.butler.datastores.chainedDatastore.ChainedDatastore"
    (tmp_path / "butler.yaml").write_text(yaml.safe_dump(central))
    with pytest.raises(JobSpecError, match="FileDatastore"):
        write_job_butler_config(spec, tmp_path / "work", tmp_path / "work" / "datastore")
    with pytest.raises(JobSpecError, match="does not exist"):
        write_job_butler_config(
            _spec(tmp_path, butler_config=str(tmp_path / "nope")), tmp_path, tmp_path
        )


def test_stage_in_refuses_escaping_paths_and_wrong_sizes(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "f.fits").write_bytes(b"12345")
    escaping = FileSpec(dataset_id="1", dataset_type="raw", path="../etc/passwd")
    spec = _spec(tmp_path, site_root=str(site), inputs=[escaping])
    with pytest.raises(JobSpecError, match="invalid logical path"):
        stage_in(spec, tmp_path / "ds")
    wrong = FileSpec(dataset_id="1", dataset_type="raw", path="a/f.fits", size_bytes=6)
    with pytest.raises(StageInError, match="has 5 bytes, the spec says 6"):
        stage_in(_spec(tmp_path, site_root=str(site), inputs=[wrong]), tmp_path / "ds")
    right = wrong.model_copy(update={"size_bytes": 5})
    result = stage_in(_spec(tmp_path, site_root=str(site), inputs=[right, right]), tmp_path / "ds")
    assert (result.mode, result.paths, result.bytes) == ("symlink", ["a/f.fits"], 5)
    assert (tmp_path / "ds" / "a" / "f.fits").resolve() == (site / "a" / "f.fits").resolve()
    with pytest.raises(JobSpecError, match="site_root"):
        stage_in(_spec(tmp_path, inputs=[right]), tmp_path / "ds")
