"""Sky regions, HTM7 shards and the source table of a reference catalog export.

The region of an export is the union of visits' regions or a polygon; the shards are
the HTM level-7 trixels that really overlap it (an envelope is only a superset), and
only those holding rows are read, from an SQLite database opened read-only or a
PostgreSQL database (``postgresql://`` URL) in read-only transactions.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsst.sphgeom import DISJOINT, ConvexPolygon, HtmPixelization, LonLat, Region, UnitVector3d

from skybatch.errors import InputError

from .formatters import connect_readonly, quote_identifier, table_columns, table_from_rows

if TYPE_CHECKING:
    from astropy.table import Table
    from lsst.daf.butler import Butler

__all__ = [
    "HTM_LEVEL",
    "SHARD_COLUMN",
    "SourceTable",
    "iter_shards",
    "open_source",
    "overlapping_shards",
    "polygon_region",
    "read_shards",
    "shards_with_rows",
    "visit_regions",
]

HTM_LEVEL = 7
SHARD_COLUMN = "htm7"
CHUNK = 500
"""htm7 ids per ``IN (...)`` statement: below SQLite's bound-parameter limit."""


# -- regions and shards ---------------------------------------------------------------
def overlapping_shards(regions: Region | Iterable[Region], level: int = HTM_LEVEL) -> list[int]:
    """HTM trixels that really overlap any of ``regions``, sorted.

    ``envelope`` over-covers (it returns whole index ranges around the region); each
    candidate is kept only if sphgeom cannot prove it disjoint from the region, so the
    result holds every overlapping trixel and, for polygons, no others.
    """
    pix = HtmPixelization(level)
    shards: set[int] = set()
    for region in [regions] if isinstance(regions, Region) else regions:
        for begin, end in pix.envelope(region):
            shards.update(
                i for i in range(begin, end) if not pix.pixel(i).relate(region) & DISJOINT
            )
    return sorted(shards)


def polygon_region(vertices: Sequence[tuple[float, float]]) -> ConvexPolygon:
    """The convex hull of ``(ra, dec)`` vertices in degrees (at least three)."""
    where = "--polygon"
    if len(vertices) < 3:
        raise InputError(
            f"a polygon needs at least 3 vertices, got {len(vertices)}",
            where=where,
            hint='give three or more "ra,dec" pairs in degrees, e.g. "10,0 11,0 10.5,1"',
        )
    for ra, dec in vertices:
        if not (math.isfinite(ra) and math.isfinite(dec) and -90.0 <= dec <= 90.0):
            raise InputError(
                f"polygon vertex ({ra}, {dec}) is not a sky position",
                where=where,
                hint="ra and dec are degrees; dec must lie in [-90, 90]",
            )
    points = [UnitVector3d(LonLat.fromDegrees(ra, dec)) for ra, dec in vertices]
    try:
        return ConvexPolygon.convexHull(points)
    except (ValueError, RuntimeError) as exc:
        raise InputError(
            f"the polygon vertices do not span a convex sky polygon: {exc}",
            where=where,
            hint="give at least 3 distinct, non-collinear vertices within one hemisphere",
        ) from None


def visit_regions(
    butler: Butler, visits: Sequence[int], instrument: str | None = None
) -> tuple[str, list[Region]]:
    """The instrument and the sky regions of ``visits`` from the Butler registry.

    ``instrument`` defaults to the only instrument of the repository.
    """
    known = sorted(
        str(r.name) for r in butler.query_dimension_records("instrument", limit=None, explain=False)
    )
    if instrument is None:
        if len(known) != 1:
            raise InputError(
                f"the repository has {len(known)} instruments ({', '.join(known) or 'none'})",
                where="--instrument",
                hint="name the instrument of the visits with --instrument",
            )
        instrument = known[0]
    elif instrument not in known:
        raise InputError(
            f"instrument {instrument!r} is not in the repository",
            where="--instrument",
            hint=f"known instruments: {', '.join(known) or 'none'}",
        )
    wanted = sorted(set(visits))
    records = butler.query_dimension_records(
        "visit",
        instrument=instrument,
        where=f"visit IN ({', '.join(str(int(v)) for v in wanted)})",
        limit=None,
        explain=False,
    )
    found = {int(r.id): r.region for r in records}
    missing = [v for v in wanted if v not in found]
    if missing:
        raise InputError(
            f"visit(s) {', '.join(map(str, missing))} of {instrument} are not in the repository",
            where="--visits",
            hint="list the visits with `butler query-dimension-records REPO visit`",
        )
    no_region = [v for v in wanted if found[v] is None]
    if no_region:
        raise InputError(
            f"visit(s) {', '.join(map(str, no_region))} have no sky region in the registry",
            where="--visits",
            hint="define the visits with regions, or give the area with --polygon",
        )
    return instrument, [found[v] for v in wanted]


