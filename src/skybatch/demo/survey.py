"""Build the demo survey: a real Butler repository with DemoCam data.

Layout of a survey directory::

    DIR/repo/          Butler repository (SQLite registry, or PostgreSQL: see
                       :class:`PostgresRegistry`; file datastore)
    DIR/refcat.sqlite  reference catalog as an SQL table (the survey's database data)
    DIR/truth.json     what was injected (pointings, seeing, zero points, epochs)

Collections: ``DemoCam/raw/all`` (raws), ``DemoCam/calib`` (CALIBRATION; biases and flats
of two epochs certified with validity ranges), ``refcats/demo`` (``ref_cat`` HTM7
shards), ``skymaps`` (``skyMap``), and the chain ``DemoCam/defaults`` of all of them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.time import Time, TimeDelta
from lsst.daf.butler import Butler, CollectionType, Config, DatasetType, Timespan
from lsst.sphgeom import ConvexPolygon, LonLat, Region, UnitVector3d

from ..errors import InputError
from ..progress import ProgressFactory, no_bars
from . import refcat as refcat_mod
from . import simulate
from .params import EPOCHS, FILTERS, INSTRUMENT, SKYMAP, SurveyParams, SurveyTruth, plan_survey
from .skymap import patch_wcs, skymap_definition

RAW_RUN = f"{INSTRUMENT}/raw/all"
CALIB_COLLECTION = f"{INSTRUMENT}/calib"
REFCAT_RUN = "refcats/demo"
SKYMAP_RUN = "skymaps"
DEFAULTS = f"{INSTRUMENT}/defaults"

#: Repository configuration that teaches the Butler skybatch's image storage class.
REPO_CONFIG: dict[str, Any] = {
    "storageClasses": {"SkyImage": {"pytype": "skybatch.demo.image.SkyImage"}},
    "datastore": {"formatters": {"SkyImage": "skybatch.demo.formatters.SkyImageFormatter"}},
}


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False  # not a URL: refused as such below


@dataclass(frozen=True)
class PostgresRegistry:
    """A Butler registry in a PostgreSQL database: ``url`` names the database (it is
    created when missing and the user may), ``schema`` the namespace the registry's
    tables go in (new: a survey never shares its registry tables)."""

    url: str
    schema: str

    @classmethod
    def for_survey(cls, url: str, root: Path, schema: str | None = None) -> PostgresRegistry:
        """The registry of the survey in ``root``: ``schema`` or one named after the
        directory (``demo_survey`` for ``./demo-survey``)."""
        if schema is None:
            schema = re.sub(r"[^a-z0-9_]+", "_", root.resolve().name.lower()).strip("_")
            reserved = schema.startswith("pg_") or not schema[:1].isalpha()
            schema = f"survey_{schema}" if reserved else schema
        return cls(url, schema[:63])

    def prepare(self) -> None:
        """Before anything is built: the database exists (made if missing), has the
        ``btree_gist`` extension (made if missing) and no schema ``schema`` yet.

        Raises:
            InputError: naming ``--registry``: unreachable, not creatable, the
                extension missing and not creatable, or the schema already there.
        """
        from ..db import postgres

        where = "--registry"
        if not postgres.is_postgres_url(self.url):
            raise InputError(
                f"{self.url!r} is not a PostgreSQL URL",
                where=where,
                hint="give postgresql://USER@HOST:PORT/DATABASE (the demo survey's SQLite "
                "registry needs no option)",
            )
        if _has_password(self.url):
            raise InputError(
                "the registry URL holds a password, which would be written into the "
                "repository's butler.yaml (and every job's copy of it) and is visible to "
                "other users in the process list and the shell history",
                where=where,
                hint="give the URL without it (postgresql://USER@HOST:PORT/DATABASE) and keep "
                "the password where PostgreSQL clients and the Butler look for it: "
                "~/.pgpass (mode 600) and ~/.lsst/db-auth.yaml (mode 600), or PGPASSWORD",
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.schema) or self.schema.startswith("pg_"):
            raise InputError(
                f"{self.schema!r} is not a usable schema name",
                where="--registry-schema",
                hint="use lower-case letters, digits and '_', not starting with a digit or pg_",
            )
        postgres.ensure_database(self.url, where=where)
        postgres.ensure_btree_gist(self.url, where=where)
        if postgres.schema_exists(self.url, self.schema, where=where):
            raise InputError(
                f"the registry database already has a schema {self.schema!r} (another "
                "survey's registry?)",
                where="--registry-schema",
                hint="give a new schema with --registry-schema, or drop that one "
                f'(`DROP SCHEMA "{self.schema}" CASCADE;`) if nothing uses it',
            )

    def butler_config(self) -> dict[str, Any]:
        return {"registry": {"db": self.url, "namespace": self.schema}}


@dataclass(frozen=True)
class Survey:
    """Paths of a built demo survey."""

    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def refcat_db(self) -> Path:
        return self.root / "refcat.sqlite"

    @property
    def truth_path(self) -> Path:
        return self.root / "truth.json"

    def truth(self) -> SurveyTruth:
        return SurveyTruth.model_validate_json(self.truth_path.read_text())


def polygon(ra: np.ndarray, dec: np.ndarray) -> ConvexPolygon:
    points = [
        UnitVector3d(LonLat.fromDegrees(float(a), float(d))) for a, d in zip(ra, dec, strict=False)
    ]
    return ConvexPolygon.convexHull(points)


def _corners(wcs: Any, nx: int, ny: int) -> ConvexPolygon:
    xs = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    return polygon(ra, dec)


def build_survey(
    root: Path,
    params: SurveyParams,
    progress: ProgressFactory | None = None,
    registry: PostgresRegistry | None = None,
    datastore: str | None = None,
) -> Survey:
    """Create the demo survey in ``root``, which must be absent or empty, its Butler
    registry in SQLite beside it or in ``registry``, its datastore in ``root/repo`` or
    at ``datastore`` (a URI such as ``s3://bucket/demo``, which must hold no file).

    Everything is built in a temporary sibling directory and renamed into place at
    the end, so a failed or interrupted build leaves ``root`` as it was (and drops
    the registry schema it made, and the files it wrote to ``datastore``).
    """
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(
            f"{root} is not an empty directory",
            where=str(root),
            hint="choose a new directory, or remove the old survey first",
        )
    if datastore is not None:
        datastore = _empty_datastore(datastore)
    if registry is not None:
        registry.prepare()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    try:
        _build(Survey(staging), params, progress or no_bars, registry, datastore)
        if root.exists():
            root.rmdir()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if datastore is not None:
            _remove_files(datastore)
        if registry is not None:
            from ..db.postgres import drop_schema

            drop_schema(registry.url, registry.schema)
        raise
    return Survey(root)


def _empty_datastore(datastore: str) -> str:
    """``datastore`` as a directory URI; InputError if it holds a file already."""
    from lsst.resources import ResourcePath

    where = "--datastore"
    try:
        uri = ResourcePath(datastore, forceDirectory=True)
        held = _files_under(uri)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"cannot list the datastore root {datastore}: {first}",
            where=where,
            hint="check the URI, the bucket and the credentials (for s3://: "
            "S3_ENDPOINT_URL and the AWS credentials lsst-resources reads)",
        ) from None
    if held:
        raise InputError(
            f"the datastore root {uri} is not empty (it holds {held[0]}"
            + (f" and {len(held) - 1} more" if len(held) > 1 else "")
            + ")",
            where=where,
            hint="give a new prefix, or remove the old survey's files first",
        )
    return str(uri)


def _files_under(uri: Any) -> list[Any]:
    found: list[Any] = []
    try:
        for here, _dirs, files in uri.walk():
            found.extend(here.join(name) for name in files)
    except FileNotFoundError:
        return []
    return found


def _remove_files(datastore: str) -> None:
    """Remove what a failed build wrote under ``datastore`` (which was empty)."""
    from lsst.resources import ResourcePath

    for uri in _files_under(ResourcePath(datastore, forceDirectory=True)):
        try:
            uri.remove()
        except FileNotFoundError:
            continue


def _build(
    survey: Survey,
    params: SurveyParams,
    bar: ProgressFactory,
    registry: PostgresRegistry | None,
    datastore: str | None = None,
) -> None:
    truth = plan_survey(params)
    config = Config(REPO_CONFIG)
    if registry is not None:
        config.update(registry.butler_config())
    if datastore is not None:
        config["datastore", "root"] = datastore
    # The configuration keeps a datastore root given (makeRepo would force <butlerRoot>).
    Butler.makeRepo(str(survey.repo), config=config, forceConfigRoot=datastore is None)
    butler = Butler.from_config(str(survey.repo), writeable=True)
    try:
        regions = insert_dimensions(butler, params, truth)
        radius = params.focal_plane_deg * 1.2 + 0.01
        catalog = refcat_mod.generate(params, radius)
        refcat_mod.write_database(catalog, survey.refcat_db)
        _register_dataset_types(butler)
        _write_calibrations(butler, params, bar)
        _write_raws(butler, params, truth, catalog, bar)
        refcat_mod.write_shards(butler, survey.refcat_db, regions, REFCAT_RUN)
        butler.collections.register(SKYMAP_RUN)
        butler.put(skymap_definition(params), "skyMap", {"skymap": SKYMAP}, run=SKYMAP_RUN)
        butler.collections.register(DEFAULTS, CollectionType.CHAINED)
        butler.collections.redefine_chain(
            DEFAULTS, [RAW_RUN, CALIB_COLLECTION, REFCAT_RUN, SKYMAP_RUN]
        )
    finally:
        butler.close()
    survey.truth_path.write_text(truth.model_dump_json(indent=2))


def insert_dimensions(butler: Butler, params: SurveyParams, truth: SurveyTruth) -> list[Region]:
    reg = butler.registry
    reg.insertDimensionData(
        "instrument",
        {
            "name": INSTRUMENT,
            "visit_max": 1 << 20,
            "exposure_max": 1 << 20,
            "detector_max": 256,
            "visit_system": 0,
            "class_name": "skybatch.demo.DemoCam",
        },
    )
    reg.insertDimensionData(
        "physical_filter",
        *[{"instrument": INSTRUMENT, "name": pf, "band": b} for pf, b in FILTERS.items()],
    )
    reg.insertDimensionData(
        "detector",
        *[
            {
                "instrument": INSTRUMENT,
                "id": d,
                "full_name": f"D{d:03d}",
                "name_in_raft": f"S{d:02d}",
                "raft": "R00",
                "purpose": "SCIENCE",
            }
            for d in range(params.detectors)
        ],
    )
    reg.insertDimensionData(
        "visit_system", {"instrument": INSTRUMENT, "id": 0, "name": "one-to-one"}
    )
    days = sorted({v.day_obs for v in truth.visits})
    reg.insertDimensionData(
        "day_obs",
        *[
            {
                "instrument": INSTRUMENT,
                "id": d,
                "timespan": _day_obs_timespan(d),
            }
            for d in days
        ],
    )
    regions: list[Region] = []
    for i, v in enumerate(truth.visits):
        timespan = Timespan(Time(v.start, scale="tai"), Time(v.end, scale="tai"))
        group = f"demo-{v.visit}"
        common = {
            "instrument": INSTRUMENT,
            "physical_filter": v.physical_filter,
            "day_obs": v.day_obs,
        }
        reg.insertDimensionData("group", {"instrument": INSTRUMENT, "name": group})
        reg.insertDimensionData(
            "exposure",
            {
                **common,
                "id": v.visit,
                "obs_id": f"DC_{v.day_obs}_{v.visit:06d}",
                "group": group,
                "exposure_time": params.exposure_time_s,
                "dark_time": params.exposure_time_s,
                "observation_type": "science",
                "observation_reason": "science",
                "seq_num": i,
                "seq_start": i,
                "seq_end": i,
                "target_name": "demo_field",
                "science_program": "skybatch-demo",
                "tracking_ra": v.ra_deg,
                "tracking_dec": v.dec_deg,
                "sky_angle": v.rotation_deg,
                "azimuth": 0.0,
                "zenith_angle": 30.0,
                "has_simulated": True,
                "can_see_sky": True,
                "timespan": timespan,
            },
        )
        detector_regions = [
            _corners(simulate.detector_wcs(params, v, d), params.size, params.size)
            for d in range(params.detectors)
        ]
        vertices = [vx for r in detector_regions for vx in r.getVertices()]
        visit_region = ConvexPolygon.convexHull(vertices)
        regions.append(visit_region)
        reg.insertDimensionData(
            "visit",
            {
                **common,
                "id": v.visit,
                "name": f"DC_{v.visit:06d}",
                "seq_num": i,
                "exposure_time": params.exposure_time_s,
                "target_name": "demo_field",
                "observation_reason": "science",
                "science_program": "skybatch-demo",
                "azimuth": 0.0,
                "zenith_angle": 30.0,
                "region": visit_region,
                "timespan": timespan,
            },
        )
        reg.insertDimensionData(
            "visit_definition", {"instrument": INSTRUMENT, "exposure": v.visit, "visit": v.visit}
        )
        reg.insertDimensionData(
            "visit_system_membership",
            {"instrument": INSTRUMENT, "visit": v.visit, "visit_system": 0},
        )
        reg.insertDimensionData(
            "visit_detector_region",
            *[
                {"instrument": INSTRUMENT, "visit": v.visit, "detector": d, "region": r}
                for d, r in enumerate(detector_regions)
            ],
        )
    _insert_skymap(butler, params)
    return regions


def _day_obs_timespan(day_obs: int) -> Timespan:
    text = str(day_obs)
    begin = Time(f"{text[:4]}-{text[4:6]}-{text[6:]}T12:00:00", scale="tai")
    return Timespan(begin, begin + TimeDelta(1.0, format="jd"))


def _insert_skymap(butler: Butler, params: SurveyParams) -> None:
    definition = skymap_definition(params)
    tract = definition["tracts"][0]
    digest = hashlib.sha1(json.dumps(definition, sort_keys=True).encode()).digest()
    reg = butler.registry
    reg.insertDimensionData(
        "skymap",
        {
            "name": SKYMAP,
            "hash": digest,
            "tract_max": 1,
            "patch_nx_max": tract["nx"],
            "patch_ny_max": tract["ny"],
        },
    )
    n_patches = tract["nx"] * tract["ny"]
    patch_regions = []
    for p in range(n_patches):
        wcs, nx, ny = patch_wcs(definition, 0, p)
        patch_regions.append(_corners(wcs, nx, ny))
    tract_region = ConvexPolygon.convexHull([v for r in patch_regions for v in r.getVertices()])
    reg.insertDimensionData("tract", {"skymap": SKYMAP, "id": 0, "region": tract_region})
    reg.insertDimensionData(
        "patch",
        *[
            {
                "skymap": SKYMAP,
                "tract": 0,
                "id": p,
                "cell_x": p % tract["nx"],
                "cell_y": p // tract["nx"],
                "region": r,
            }
            for p, r in enumerate(patch_regions)
        ],
    )


def _register_dataset_types(butler: Butler) -> None:
    u = butler.dimensions
    for dt in (
        DatasetType("raw", ("instrument", "exposure", "detector"), "SkyImage", universe=u),
        DatasetType("bias", ("instrument", "detector"), "SkyImage", universe=u, isCalibration=True),
        DatasetType(
            "flat",
            ("instrument", "detector", "physical_filter"),
            "SkyImage",
            universe=u,
            isCalibration=True,
        ),
        DatasetType("skyMap", ("skymap",), "StructuredDataDict", universe=u),
    ):
        butler.registry.registerDatasetType(dt)


def _write_calibrations(butler: Butler, params: SurveyParams, bar: ProgressFactory) -> None:
    butler.collections.register(CALIB_COLLECTION, CollectionType.CALIBRATION)
    total = len(EPOCHS) * params.detectors * (1 + len(FILTERS))
    with bar("calibrations", total) as advance:
        for epoch_index, (epoch, begin, end) in enumerate(EPOCHS):
            run = f"{INSTRUMENT}/calib/{epoch}"
            butler.collections.register(run)
            refs = []
            for d in range(params.detectors):
                bias = simulate.bias_frame(params, epoch_index, d)
                refs.append(
                    butler.put(
                        simulate.calibration_image("bias", bias, epoch, d),
                        "bias",
                        {"instrument": INSTRUMENT, "detector": d},
                        run=run,
                    )
                )
                advance()
                for pf in FILTERS:
                    flat = simulate.flat_frame(params, epoch_index, d, pf)
                    refs.append(
                        butler.put(
                            simulate.calibration_image("flat", flat, epoch, d),
                            "flat",
                            {"instrument": INSTRUMENT, "detector": d, "physical_filter": pf},
                            run=run,
                        )
                    )
                    advance()
            timespan = Timespan(
                Time(begin, scale="tai"), Time(end, scale="tai") if end is not None else None
            )
            butler.registry.certify(CALIB_COLLECTION, refs, timespan)


def _write_raws(
    butler: Butler, params: SurveyParams, truth: SurveyTruth, catalog: Any, bar: ProgressFactory
) -> None:
    butler.collections.register(RAW_RUN)
    epochs = [e[0] for e in EPOCHS]
    with bar("raw images", len(truth.visits) * params.detectors) as advance:
        for v in truth.visits:
            for d in range(params.detectors):
                image = simulate.raw_image(params, v, d, epochs.index(v.epoch), catalog)
                butler.put(
                    image,
                    "raw",
                    {"instrument": INSTRUMENT, "exposure": v.visit, "detector": d},
                    run=RAW_RUN,
                )
                advance()
