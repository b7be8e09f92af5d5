"""In-memory image type of the demo pipeline (storage class ``SkyImage``)."""

from __future__ import annotations

import dataclasses
import enum
import warnings
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning


class MaskBit(enum.IntFlag):
    """Pixel mask planes; stored as the integer MASK extension."""

    SAT = 1  # saturated in the raw data
    CR = 2  # cosmic ray
    EDGE = 4  # near the detector edge
    NO_DATA = 8  # no input (coadd pixels with no coverage)
    DETECTED = 16  # inside a detection footprint


BAD_FOR_STACK = MaskBit.SAT | MaskBit.CR | MaskBit.NO_DATA
_WCS_KEY_PREFIXES = ("CRPIX", "CRVAL", "CD1_", "CD2_", "CDELT", "CTYPE", "CUNIT", "PC1_", "PC2_")


@dataclasses.dataclass
class SkyImage:
    """An image with optional mask and variance planes and a FITS header.

    The header carries the WCS (FITS keywords) and processing metadata, so a
    file on disk is self-describing for any FITS reader.
    """

    image: np.ndarray
    header: dict[str, Any] = dataclasses.field(default_factory=dict)
    mask: np.ndarray | None = None
    variance: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        ny, nx = self.image.shape
        return int(ny), int(nx)

    @property
    def wcs(self) -> WCS:
        """The celestial WCS defined by the header keywords."""
        hdr = fits.Header()
        for key, value in self.header.items():
            if key.startswith(_WCS_KEY_PREFIXES) or key == "WCSAXES":
                hdr[key] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(hdr, naxis=2)

    def set_wcs(self, wcs: WCS) -> None:
        """Replace the WCS keywords of the header with those of ``wcs``."""
        for key in list(self.header):
            if key.startswith(_WCS_KEY_PREFIXES):
                del self.header[key]
        for card in wcs.to_header().cards:
            if card.keyword in ("WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2") or (
                card.keyword.startswith(("CRPIX", "CRVAL", "CD", "PC", "CDELT"))
            ):
                self.header[card.keyword] = card.value

    def mask_or_zeros(self) -> np.ndarray:
        if self.mask is None:
            return np.zeros(self.image.shape, dtype=np.int32)
        return self.mask

    # -- FITS serialisation -------------------------------------------------
    def to_hdulist(self) -> fits.HDUList:
        primary = fits.PrimaryHDU()
        for key, value in self.header.items():
            if isinstance(value, float) and not np.isfinite(value):
                value = str(value)  # FITS headers cannot hold NaN or infinity
            primary.header[key] = value
        hdus: list[Any] = [primary, fits.ImageHDU(self.image.astype(np.float32), name="IMAGE")]
        if self.mask is not None:
            hdus.append(fits.ImageHDU(self.mask.astype(np.int32), name="MASK"))
        if self.variance is not None:
            hdus.append(fits.ImageHDU(self.variance.astype(np.float32), name="VARIANCE"))
        return fits.HDUList(hdus)

    @classmethod
    def from_fits(cls, path: str) -> SkyImage:
        with fits.open(path, memmap=False) as hdul:
            header = {
                card.keyword: card.value
                for card in hdul[0].header.cards
                if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "")
                and not card.keyword.startswith("NAXIS")
            }
            names = {hdu.name for hdu in hdul}
            image = np.asarray(hdul["IMAGE"].data, dtype=np.float32)
            mask = np.asarray(hdul["MASK"].data, dtype=np.int32) if "MASK" in names else None
            variance = (
                np.asarray(hdul["VARIANCE"].data, dtype=np.float32) if "VARIANCE" in names else None
            )
        return cls(image=image, header=header, mask=mask, variance=variance)


def tan_wcs(
    ra_deg: float, dec_deg: float, crpix: tuple[float, float], scale_arcsec: float, rot_deg: float
) -> WCS:
    """A gnomonic (TAN) WCS; ``crpix`` is 1-based as in FITS, rotation east of north."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = list(crpix)
    scale = scale_arcsec / 3600.0
    theta = np.deg2rad(rot_deg)
    c, s = np.cos(theta), np.sin(theta)
    # RA increases to the east (left), so the x axis is flipped.
    wcs.wcs.cd = np.array([[-scale * c, scale * s], [scale * s, scale * c]])
    return wcs