# -- the source table -----------------------------------------------------------------
@dataclass(frozen=True)
class SourceTable:
    """A validated table (or view) of an SQLite database (a file) or a PostgreSQL
    database (its URL) that has an ``htm7`` column."""

    database: Path | str
    table: str
    columns: tuple[str, ...]
    decltypes: tuple[str, ...]
    order_by: tuple[str, ...]
    #: The PostgreSQL schema of ``table`` (None: SQLite).
    schema: str | None = None

    @property
    def shown(self) -> str:
        """The database for messages (a URL without its password)."""
        if isinstance(self.database, str):
            from skybatch.db.engine import mask_url

            return mask_url(self.database)
        return str(self.database)

    @property
    def from_sql(self) -> str:
        """The table as named in a FROM clause."""
        if self.schema is None:
            return quote_identifier(self.table)
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.table)}"

    def select_sql(self, placeholders: str) -> str:
        """The query that reads the rows of some shards (``placeholders``: ``?, ?, ...``)."""
        return (
            f"SELECT {', '.join(quote_identifier(c) for c in self.columns)} "
            f"FROM {self.from_sql} "
            f"WHERE {quote_identifier(SHARD_COLUMN)} IN ({placeholders}) "
            f"ORDER BY {', '.join(self.order_by)}"
        )

    @property
    def is_postgres(self) -> bool:
        return isinstance(self.database, str)

    def distinct_sql(self, placeholders: str) -> str:
        """The query that finds which of some shards hold rows (index only)."""
        col = quote_identifier(SHARD_COLUMN)
        return f"SELECT DISTINCT {col} FROM {self.from_sql} WHERE {col} IN ({placeholders})"


def open_source(database: Path | str, table: str) -> SourceTable:
    """Check that ``database`` (an SQLite file, or a PostgreSQL URL) has a ``table``
    (or view) with an htm7 column."""
    from skybatch.db.postgres import is_postgres_url

    if is_postgres_url(str(database)):
        return _open_postgres_source(str(database), table)
    database = Path(database).expanduser().resolve()
    if not database.is_file():
        raise InputError(
            f"database file {database} does not exist",
            where=str(database),
            hint="give the SQLite file holding the catalog with --database",
        )
    try:
        with closing(connect_readonly(database)) as conn:
            kind = conn.execute(
                "SELECT type FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                (table,),
            ).fetchone()
            if kind is None:
                names = [
                    r[0]
                    for r in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                    )
                ]
                raise InputError(
                    f"database {database} has no table {table!r}",
                    where=f"{database}:{table}",
                    hint=f"choose one with --table; tables there: {', '.join(names) or 'none'}",
                )
            described = table_columns(conn, table)
    except sqlite3.DatabaseError as exc:
        raise InputError(
            f"cannot read {database} as an SQLite database: {exc}",
            where=str(database),
            hint="--database must be an SQLite file (the catalog's database data)",
        ) from None
    names = [c[0] for c in described]
    if SHARD_COLUMN not in names:
        raise InputError(
            f"table {table!r} of {database} has no {SHARD_COLUMN} column "
            f"(columns: {', '.join(names)})",
            where=f"{database}:{table}",
            hint=f"add an indexed {SHARD_COLUMN} column with each row's HTM level-7 trixel id",
        )
    # Rows come grouped by shard (iter_shards relies on it), then in a stable order:
    # primary key, else rowid, else (a view) every column.
    primary = [c[0] for c in sorted((c for c in described if c[2] > 0), key=lambda c: c[2])]
    tiebreak = [quote_identifier(c) for c in primary or ([] if kind[0] == "table" else names)]
    order = [quote_identifier(SHARD_COLUMN), *(tiebreak or ["rowid"])]
    return SourceTable(
        database, table, tuple(names), tuple(c[1] for c in described), tuple(dict.fromkeys(order))
    )


#: PostgreSQL column types as the declared SQLite types :func:`table_from_rows` reads.
_PG_TYPES = {"integer": "INTEGER", "bigint": "INTEGER", "smallint": "INTEGER"}
_PG_FLOATS = ("real", "double precision", "numeric")
_PG_TEXTS = ("text", "character varying", "character")


def _pg_decltype(data_type: str) -> str:
    if data_type in _PG_TYPES:
        return _PG_TYPES[data_type]
    if data_type in _PG_FLOATS:
        return "REAL"
    if data_type in _PG_TEXTS:
        return "TEXT"
    return ""  # inferred from the values


