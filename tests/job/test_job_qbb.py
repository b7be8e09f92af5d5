"""The QBB's in-memory record managers answer as daf_butler's SQL tables do.

Every operation a file datastore makes on its records table is made on both a
:class:`MemoryOpaqueTable` and daf_butler's own SQLite-backed table (the default of a
QBB) with the file datastore's table spec, and the rows they give back compared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lsst.daf.butler import DimensionUniverse
from lsst.daf.butler.datastores.fileDatastore import FileDatastore
from lsst.daf.butler.registry.bridge.ephemeral import EphemeralDatastoreRegistryBridge
from lsst.daf.butler.registry.databases.sqlite import SqliteDatabase
from lsst.daf.butler.registry.interfaces import FakeDatasetRef, OpaqueTableStorage
from lsst.daf.butler.registry.opaque import ByNameOpaqueTableStorageManager

from skybatch.job.qbb import (
    DuplicateRecordError,
    MemoryBridgeManager,
    MemoryOpaqueManager,
    MemoryOpaqueTable,
)

IDS = [uuid.UUID(int=i) for i in range(1, 5)]


def _row(i: int, component: str = "__NULL_STRING__", **extra: Any) -> dict[str, Any]:
    return {
        "dataset_id": IDS[i],
        "path": f"run/type/file_{i}.json",
        "formatter": "lsst.daf.butler.formatters.json.JsonFormatter",
        "storage_class": "StructuredDataDict",
        "component": component,
        "checksum": None,
        "file_size": 100 + i,
        **extra,
    }


@pytest.fixture
def tables() -> Iterator[tuple[OpaqueTableStorage, MemoryOpaqueTable]]:
    spec = FileDatastore.makeTableSpec()
    db = SqliteDatabase.fromUri("sqlite:///:memory:", origin=0)
    with db.declareStaticTables(create=True) as context:
        manager = ByNameOpaqueTableStorageManager.initialize(db, context)
    sql = manager.register("file_datastore_records", spec)
    memory = MemoryOpaqueManager().register("file_datastore_records", spec)
    assert isinstance(memory, MemoryOpaqueTable)
    yield sql, memory
    db.dispose()


def _same(tables: tuple[OpaqueTableStorage, MemoryOpaqueTable], **where: Any) -> list[Any]:
    sql, memory = tables
    key = lambda r: (str(r["dataset_id"]), r["component"])  # noqa: E731
    got_sql = sorted((dict(r) for r in sql.fetch(**where)), key=key)
    got_memory = sorted(memory.fetch(**where), key=key)
    assert got_memory == got_sql, where
    return got_memory


def test_fetch_delete_and_replace_give_what_the_sql_table_gives(tables: Any) -> None:
    rows = [_row(0), _row(1), _row(1, component="wcs"), _row(2)]
    for table in tables:
        table.insert(*rows)
        table.ensure(_row(0, file_size=999))  # exists: skipped
        table.replace(_row(2, checksum="abc"))
        table.insert({"dataset_id": IDS[3], "path": "p", "formatter": "f", "storage_class": "s",
                      "component": "c"})  # fmt: skip
    assert len(_same(tables)) == 5
    assert _same(tables, dataset_id=IDS[0])[0]["file_size"] == 100
    assert _same(tables, dataset_id=IDS[2])[0]["checksum"] == "abc"
    assert _same(tables, dataset_id=IDS[3])[0]["file_size"] is None  # unset column
    assert len(_same(tables, dataset_id=[IDS[1], IDS[2]])) == 3
    assert len(_same(tables, dataset_id={IDS[1]}, component="wcs")) == 1
    assert len(_same(tables, path="run/type/%")) == 4  # a prefix
    assert _same(tables, path="run/type/file_1.json#%") == []
    assert _same(tables, dataset_id=str(IDS[0]))[0]["dataset_id"] == IDS[0]
    for table in tables:
        table.delete(["dataset_id"], {"dataset_id": IDS[1]})
    assert len(_same(tables)) == 3
    for table in tables:
        table.delete(["dataset_id"])  # constrained on no rows: nothing
    assert len(_same(tables)) == 3
    for table in tables:
        table.delete([], {})  # no constraint: everything
    assert _same(tables) == []


def test_a_second_row_with_the_same_key_is_refused(tables: Any) -> None:
    _, memory = tables
    memory.insert(_row(0))
    with pytest.raises(DuplicateRecordError, match="already has a row"):
        memory.insert(_row(0, file_size=1))
    assert [r["file_size"] for r in memory.fetch()] == [100]
    with pytest.raises(ValueError, match="no column"):
        memory.insert(_row(1, colour="red"))


class _Transaction:
    """The undo log of a datastore transaction, as far as a table uses it."""

    def __init__(self) -> None:
        self.undo: list[Any] = []

    def registerUndo(self, name: str, function: Any, *args: Any) -> None:
        self.undo.append((function, args))

    def rollback(self) -> None:
        for function, args in reversed(self.undo):
            function(*args)


def test_a_rolled_back_transaction_undoes_inserts_and_replacements(tables: Any) -> None:
    _, memory = tables
    memory.insert(_row(0))
    transaction = _Transaction()
    memory.insert(_row(1), transaction=transaction)
    memory.replace(_row(0, checksum="new"), transaction=transaction)
    transaction.rollback()
    assert [(r["dataset_id"], r["checksum"]) for r in memory.fetch()] == [(IDS[0], None)]


def test_the_bridge_keeps_each_datastores_datasets() -> None:
    manager = MemoryBridgeManager(MemoryOpaqueManager(), DimensionUniverse())
    bridge = manager.register("FileDatastore@<butlerRoot>")
    assert isinstance(bridge, EphemeralDatastoreRegistryBridge)
    assert manager.register("FileDatastore@<butlerRoot>") is bridge
    bridge.insert([FakeDatasetRef(IDS[0])])
    assert list(manager.findDatastores(FakeDatasetRef(IDS[0]))) == ["FileDatastore@<butlerRoot>"]
    assert list(manager.findDatastores(FakeDatasetRef(IDS[1]))) == []
