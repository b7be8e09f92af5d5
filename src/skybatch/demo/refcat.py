"""The demo reference catalog: a table in an SQL database (the survey's "database data").

The table is generated once per survey; :func:`write_shards` turns the rows of a sky
region into HTM level-7 shards in the Butler (dataset type ``ref_cat``), the form
PipelineTasks read, with the shard helpers of :mod:`skybatch.backbone.export`.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from astropy.table import Table
from lsst.daf.butler import Butler, DatasetType
from lsst.sphgeom import HtmPixelization, LonLat, Region, UnitVector3d

from ..backbone.export import DATASET_TYPE
from ..backbone.shards import HTM_LEVEL, overlapping_shards, read_shards
from .params import SurveyParams

REFCAT_TABLE = "refcat"
REFCAT_DATASET_TYPE = DATASET_TYPE
COLUMNS = ("id", "ra", "dec", "g_mag", "g_magErr", "r_mag", "r_magErr", "htm7")


def generate(params: SurveyParams, radius_deg: float) -> Table:
    """Stars uniform on the sky within ``radius_deg`` of the field centre, 15-25 mag."""
    rng = np.random.default_rng(params.seed + 7)
    area = math.pi * radius_deg**2
    n = int(rng.poisson(params.star_density_deg2 * area))
    # Uniform on the sphere cap (small-angle approximation is fine at these sizes).
    r = radius_deg * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    dec = params.dec_deg + r * np.sin(phi)
    ra = params.ra_deg + r * np.cos(phi) / np.cos(np.deg2rad(dec))
    # Number counts N(<m) ~ 10**(0.3 m) between 15 and 25 mag.
    lo, hi = 10 ** (0.3 * 15.0), 10 ** (0.3 * 25.0)
    r_mag = np.log10(rng.uniform(lo, hi, n)) / 0.3
    g_mag = r_mag + rng.normal(0.6, 0.3, n)
    pix = HtmPixelization(HTM_LEVEL)
    htm = np.array(
        [pix.index(UnitVector3d(LonLat.fromDegrees(a, d))) for a, d in zip(ra, dec, strict=True)],
        dtype=np.int64,
    )
    return Table(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "g_mag": g_mag,
            "g_magErr": np.full(n, 0.01),
            "r_mag": r_mag,
            "r_magErr": np.full(n, 0.01),
            "htm7": htm,
        }
    )


def write_database(table: Table, path: Path) -> None:
    """Store the catalog as an indexed SQL table (SQLite file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {REFCAT_TABLE}")
        conn.execute(
            f"CREATE TABLE {REFCAT_TABLE} (id INTEGER PRIMARY KEY, ra REAL NOT NULL, "
            "dec REAL NOT NULL, g_mag REAL, g_magErr REAL, r_mag REAL, r_magErr REAL, "
            "htm7 INTEGER NOT NULL)"
        )
        conn.execute(f"CREATE INDEX ix_{REFCAT_TABLE}_htm7 ON {REFCAT_TABLE} (htm7)")
        rows = zip(*(table[c].tolist() for c in COLUMNS), strict=True)
        conn.executemany(f"INSERT INTO {REFCAT_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def write_shards(butler: Butler, db_path: Path, regions: Iterable[Region], run: str) -> int:
    """Write the shards overlapping ``regions`` into ``run`` as ``ref_cat``; return the count.

    The survey is built before any skybatch state exists, so the shards are put into
    the Butler directly; production exports go through
    :func:`skybatch.backbone.export.export_refcat`, which also tracks them in the catalog.
    Shard selection and row reading are shared with it.
    """
    dataset_type = DatasetType(
        REFCAT_DATASET_TYPE, ("htm7",), "ArrowAstropy", universe=butler.dimensions
    )
    butler.registry.registerDatasetType(dataset_type)
    butler.collections.register(run)
    tables = read_shards(db_path, REFCAT_TABLE, overlapping_shards(regions))
    for shard, table in tables.items():
        butler.put(table, dataset_type, {"htm7": shard}, run=run)
    return len(tables)
