"""Science metadata of output files (seed step 11.6), chosen by storage class.

Extractors are plugins: :class:`MetadataExtractor` subclasses published in the
entry-point group ``skybatch.metadata_extractors`` (the built-in ones ship there too),
checked against the ABC when loaded and held in a plain :class:`ExtractorRegistry`
passed to whoever needs it. Until the entry points are installed the built-ins are
used. Extractors read as little as possible: the FITS primary header, the parquet
footer; a file the job just wrote must not be read twice more to describe it.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from skybatch.errors import ConfigError

__all__ = [
    "BUILTIN_EXTRACTORS",
    "ENTRY_POINT_GROUP",
    "ExtractorRegistry",
    "FitsHeaderExtractor",
    "MetadataExtractor",
    "ParquetStatsExtractor",
]

_log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "skybatch.metadata_extractors"

BUILTIN_EXTRACTORS: dict[str, str] = {
    "fits_header": "skybatch.job.metadata:FitsHeaderExtractor",
    "parquet_stats": "skybatch.job.metadata:ParquetStatsExtractor",
}
"""The extractors skybatch ships, as entry-point values (used until the group is installed)."""


class MetadataExtractor(ABC):
    """Describes files of some storage classes with a small JSON-ready dictionary."""

    #: Butler storage class names this extractor handles.
    storage_classes: ClassVar[frozenset[str]]

    @abstractmethod
    def extract(self, path: Path) -> dict[str, Any]:
        """Science metadata of the file at ``path`` (JSON-ready values only)."""


class FitsHeaderExtractor(MetadataExtractor):
    """Selected primary-header keys of images (exposure, photometry, provenance, sky)."""

    storage_classes: ClassVar[frozenset[str]] = frozenset({"SkyImage"})
    KEYS: ClassVar[tuple[str, ...]] = (
        "EXPTIME",
        "FILTER",
        "MAGZERO",
        "PSFFWHM",
        "BGMEAN",
        "NSRC",
        "NMATCH",
        "BIASEPO",
        "FLATEPO",
        "COADDZP",
        "NINPUTS",
        "TRACT",
        "PATCH",
        "BAND",
    )

    def extract(self, path: Path) -> dict[str, Any]:
        from astropy.io import fits

        header = fits.getheader(path, 0)
        return {key: _json_value(header[key]) for key in self.KEYS if key in header}


class ParquetStatsExtractor(MetadataExtractor):
    """Row count and per numeric column min/max, from the parquet footer statistics."""

    storage_classes: ClassVar[frozenset[str]] = frozenset(
        {"ArrowAstropy", "ArrowTable", "ArrowNumpy", "ArrowNumpyDict", "DataFrame"}
    )

    def extract(self, path: Path) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata  # the footer only; no column data is read
        schema = meta.schema.to_arrow_schema()
        numeric = {
            f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
        }
        ranges: dict[str, list[Any]] = {}
        for group in range(meta.num_row_groups):
            row_group = meta.row_group(group)
            for index in range(row_group.num_columns):
                column = row_group.column(index)
                name = column.path_in_schema
                stats = column.statistics
                if name not in numeric or stats is None or not stats.has_min_max:
                    continue
                low, high = _json_value(stats.min), _json_value(stats.max)
                if low is None or high is None:
                    continue
                if name in ranges:
                    low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
                ranges[name] = [low, high]
        columns = {name: {"min": lo, "max": hi} for name, (lo, hi) in sorted(ranges.items())}
        return {"n_rows": meta.num_rows, "columns": columns}


class ExtractorRegistry:
    """Extractors by storage class; a later extractor for the same class wins.

    Args:
        extractors: Instances to register; production code uses :meth:`default`.
    """

    def __init__(self, extractors: Iterable[MetadataExtractor] = ()) -> None:
        self._by_class: dict[str, MetadataExtractor] = {}
        for extractor in extractors:
            self.register(extractor)

    @classmethod
    def default(cls) -> ExtractorRegistry:
        """Installed extractors, or the built-in ones if the entry points are not installed."""
        found = list(entry_points(group=ENTRY_POINT_GROUP))
        if not found:
            found = [
                EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
                for name, value in BUILTIN_EXTRACTORS.items()
            ]
        return cls.load(found)

    @classmethod
    def load(cls, found: Iterable[EntryPoint]) -> ExtractorRegistry:
        """Load and check the extractors named by entry points (ConfigError on a bad one)."""
        return cls(_load(ep) for ep in found)

    def register(self, extractor: MetadataExtractor) -> None:
        if not isinstance(extractor, MetadataExtractor):
            raise ConfigError(
                f"{extractor!r} is not a MetadataExtractor",
                where=type(extractor).__qualname__,
                hint="metadata extractors subclass skybatch.job.metadata.MetadataExtractor",
            )
        for name in extractor.storage_classes:
            self._by_class[name] = extractor

    def storage_classes(self) -> list[str]:
        return sorted(self._by_class)

    def get(self, storage_class: str) -> MetadataExtractor | None:
        return self._by_class.get(storage_class)

    def extract(self, storage_class: str, path: Path) -> dict[str, Any]:
        """Metadata of ``path``; ``{}`` for unknown storage classes.

        A file an extractor cannot read does not fail the job (the file itself was
        written and verified); the problem is logged and ``{}`` returned.
        """
        extractor = self.get(storage_class)
        if extractor is None:
            return {}
        try:
            return extractor.extract(path)
        except Exception as exc:
            _log.warning(
                "%s could not describe %s (%s): %s: %s",
                type(extractor).__name__,
                path,
                storage_class,
                type(exc).__name__,
                exc,
            )
            return {}


def _load(ep: EntryPoint) -> MetadataExtractor:
    where = f"entry point {ep.name} = {ep.value} (group {ep.group})"
    hint = "fix or uninstall the package that provides this metadata extractor"
    try:
        cls = ep.load()
    except Exception as exc:
        raise ConfigError(
            f"cannot load metadata extractor {ep.name!r}: {type(exc).__name__}: {exc}",
            where=where,
            hint=hint,
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, MetadataExtractor)):
        raise ConfigError(f"{cls!r} is not a MetadataExtractor subclass", where=where, hint=hint)
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ConfigError(
            f"{cls.__qualname__} does not implement {missing}", where=where, hint=hint
        )
    if not isinstance(getattr(cls, "storage_classes", None), frozenset):
        raise ConfigError(f"{cls.__qualname__} declares no storage_classes", where=where, hint=hint)
    return cls()


def _json_value(value: Any) -> Any:
    """A FITS/parquet scalar as a JSON value; NaN and infinities become None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
