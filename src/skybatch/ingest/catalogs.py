"""Object catalogs into a SQL catalog database (seed step 12): one table per dataset type.

Tables (chosen by :mod:`skybatch.ingest.catalog_select`) are appended with their data id columns
and dataset id, so a catalog row can always be traced to the file it came from.
Loading the same dataset twice is a no-op (rows of a dataset id are replaced).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    inspect,
)

__all__ = ["load_tables"]


def _sql_type(dtype: np.dtype[Any]) -> Any:
    if dtype.kind == "b":
        return Boolean
    if dtype.kind in "iu":
        return Integer
    if dtype.kind == "f":
        return Float
    return String


def _table_name(dataset_type: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", dataset_type)


def load_tables(db_url: str, items: Iterable[tuple[str, str, dict[str, Any], Any]]) -> int:
    """Append astropy tables: items are (dataset_type, dataset_id, data_id, table).

    A PostgreSQL database that does not exist yet is created first (if the user may).
    """
    from skybatch.db.postgres import ensure_database, is_postgres_url

    if is_postgres_url(db_url):
        ensure_database(db_url, where="catalog database")
    engine = create_engine(db_url)
    metadata = MetaData()
    total = 0
    try:
        with engine.begin() as conn:
            for dataset_type, dataset_id, data_id, table in items:
                name = _table_name(dataset_type)
                columns = [c for c in table.colnames if table[c].ndim == 1]
                if name not in metadata.tables:
                    if inspect(conn).has_table(name):
                        Table(name, metadata, autoload_with=conn)
                    else:
                        Table(
                            name,
                            metadata,
                            Column("row_id", Integer, primary_key=True, autoincrement=True),
                            Column("dataset_id", String(36), index=True, nullable=False),
                            *[Column(f"dataid_{k}", String(64)) for k in sorted(data_id)],
                            *[Column(c, _sql_type(table[c].dtype)) for c in columns],
                        ).create(conn)
                sql_table = metadata.tables[name]
                known = set(sql_table.columns.keys())
                conn.execute(delete(sql_table).where(sql_table.c.dataset_id == dataset_id))
                rows = []
                for record in table:
                    row: dict[str, Any] = {"dataset_id": dataset_id}
                    row.update({f"dataid_{k}": str(v) for k, v in data_id.items()})
                    for c in columns:
                        value = record[c]
                        row[c] = value.item() if hasattr(value, "item") else value
                    rows.append({k: v for k, v in row.items() if k in known})
                if rows:
                    conn.execute(insert(sql_table), rows)
                total += len(rows)
    finally:
        engine.dispose()
    return total
