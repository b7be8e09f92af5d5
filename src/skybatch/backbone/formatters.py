"""Tables as SQLite files: row conversion helpers and a Butler formatter for them.

Database exports (seed step 7) can write each shard as a small SQLite file instead of
Parquet, for sites whose tools speak SQL. :class:`SqliteTableFormatter` lets the Butler
read such a file back as an astropy :class:`~astropy.table.Table` (storage class
``ArrowAstropy``), so PipelineTasks see the same object whichever format was chosen.

The helpers here are shared with :mod:`skybatch.backbone.export`, which reads rows
from the source database with the same type rules, so a shard read back from its file
has the dtypes it had when it was read from the database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import MaskedColumn, Table
from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

__all__ = [
    "DEFAULT_TABLE",
    "SqliteTableFormatter",
    "connect_readonly",
    "count_rows",
    "quote_identifier",
    "read_sqlite_table",
    "read_sqlite_table_head",
    "table_columns",
    "table_from_rows",
    "write_sqlite_table",
]

DEFAULT_TABLE = "refcat"
"""Name of the table :func:`write_sqlite_table` creates in a shard file."""


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier (double quotes, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def connect_readonly(path: Path | str) -> sqlite3.Connection:
    """Open an existing SQLite file read-only (never creates or modifies it)."""
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)


def _affinity_dtype(decltype: str) -> np.dtype[Any] | None:
    """The numpy dtype of a declared SQLite column type, after SQLite's affinity rules.

    ``None`` means the declaration does not fix a type (BLOB, NUMERIC or nothing); the
    dtype is then inferred from the values.
    """
    upper = decltype.upper()
    if "INT" in upper:
        return np.dtype(np.int64)
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return np.dtype(str)
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return np.dtype(np.float64)
    return None


def _infer_dtype(values: Sequence[Any]) -> np.dtype[Any]:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) for v in present):
        return np.dtype(np.int64)
    if all(isinstance(v, int | float) for v in present):
        return np.dtype(np.float64)  # also the dtype of an empty or all-NULL column
    if all(isinstance(v, str) for v in present):
        return np.dtype(str)
    return np.dtype(object)


def _column(name: str, decltype: str, values: Sequence[Any]) -> Any:
    """One table column; NULLs become masked entries so they are not mistaken for data."""
    declared = _affinity_dtype(decltype)
    dtype = declared if declared is not None else _infer_dtype(values)
    mask = [v is None for v in values]
    if not any(mask):
        if dtype.kind == "U" and not values:
            return np.array([], dtype="U1")
        return np.asarray(values, dtype=dtype)
    fill: Any = {"i": 0, "f": np.nan, "U": ""}.get(dtype.kind)
    filled = [fill if v is None else v for v in values]
    return MaskedColumn(np.asarray(filled, dtype=dtype), name=name, mask=mask)


def table_from_rows(
    names: Sequence[str], decltypes: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Table:
    """An astropy Table from SQL result rows, with dtypes from the declared column types."""
    by_column: list[Sequence[Any]] = (
        [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in names]
    )
    return Table(
        [_column(n, t, vals) for n, t, vals in zip(names, decltypes, by_column, strict=True)],
        names=list(names),
    )


def table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, int]]:
    """``(name, declared type, primary-key position)`` of each column of ``table``."""
    rows = conn.execute(f"PRAGMA table_info({quote_identifier(table)})").fetchall()
    return [(str(r[1]), str(r[2] or ""), int(r[5])) for r in rows]


def _only_table(conn: sqlite3.Connection, path: Path | str) -> str:
    """The name of the single user table of a table file."""
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    ).fetchall()
    tables = [str(r[0]) for r in rows]
    if len(tables) != 1:
        raise ValueError(
            f"{path} holds {len(tables)} tables ({', '.join(tables) or 'none'}); "
            "a table file must hold exactly one"
        )
    return tables[0]


def read_sqlite_table(path: Path | str, columns: Iterable[str] | None = None) -> Table:
    """Read the one table of a shard file (all columns, or those matching ``columns``).

    ``columns`` entries may be glob patterns, as for the Butler's Parquet formatter.
    """
    with closing(connect_readonly(path)) as conn:
        name = _only_table(conn, path)
        described = table_columns(conn, name)
        chosen = described
        if columns is not None:
            chosen = _select_columns(described, list(dict.fromkeys(columns)), str(path))
        names = [c[0] for c in chosen]
        sql = (
            f"SELECT {', '.join(quote_identifier(n) for n in names)} "
            f"FROM {quote_identifier(name)} ORDER BY rowid"
        )
        rows = conn.execute(sql).fetchall()
    return table_from_rows(names, [c[1] for c in chosen], rows)


def _select_columns(
    described: list[tuple[str, str, int]], patterns: list[str], where: str
) -> list[tuple[str, str, int]]:
    chosen: dict[str, tuple[str, str, int]] = {}
    for pattern in patterns:
        matches = [c for c in described if fnmatchcase(c[0], pattern)]
        if not matches:
            raise ValueError(f"column {pattern!r} requested in parameters is not in {where}")
        chosen.update({c[0]: c for c in matches})
    return list(chosen.values())


def _sql_type(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "iub":
        return "INTEGER"
    if dtype.kind == "f":
        return "REAL"
    if dtype.kind in "US":
        return "TEXT"
    return "BLOB"


def write_sqlite_table(table: Table, path: Path | str, name: str = DEFAULT_TABLE) -> None:
    """Write ``table`` as the only table ``name`` of a new SQLite file at ``path``.

    Masked entries are stored as NULL. The file must not exist yet: a table file is
    written once and never changed (the Butler and the catalog checksum it).
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} already exists; table files are written once")
    definitions = ", ".join(
        f"{quote_identifier(col)} {_sql_type(table[col].dtype)}" for col in table.colnames
    )
    columns: list[list[Any]] = []
    for col in table.colnames:
        values = table[col]
        data = values.filled().tolist() if hasattr(values, "mask") else values.tolist()
        if hasattr(values, "mask"):
            mask = np.broadcast_to(np.asarray(values.mask), len(values)).tolist()
            data = [None if m else v for v, m in zip(data, mask, strict=True)]
        columns.append(data)
    marks = ", ".join("?" * len(table.colnames))
    with closing(sqlite3.connect(target)) as conn, conn:
        conn.execute(f"CREATE TABLE {quote_identifier(name)} ({definitions})")
        conn.executemany(
            f"INSERT INTO {quote_identifier(name)} VALUES ({marks})", zip(*columns, strict=True)
        )


