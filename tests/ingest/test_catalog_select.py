"""Object catalogs are chosen by storage class and the operator's choice, never by name.

A real Butler repository holds one dataset per storage class; the loader is asked to
load them into a real SQLite catalog database.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from astropy.table import Table
from lsst.daf.butler import Butler, DatasetType, StorageClassFactory
from sqlalchemy import create_engine, inspect, text

from skybatch.ingest.butler import OutputRef
from skybatch.ingest.catalog_select import is_table_storage_class, load_run_catalogs

RUN = "t/catalogs"


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("ArrowAstropy", True),
        ("AstropyTable", True),
        ("AstropyQTable", True),
        ("ArrowTable", True),
        ("DataFrame", True),
        ("StructuredDataDict", False),
        ("NumpyArray", False),
        ("SourceCatalog", False),  # lsst.afw is not installed: not importable, not a table
    ],
)
def test_table_storage_classes(name: str, table: bool) -> None:
    storage_class = StorageClassFactory().getStorageClass(name)
    assert is_table_storage_class(storage_class) is table


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, list[OutputRef]]:
    root = tmp_path / "repo"
    Butler.makeRepo(str(root))
    values = {
        "astropyObjects": Table({"x": [1.0, 2.0], "n": [1, 2]}),
        "arrowObjects": pa.table({"x": [1.0, 2.0, 3.0]}),
        "frameObjects": pd.DataFrame({"x": [1.0], "flag": [True]}),
        "src": {"not": "a table"},
    }
    classes = {
        "astropyObjects": "ArrowAstropy",
        "arrowObjects": "ArrowTable",
        "frameObjects": "DataFrame",
        "src": "StructuredDataDict",
    }
    outputs = []
    with Butler.from_config(str(root), writeable=True, run=RUN) as butler:
        for name, value in values.items():
            dataset_type = DatasetType(name, (), classes[name], universe=butler.dimensions)
            butler.registry.registerDatasetType(dataset_type)
            ref = butler.put(value, dataset_type, {})
            outputs.append(OutputRef(str(ref.id), name, {}, RUN))
    return str(root), outputs


def _tables(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
                for name in inspect(conn).get_table_names()
            }
    finally:
        engine.dispose()


def test_default_loads_every_table_output_and_nothing_else(
    repo: tuple[str, list[OutputRef]], tmp_path: Path
) -> None:
    root, outputs = repo
    url = f"sqlite:///{tmp_path / 'cat.sqlite3'}"
    loaded = load_run_catalogs(root, url, outputs, None)
    assert loaded.warnings == []
    assert loaded.rows == {"astropyObjects": 2, "arrowObjects": 3, "frameObjects": 1}
    assert _tables(url) == loaded.rows  # `src` (a dict) is not a catalog


def test_named_catalog_that_is_not_a_table_is_a_warning(
    repo: tuple[str, list[OutputRef]], tmp_path: Path
) -> None:
    root, outputs = repo
    url = f"sqlite:///{tmp_path / 'cat.sqlite3'}"
    loaded = load_run_catalogs(root, url, outputs, ["src", "frameObjects", "nosuch"])
    assert loaded.rows == {"frameObjects": 1}
    assert any("catalog src: storage class StructuredDataDict" in w for w in loaded.warnings)
    assert any("catalog nosuch: the run wrote no dataset" in w for w in loaded.warnings)
    assert _tables(url) == {"frameObjects": 1}


def test_no_catalogs_loads_nothing(repo: tuple[str, list[OutputRef]], tmp_path: Path) -> None:
    root, outputs = repo
    url = f"sqlite:///{tmp_path / 'cat.sqlite3'}"
    loaded = load_run_catalogs(root, url, outputs, [])
    assert loaded.rows == {} and loaded.warnings == []
    assert not (tmp_path / "cat.sqlite3").exists()


def test_unwritable_catalog_database_is_a_warning_not_an_error(
    repo: tuple[str, list[OutputRef]], tmp_path: Path
) -> None:
    root, outputs = repo
    blocker = tmp_path / "file"
    blocker.write_text("")
    loaded = load_run_catalogs(root, f"sqlite:///{blocker}/cat.sqlite3", outputs, None)
    assert loaded.rows == {}
    assert len(loaded.warnings) == 1 and "object catalogs were not loaded" in loaded.warnings[0]


def test_unreadable_dataset_is_skipped_with_a_warning(
    repo: tuple[str, list[OutputRef]], tmp_path: Path
) -> None:
    root, outputs = repo
    with Butler.from_config(root) as butler:
        arrow = next(o.dataset_id for o in outputs if o.dataset_type == "arrowObjects")
        ref = butler.get_dataset(arrow)
        assert ref is not None
        Path(butler.getURI(ref).ospath).write_bytes(b"not parquet")
    url = f"sqlite:///{tmp_path / 'cat.sqlite3'}"
    loaded = load_run_catalogs(root, url, outputs, None)
    assert loaded.rows == {"astropyObjects": 2, "frameObjects": 1}
    expected = "catalog arrowObjects: 1 dataset(s) could not be read"
    assert any(w.startswith(expected) for w in loaded.warnings)