def _pg_engine(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(
        parsed,
        connect_args={"connect_timeout": 5, "options": "-c default_transaction_read_only=on"},
    )


def _open_postgres_source(url: str, table: str) -> SourceTable:
    """The table (or view) ``table`` of the PostgreSQL database ``url``: ``schema.name``
    or a name on the search path."""
    import sqlalchemy

    from skybatch.db.engine import mask_url
    from skybatch.db.postgres import connect_error

    shown = mask_url(url)
    schema, _, name = table.rpartition(".")
    engine = _pg_engine(url)
    try:
        with engine.connect() as conn:
            schema = schema or str(
                conn.execute(sqlalchemy.text("SELECT current_schema()")).scalar()
            )
            described = conn.execute(
                sqlalchemy.text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
                ),
                {"s": schema, "t": name},
            ).all()
            if not described:
                names = conn.execute(
                    sqlalchemy.text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = :s ORDER BY table_name"
                    ),
                    {"s": schema},
                ).scalars()
                raise InputError(
                    f"database {shown} has no table {table!r}",
                    where=f"{shown}:{table}",
                    hint=f"tables in schema {schema}: {', '.join(names) or 'none'}",
                )
            primary = conn.execute(
                sqlalchemy.text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indisprimary AND i.indrelid = CAST(:q AS regclass) "
                    "ORDER BY array_position(i.indkey, a.attnum)"
                ),
                {"q": f"{quote_identifier(schema)}.{quote_identifier(name)}"},
            ).scalars()
            primary = list(primary)
    except sqlalchemy.exc.OperationalError as exc:
        raise connect_error(url, exc, where=shown) from None
    finally:
        engine.dispose()
    names = [str(c[0]) for c in described]
    if SHARD_COLUMN not in names:
        raise InputError(
            f"table {table!r} of {shown} has no {SHARD_COLUMN} column "
            f"(columns: {', '.join(names)})",
            where=f"{shown}:{table}",
            hint=f"add an indexed {SHARD_COLUMN} column with each row's HTM level-7 trixel id",
        )
    tiebreak = [quote_identifier(c) for c in (primary or names)]
    order = [quote_identifier(SHARD_COLUMN), *tiebreak]
    return SourceTable(
        url,
        name,
        tuple(names),
        tuple(_pg_decltype(str(c[1])) for c in described),
        tuple(dict.fromkeys(order)),
        schema,
    )


def _pg_rows(source: SourceTable, sql_of: Any, shards: Sequence[int]) -> Iterator[Sequence[Any]]:
    """Rows of ``sql_of(placeholders)`` for each chunk of ``shards``, from PostgreSQL."""
    import sqlalchemy

    engine = _pg_engine(str(source.database))
    try:
        with engine.connect() as conn:
            for chunk in _chunks(shards):
                sql = sql_of(", ".join(f":p{i}" for i in range(len(chunk))))
                params = {f"p{i}": int(v) for i, v in enumerate(chunk)}
                yield from conn.execute(sqlalchemy.text(sql), params).all()
    finally:
        engine.dispose()


def _chunks(items: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def shards_with_rows(source: SourceTable, shards: Iterable[int]) -> list[int]:
    """Those of ``shards`` that hold at least one row, sorted."""
    wanted = sorted(set(shards))
    if source.is_postgres:
        return sorted({int(r[0]) for r in _pg_rows(source, source.distinct_sql, wanted)})
    found: set[int] = set()
    with closing(connect_readonly(source.database)) as conn:
        for chunk in _chunks(wanted):
            sql = source.distinct_sql(", ".join("?" * len(chunk)))
            found.update(int(r[0]) for r in conn.execute(sql, list(chunk)))
    return sorted(found)


def iter_shards(source: SourceTable, shards: Iterable[int]) -> Iterator[tuple[int, Table]]:
    """``(shard, rows)`` for each of ``shards`` that holds rows, in shard order.

    Reads one chunk of shards at a time, so memory stays bounded by the chunk.
    """
    names, types = list(source.columns), list(source.decltypes)
    position = names.index(SHARD_COLUMN)
    if source.is_postgres:
        pg_rows = _pg_rows(source, source.select_sql, sorted(set(shards)))
        for shard, group in groupby(pg_rows, key=itemgetter(position)):
            yield int(shard), table_from_rows(names, types, list(group))
        return
    with closing(connect_readonly(source.database)) as conn:
        for chunk in _chunks(sorted(set(shards))):
            sql = source.select_sql(", ".join("?" * len(chunk)))
            rows = conn.execute(sql, list(chunk)).fetchall()
            for shard, group in groupby(rows, key=itemgetter(position)):  # ordered by shard
                yield int(shard), table_from_rows(names, types, list(group))


def read_shards(database: Path | str, table: str, shards: Iterable[int]) -> dict[int, Table]:
    """Rows of ``table`` grouped by htm7 shard, for those of ``shards`` that hold rows."""
    return dict(iter_shards(open_source(database, table), shards))
