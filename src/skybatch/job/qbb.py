"""Datastore records of a job's quantum-backed butlers, kept in Python dictionaries.

A quantum-backed butler (QBB) has no registry; its file datastore still keeps its
records (which file holds which dataset, its formatter, size, checksum) and the list
of datasets it holds through two "registry" managers, by default SQL tables in a new
in-memory SQLite database per butler. For the small quanta of a survey's many short
jobs that database was the largest cost of the job wrapper after the task itself:
the tables created per quantum, and every read and write of the task going through
SQLAlchemy's statement compilation, for a table of a handful of rows.

daf_butler lets a QBB take other managers (``OpaqueManagerClass`` and
``BridgeManagerClass`` of :meth:`QuantumBackedButler.initialize`, "a SQL-backed
implementation" by default); these keep the same rows in dictionaries:

* :class:`MemoryOpaqueTable` is a table with the table spec's columns and primary
  key: inserts of an existing key are refused (as the SQL primary key refuses them),
  ``ensure`` skips and ``replace`` overwrites them; ``fetch`` takes what the SQL
  table takes (equality, a list/tuple/set as ``IN``, a string ending in ``%`` as a
  prefix) and returns rows with every column (``None`` where nothing was given);
  ``delete`` matches the named columns. Inserts made inside a datastore transaction
  are undone if it rolls back.
* :class:`MemoryBridgeManager` gives each datastore daf_butler's own
  :class:`EphemeralDatastoreRegistryBridge` (a set of dataset ids, with its trash),
  which is what a datastore without a registry table needs.

What a quantum's butler reads, writes and reports (``extract_provenance_data``, the
datastore records the job's outputs are described from) is unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lsst.daf.butler import ddl
from lsst.daf.butler.registry.bridge.ephemeral import EphemeralDatastoreRegistryBridge
from lsst.daf.butler.registry.interfaces import (
    Database,
    DatasetIdRef,
    DatasetRecordStorageManager,
    DatastoreRegistryBridge,
    DatastoreRegistryBridgeManager,
    OpaqueTableStorage,
    OpaqueTableStorageManager,
    StaticTablesContext,
    VersionTuple,
)

if TYPE_CHECKING:
    from lsst.daf.butler.datastore import DatastoreTransaction

__all__ = [
    "DuplicateRecordError",
    "MemoryBridgeManager",
    "MemoryOpaqueManager",
    "MemoryOpaqueTable",
]

Row = dict[str, Any]
Key = tuple[Any, ...]


class DuplicateRecordError(RuntimeError):
    """A row with the primary key of an existing row was inserted (the SQL table's
    primary key constraint)."""


class MemoryOpaqueTable(OpaqueTableStorage):
    """One opaque table of a datastore, as rows keyed by their primary key."""

    def __init__(self, name: str, spec: ddl.TableSpec) -> None:
        super().__init__(name=name)
        self._columns = [field.name for field in spec.fields]
        self._guids = frozenset(f.name for f in spec.fields if f.dtype is ddl.GUID)
        self._key = [field.name for field in spec.fields if field.primaryKey] or self._columns
        self._rows: dict[Key, Row] = {}

    def _row(self, data: Mapping[str, Any]) -> Row:
        unknown = set(data) - set(self._columns)
        if unknown:
            raise ValueError(f"table {self.name} has no column(s) {sorted(unknown)}")
        return {c: self._value(c, data.get(c)) for c in self._columns}

    def _value(self, column: str, value: Any) -> Any:
        """What the SQL table would give back: GUID columns as UUIDs."""
        if column in self._guids and isinstance(value, str):
            return uuid.UUID(value)
        return value

    def _put(
        self, data: Iterable[Row], mode: str, transaction: DatastoreTransaction | None
    ) -> None:
        added: list[tuple[Any, ...]] = []
        replaced: list[tuple[tuple[Any, ...], Row]] = []
        for item in data:
            row = self._row(item)
            key = tuple(row[c] for c in self._key)
            old = self._rows.get(key)
            if old is not None:
                if mode == "insert":
                    found = dict(zip(self._key, key, strict=True))
                    raise DuplicateRecordError(f"table {self.name} already has a row with {found}")
                if mode == "ensure":
                    continue
                replaced.append((key, old))
            else:
                added.append(key)
            self._rows[key] = row
        if transaction is not None and (added or replaced):
            transaction.registerUndo(f"{mode} into {self.name}", self._undo, added, replaced)

    def _undo(
        self, added: list[tuple[Any, ...]], replaced: list[tuple[tuple[Any, ...], Row]]
    ) -> None:
        for key in added:
            self._rows.pop(key, None)
        self._rows.update(replaced)

    def insert(self, *data: Row, transaction: DatastoreTransaction | None = None) -> None:
        self._put(data, "insert", transaction)

    def ensure(self, *data: Row, transaction: DatastoreTransaction | None = None) -> None:
        self._put(data, "ensure", transaction)

    def replace(self, *data: Row, transaction: DatastoreTransaction | None = None) -> None:
        self._put(data, "replace", transaction)

    def fetch(self, **where: Any) -> Iterator[Row]:
        tests = [self._test(column, value) for column, value in where.items()]
        for row in list(self._rows.values()):
            if all(test(row) for test in tests):
                yield dict(row)

    def _test(self, column: str, value: Any) -> Any:
        if column not in self._columns:
            raise ValueError(f"table {self.name} has no column {column!r}")
        if isinstance(value, list | tuple | set | frozenset):
            wanted = {self._value(column, v) for v in value}
            return lambda row: row[column] in wanted
        if isinstance(value, str) and value.endswith("%"):  # a prefix, as the SQL table has it
            prefix = value[:-1]
            return lambda row: isinstance(row[column], str) and row[column].startswith(prefix)
        wanted_one = self._value(column, value)
        return lambda row: row[column] == wanted_one

    def delete(self, columns: Iterable[str], *rows: Row) -> None:
        names = list(columns)
        if not names:  # no constraint: every row (as the SQL table does)
            self._rows.clear()
            return
        doomed = {tuple(self._value(c, r[c]) for c in names) for r in rows}
        for key, row in list(self._rows.items()):
            if tuple(row[c] for c in names) in doomed:
                del self._rows[key]


class MemoryOpaqueManager(OpaqueTableStorageManager):
    """Opaque tables of one butler, each a :class:`MemoryOpaqueTable`."""

    def __init__(self, registry_schema_version: VersionTuple | None = None) -> None:
        super().__init__(registry_schema_version=registry_schema_version)
        self._tables: dict[str, MemoryOpaqueTable] = {}

    @classmethod
    def initialize(
        cls,
        db: Database,
        context: StaticTablesContext,
        registry_schema_version: VersionTuple | None = None,
    ) -> OpaqueTableStorageManager:
        return cls(registry_schema_version=registry_schema_version)

    def clone(self, db: Database) -> OpaqueTableStorageManager:
        return type(self)(registry_schema_version=self._registry_schema_version)

    def get(self, name: str) -> OpaqueTableStorage | None:
        return self._tables.get(name)

    def register(self, name: str, spec: ddl.TableSpec) -> OpaqueTableStorage:
        return self._tables.setdefault(name, MemoryOpaqueTable(name, spec))

    @classmethod
    def currentVersions(cls) -> list[VersionTuple]:
        return []


class MemoryBridgeManager(DatastoreRegistryBridgeManager):
    """The datasets each datastore of one butler holds, in daf_butler's ephemeral bridge."""

    def __init__(
        self,
        opaque: OpaqueTableStorageManager,
        universe: Any,
        registry_schema_version: VersionTuple | None = None,
    ) -> None:
        super().__init__(
            opaque=opaque, universe=universe, registry_schema_version=registry_schema_version
        )
        self._bridges: dict[str, EphemeralDatastoreRegistryBridge] = {}

    @classmethod
    def initialize(
        cls,
        db: Database,
        context: StaticTablesContext,
        *,
        opaque: OpaqueTableStorageManager,
        datasets: type[DatasetRecordStorageManager],
        universe: Any,
        registry_schema_version: VersionTuple | None = None,
    ) -> DatastoreRegistryBridgeManager:
        return cls(opaque, universe, registry_schema_version)

    def clone(
        self, *, db: Database, opaque: OpaqueTableStorageManager
    ) -> DatastoreRegistryBridgeManager:
        return type(self)(opaque, self.universe, self._registry_schema_version)

    def refresh(self) -> None:
        pass

    def register(self, name: str, *, ephemeral: bool = True) -> DatastoreRegistryBridge:
        return self._bridges.setdefault(name, EphemeralDatastoreRegistryBridge(name))

    def findDatastores(self, ref: DatasetIdRef) -> Iterable[str]:
        return [name for name, bridge in self._bridges.items() if ref in bridge]

    @classmethod
    def currentVersions(cls) -> list[VersionTuple]:
        return []