class SqliteTableFormatter(FormatterV2):
    """Read and write ``ArrowAstropy`` datasets as single-table SQLite files.

    Supports the ``columns`` read parameter (names or glob patterns) and the derived
    components ``columns``, ``rowcount`` and ``schema`` without reading every row.
    """

    default_extension = ".sqlite3"
    supported_extensions = frozenset({".sqlite3", ".sqlite", ".db"})
    unsupported_parameters = frozenset({"filters"})
    can_read_from_local_file = True

    def read_from_local_file(
        self, path: str, component: str | None = None, expected_size: int = -1
    ) -> Any:
        read_name = self.file_descriptor.readStorageClass.name
        if component in ("columns", "schema") or read_name == "ArrowAstropySchema":
            empty = read_sqlite_table_head(path)
            if component == "columns":
                return list(empty.colnames)
            from lsst.daf.butler.formatters.parquet import ArrowAstropySchema

            return ArrowAstropySchema(empty)
        if component == "rowcount":
            return count_rows(path)
        columns = (self.file_descriptor.parameters or {}).get("columns")
        if isinstance(columns, str):
            columns = [columns]
        return read_sqlite_table(path, columns)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        if not isinstance(in_memory_dataset, Table):
            raise TypeError(
                f"SqliteTableFormatter writes astropy Tables, not {type(in_memory_dataset)!r}"
            )
        write_sqlite_table(in_memory_dataset, uri.ospath)


def read_sqlite_table_head(path: Path | str) -> Table:
    """The columns of a table file with their dtypes, and no rows."""
    with closing(connect_readonly(path)) as conn:
        described = table_columns(conn, _only_table(conn, path))
    return table_from_rows([c[0] for c in described], [c[1] for c in described], [])


def count_rows(path: Path | str) -> int:
    """Number of rows of a table file."""
    with closing(connect_readonly(path)) as conn:
        table = quote_identifier(_only_table(conn, path))
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
