"""Butler formatter for :class:`~skybatch.demo.image.SkyImage` as multi-extension FITS."""

from __future__ import annotations

from typing import Any

from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

from .image import SkyImage


class SkyImageFormatter(FormatterV2):
    """Read and write ``SkyImage`` datasets as FITS (primary header + IMAGE/MASK/VARIANCE)."""

    default_extension = ".fits"
    supported_extensions = frozenset({".fits"})
    unsupported_parameters = None
    can_read_from_local_file = True

    def read_from_local_file(
        self, path: str, component: str | None = None, expected_size: int = -1
    ) -> Any:
        return SkyImage.from_fits(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        if not isinstance(in_memory_dataset, SkyImage):
            raise TypeError(f"SkyImageFormatter cannot write {type(in_memory_dataset)!r}")
        in_memory_dataset.to_hdulist().writeto(uri.ospath, overwrite=True)
