"""Synthetic DemoCam images: raw exposures and master calibrations.

raw = bias(epoch, detector) + flat(epoch, detector, filter) * (sky + stars) + noise,
clipped at the saturation level, with a few cosmic rays. Stars come from the
reference catalog through the visit's WCS with a Gaussian PSF integrated over pixels.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from .image import SkyImage, tan_wcs
from .params import SurveyParams, VisitTruth

_SQRT2 = math.sqrt(2.0)
_erf = np.vectorize(math.erf, otypes=[float])


def detector_wcs(params: SurveyParams, visit: VisitTruth, detector: int) -> WCS:
    """The WCS of one detector in one visit: one tangent plane per visit."""
    dx, dy = params.detector_offset(detector)
    # FITS CRPIX is 1-based: the boresight sits at pixel (-dx, -dy) (0-based).
    return tan_wcs(
        visit.ra_deg,
        visit.dec_deg,
        (1.0 - dx, 1.0 - dy),
        params.pixel_scale_arcsec,
        visit.rotation_deg,
    )


def bias_frame(params: SurveyParams, epoch_index: int, detector: int) -> np.ndarray:
    ny = nx = params.size
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    level = 1000.0 + 20.0 * detector + 150.0 * epoch_index
    pattern = 0.05 * (1 + epoch_index) * x + 8.0 * np.sin(y / (9.0 + 4 * epoch_index))
    return (level + pattern).astype(np.float32)


def flat_frame(
    params: SurveyParams, epoch_index: int, detector: int, physical_filter: str
) -> np.ndarray:
    """A normalised flat: vignetting, an epoch-dependent tilt and pixel-to-pixel response."""
    ny = nx = params.size
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    dx, dy = params.detector_offset(detector)
    fx, fy = x + dx, y + dy  # focal-plane pixel coordinates
    r2 = (fx**2 + fy**2) / (params.size * max(params.layout)) ** 2
    tilt = (0.06 if epoch_index else -0.04) * (fx / (params.size * max(params.layout)))
    band_term = 0.03 if physical_filter.endswith("g") else 0.0
    rng = np.random.default_rng(params.seed * 1000 + 17 * detector + 3 * epoch_index)
    pixel = rng.normal(1.0, 0.01, size=(ny, nx))
    flat = (1.0 - (0.15 + band_term) * r2 + tilt) * pixel
    return (flat / flat.mean()).astype(np.float32)


def render_stars(
    shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, fluxes: np.ndarray, fwhm_px: float
) -> np.ndarray:
    """Pixel-integrated Gaussian PSFs (flux-conserving to 1e-4 inside the stamp)."""
    ny, nx = shape
    out = np.zeros(shape, dtype=np.float64)
    sigma = fwhm_px / 2.3548
    half = math.ceil(5 * sigma) + 1
    for x0, y0, flux in zip(xs, ys, fluxes, strict=True):
        ix, iy = round(x0), round(y0)
        x_lo, x_hi = max(ix - half, 0), min(ix + half + 1, nx)
        y_lo, y_hi = max(iy - half, 0), min(iy + half + 1, ny)
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        xe = np.arange(x_lo, x_hi + 1) - 0.5 - x0
        ye = np.arange(y_lo, y_hi + 1) - 0.5 - y0
        px = np.diff(0.5 * _erf(xe / (_SQRT2 * sigma)))
        py = np.diff(0.5 * _erf(ye / (_SQRT2 * sigma)))
        out[y_lo:y_hi, x_lo:x_hi] += flux * np.outer(py, px)
    return out


def stars_on_detector(
    refcat: Table, wcs: WCS, size: int, band: str, margin: float = 20.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel positions (0-based) and magnitudes of catalog stars that touch the detector."""
    xs, ys = wcs.all_world2pix(np.asarray(refcat["ra"]), np.asarray(refcat["dec"]), 0)
    keep = (xs > -margin) & (xs < size + margin) & (ys > -margin) & (ys < size + margin)
    return xs[keep], ys[keep], np.asarray(refcat[f"{band}_mag"])[keep]


def raw_image(
    params: SurveyParams,
    visit: VisitTruth,
    detector: int,
    epoch_index: int,
    refcat: Table,
) -> SkyImage:
    """One raw exposure of one detector, with its header."""
    shape = (params.size, params.size)
    wcs = detector_wcs(params, visit, detector)
    xs, ys, mags = stars_on_detector(refcat, wcs, params.size, visit.band)
    fluxes = 10 ** (-0.4 * (mags - visit.zero_point))
    signal = params.sky_adu + render_stars(shape, xs, ys, fluxes, visit.fwhm_px)
    signal *= flat_frame(params, epoch_index, detector, visit.physical_filter)
    rng = np.random.default_rng([params.seed, visit.visit, detector])
    data = rng.poisson(np.clip(signal, 0, None)).astype(np.float64)
    data += rng.normal(0.0, params.read_noise_adu, size=shape)
    data += _cosmic_rays(shape, params.cosmic_rays_per_detector, rng)
    data += bias_frame(params, epoch_index, detector)
    data = np.clip(data, 0, params.saturation_adu)
    header: dict[str, object] = {
        "INSTRUME": "DemoCam",
        "DETECTOR": detector,
        "EXPID": visit.visit,
        "FILTER": visit.physical_filter,
        "EXPTIME": params.exposure_time_s,
        "DATE-OBS": visit.start.strftime("%Y-%m-%dT%H:%M:%S"),
        "SATURATE": params.saturation_adu,
        "GAIN": 1.0,
        "RDNOISE": params.read_noise_adu,
        "IMGTYPE": "science",
    }
    image = SkyImage(image=data.astype(np.float32), header=header)
    image.set_wcs(wcs)
    return image


def _cosmic_rays(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Short, sharp tracks a few pixels long: much narrower than any PSF."""
    ny, nx = shape
    out = np.zeros(shape)
    for _ in range(count):
        x, y = int(rng.integers(5, nx - 5)), int(rng.integers(5, ny - 5))
        step = [(1, 0), (0, 1), (1, 1)][int(rng.integers(0, 3))]
        for k in range(int(rng.integers(1, 4))):
            out[y + k * step[1], x + k * step[0]] += float(rng.uniform(3000, 15000))
    return out


def calibration_image(kind: str, data: np.ndarray, epoch: str, detector: int) -> SkyImage:
    header: dict[str, object] = {
        "INSTRUME": "DemoCam",
        "DETECTOR": detector,
        "OBSTYPE": kind.upper(),
        "CALEPOCH": epoch,
    }
    return SkyImage(image=data, header=header)
