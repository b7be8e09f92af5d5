"""`skybatch run` of pipelines not made for skybatch: object catalogs never fail a run.

The demo's own dataset type names are used by other pipelines for other things: here
pipe_base's mock tasks write ``src`` and ``deepCoadd_src`` as mock datasets (not
tables), and the demo pipeline is configured to write its source table under another
name, chosen with ``--catalog``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from runworld import SKYBATCH, run_command
from sqlalchemy import create_engine, inspect, text

from skybatch.demo.driver import pipeline_path
from skybatch.demo.survey import Survey

pytestmark = pytest.mark.slow

MOCKED = """\
description: the demo pipeline's shape, with pipe_base mock tasks writing src and
  deepCoadd_src as mock datasets (their storage classes are not tables)
tasks:
  isr: skybatch.demo.tasks.isr.IsrTask
  calibrate:
    class: lsst.pipe.base.tests.mocks.DynamicTestPipelineTask
    config:
      python: |
        from lsst.pipe.base.tests.mocks import DynamicConnectionConfig
        config.dimensions = ["instrument", "visit", "detector"]
        config.inputs["exposure"] = DynamicConnectionConfig(
            dataset_type_name="postISRCCD", storage_class="SkyImage",
            mock_storage_class=False, dimensions=["instrument", "exposure", "detector"])
        config.outputs["sources"] = DynamicConnectionConfig(
            dataset_type_name="src", storage_class="StructuredDataDict",
            dimensions=["instrument", "visit", "detector"])
  coadd:
    class: lsst.pipe.base.tests.mocks.DynamicTestPipelineTask
    config:
      python: |
        from lsst.pipe.base.tests.mocks import DynamicConnectionConfig
        config.dimensions = ["skymap", "tract", "patch", "band"]
        config.inputs["sources"] = DynamicConnectionConfig(
            dataset_type_name="src", storage_class="StructuredDataDict",
            dimensions=["instrument", "visit", "detector"], multiple=True)
        config.outputs["objects"] = DynamicConnectionConfig(
            dataset_type_name="deepCoadd_src", storage_class="ArrowAstropy",
            dimensions=["skymap", "tract", "patch", "band"])
"""

RENAMED = """\
description: the demo's single-frame processing writing its sources as sourceTable
imports:
  - location: {demo}
    include: [isr, calibrate, visitSummary]
tasks:
  calibrate:
    class: skybatch.demo.tasks.calibrate.CalibrateTask
    config:
      connections.sources: sourceTable
"""


def _run(home: Path, survey: Survey, pipeline: Path, run: str, *extra: str) -> str:
    proc = subprocess.run(
        run_command(home, survey, run, "--workers", "2", *extra, pipeline=pipeline),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"run {run}: succeeded" in proc.stdout
    return proc.stdout


def _tables(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return {
                name: conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
                for name in inspect(conn).get_table_names()
            }
    finally:
        engine.dispose()


def test_src_that_is_not_a_table_never_fails_the_run(survey: Survey, tmp_path: Path) -> None:
    pipeline = tmp_path / "mocked.yaml"
    pipeline.write_text(MOCKED)
    home = tmp_path / "home"
    # Default: every output whose storage class is a table; there is none.
    out = _run(home, survey, pipeline, "t/mocked")
    assert "object catalog rows loaded: 0" in out
    assert "warning:" not in out
    # Named by the operator: skipped with a warning in the run's summary.
    out = _run(home, survey, pipeline, "t/mocked-named", "--catalog", "src")
    assert "warning: catalog src: storage class _mock_StructuredDataDict is not a table" in out
    report = subprocess.run(
        [SKYBATCH, "--home", str(home), "report", "t/mocked-named"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "warning: catalog src: storage class _mock_StructuredDataDict" in report.stdout
    assert _tables(home / "catalogs.sqlite3") == {}


def test_catalog_under_another_name_is_chosen_with_catalog_option(
    survey: Survey, tmp_path: Path
) -> None:
    pipeline = tmp_path / "renamed.yaml"
    pipeline.write_text(RENAMED.format(demo=pipeline_path()))
    db = tmp_path / "objects.sqlite3"
    out = _run(
        tmp_path / "home",
        survey,
        pipeline,
        "t/renamed",
        "--catalog",
        "sourceTable",
        "--catalog-db-url",
        f"sqlite:///{db}",
    )
    assert "warning:" not in out
    tables = _tables(db)
    # Only the chosen table: not visitSummary, although it is a table too.
    assert set(tables) == {"sourceTable"} and tables["sourceTable"] > 0
    assert f"object catalog rows loaded: {tables['sourceTable']}" in out
