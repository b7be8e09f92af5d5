"""Image measurement for the demo pipeline: background, detection, centroids, photometry.

Plain numpy/scipy algorithms, good enough to calibrate the synthetic survey to a few
millimagnitudes: a mesh background, matched-filter detection, Gaussian-weighted
(adaptive) moments for centroids and sizes, circular aperture fluxes with an analytic
Gaussian aperture correction, and positional matching on the unit sphere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator
from scipy.spatial import cKDTree

from .image import MaskBit

FWHM_PER_SIGMA = 2.3548


def background(image: np.ndarray, mask: np.ndarray, mesh: int = 64) -> np.ndarray:
    """Smooth background: clipped median per mesh cell, bilinearly interpolated."""
    ny, nx = image.shape
    mesh = max(16, min(mesh, ny, nx))
    ys = np.arange(0, ny, mesh)
    xs = np.arange(0, nx, mesh)
    grid = np.empty((len(ys), len(xs)))
    for j, y0 in enumerate(ys):
        for i, x0 in enumerate(xs):
            cell = image[y0 : y0 + mesh, x0 : x0 + mesh]
            good = cell[(mask[y0 : y0 + mesh, x0 : x0 + mesh] & MaskBit.SAT) == 0]
            grid[j, i] = _clipped_median(good) if good.size else np.nan
    if np.isnan(grid).all():
        return np.zeros_like(image)
    grid = np.where(np.isnan(grid), np.nanmedian(grid), grid)
    cy = ys + np.minimum(mesh, ny - ys) / 2 - 0.5
    cx = xs + np.minimum(mesh, nx - xs) / 2 - 0.5
    if len(cy) == 1 or len(cx) == 1:
        return np.full_like(image, float(np.median(grid)))
    interp = RegularGridInterpolator((cy, cx), grid, bounds_error=False, fill_value=None)
    yy, xx = np.mgrid[0:ny, 0:nx]
    return interp((yy, xx)).astype(image.dtype)


def _clipped_median(values: np.ndarray, nsigma: float = 3.0, iterations: int = 3) -> float:
    v = values.ravel()
    for _ in range(iterations):
        med = np.median(v)
        mad = 1.4826 * np.median(np.abs(v - med))
        if mad == 0:
            break
        v = v[np.abs(v - med) < nsigma * mad]
    return float(np.median(v))


def repair_cosmic_rays(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    min_fwhm_px: float = 1.5,
    nsigma: float = 6.0,
    safety: float = 0.6,
) -> int:
    """Find pixels sharper than the sharpest possible PSF, mask them CR and repair them.

    For each of the four pairs of opposite neighbours (horizontal, vertical and the two
    diagonals) a point source of FWHM >= ``min_fwhm_px`` keeps the pair's mean above a
    known fraction of the centre pixel. A pixel that stands above any of its pairs by
    more than that (with ``safety`` margin and noise allowance) is a cosmic ray. Works in
    place on a background-subtracted image; returns the number of CR pixels found.
    """
    sigma_psf = min_fwhm_px / FWHM_PER_SIGMA
    ratio_side = safety * math.exp(-1.0 / (2 * sigma_psf**2))
    ratio_diag = safety * math.exp(-2.0 / (2 * sigma_psf**2))
    noise = np.sqrt(np.clip(variance, 1e-12, None))
    p = np.pad(image, 1, mode="edge")
    pairs = (
        ((p[1:-1, :-2] + p[1:-1, 2:]) / 2, ratio_side),
        ((p[:-2, 1:-1] + p[2:, 1:-1]) / 2, ratio_side),
        ((p[:-2, :-2] + p[2:, 2:]) / 2, ratio_diag),
        ((p[:-2, 2:] + p[2:, :-2]) / 2, ratio_diag),
    )
    excess = image - 2.5 * noise
    candidate = np.zeros(image.shape, dtype=bool)
    for pair_mean, ratio in pairs:
        candidate |= excess * ratio > pair_mean + 2.5 * noise
    candidate &= image > nsigma * noise
    candidate &= (mask & MaskBit.SAT) == 0
    if not candidate.any():
        return 0
    grown = ndimage.binary_dilation(candidate, iterations=1)
    mask[grown] |= int(MaskBit.CR)
    # Replace with the median of the good pixels around each CR (5x5 box).
    labels, _n = ndimage.label(grown)
    for sl in ndimage.find_objects(labels):
        y0, y1 = max(sl[0].start - 2, 0), sl[0].stop + 2
        x0, x1 = max(sl[1].start - 2, 0), sl[1].stop + 2
        box = image[y0:y1, x0:x1]
        good = box[~grown[y0:y1, x0:x1]]
        fill = float(np.median(good)) if good.size else 0.0
        box[grown[y0:y1, x0:x1]] = fill
    return int(candidate.sum())


@dataclass
class Detection:
    x: float
    y: float
    peak: float
    npix: int
    saturated: bool


def detect(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    fwhm_px: float,
    threshold: float = 5.0,
) -> tuple[list[Detection], np.ndarray]:
    """Matched-filter detection above ``threshold`` sigma; returns peaks and footprint labels."""
    sigma = max(fwhm_px / FWHM_PER_SIGMA, 0.5)
    # Outside the image counts as no data (mode="constant"), so the kernel is truncated
    # at the borders; its squared sum there (a Gaussian of sigma/sqrt(2) over 4 pi
    # sigma^2) gives the smoothed noise pixel by pixel, and the threshold holds everywhere.
    smoothed = ndimage.gaussian_filter(image, sigma, mode="constant")
    kernel_sq = ndimage.gaussian_filter(
        np.ones(image.shape), sigma / math.sqrt(2), mode="constant"
    ) / (4 * math.pi * sigma**2)
    noise = np.sqrt(float(np.median(variance)) * kernel_sq)
    above = smoothed > threshold * noise
    labels, n = ndimage.label(above)
    if n == 0:
        return [], labels
    # Every local maximum above threshold is a source, so blended neighbours separate.
    peaks = above & (smoothed == ndimage.maximum_filter(smoothed, size=3, mode="nearest"))
    sizes = ndimage.sum_labels(np.ones_like(image), labels, np.arange(1, n + 1))
    sat = ndimage.maximum(((mask & MaskBit.SAT) != 0).astype(np.int8), labels, np.arange(1, n + 1))
    detections = []
    for y, x in np.argwhere(peaks):
        label = labels[y, x] - 1
        detections.append(
            Detection(
                float(x), float(y), float(smoothed[y, x]), int(sizes[label]), bool(sat[label])
            )
        )
    return detections, labels


def adaptive_moments(
    image: np.ndarray, x0: float, y0: float, sigma_guess: float, iterations: int = 8
) -> tuple[float, float, float]:
    """Gaussian-weighted centroid and intrinsic Gaussian sigma of a source."""
    ny, nx = image.shape
    half = math.ceil(4 * sigma_guess) + 2
    x_lo, x_hi = max(int(x0) - half, 0), min(int(x0) + half + 1, nx)
    y_lo, y_hi = max(int(y0) - half, 0), min(int(y0) + half + 1, ny)
    stamp = image[y_lo:y_hi, x_lo:x_hi]
    yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
    xc, yc, sw = x0, y0, sigma_guess
    m2 = sw**2
    for _ in range(iterations):
        w = np.exp(-((xx - xc) ** 2 + (yy - yc) ** 2) / (2 * sw**2)) * stamp
        total = w.sum()
        if total <= 0:
            return x0, y0, float("nan")
        xc = float((w * xx).sum() / total)
        yc = float((w * yy).sum() / total)
        m2 = float((w * ((xx - xc) ** 2 + (yy - yc) ** 2)).sum() / (2 * total))
        if not 0 < m2 < sw**2:
            return xc, yc, float("nan")
        # For a Gaussian weight, measured m2 = s^2 sw^2 / (s^2 + sw^2): invert for s^2.
        s2 = m2 * sw**2 / (sw**2 - m2)
        sw = math.sqrt(max(s2, 0.04))
    return xc, yc, math.sqrt(m2 * sw**2 / max(sw**2 - m2, 1e-6)) if m2 < sw**2 else float("nan")


def aperture_flux(
    image: np.ndarray, variance: np.ndarray, x: float, y: float, radius: float
) -> tuple[float, float]:
    """Sum within a circular aperture, pixels weighted by sub-sampled overlap (4x4)."""
    ny, nx = image.shape
    r = math.ceil(radius) + 1
    x_lo, x_hi = max(round(x) - r, 0), min(round(x) + r + 1, nx)
    y_lo, y_hi = max(round(y) - r, 0), min(round(y) + r + 1, ny)
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    yy, xx = np.mgrid[y_lo:y_hi, x_lo:x_hi]
    frac = np.zeros(xx.shape)
    for dy in sub:
        for dx in sub:
            frac += ((xx + dx - x) ** 2 + (yy + dy - y) ** 2) <= radius**2
    frac /= 16.0
    flux = float((frac * image[y_lo:y_hi, x_lo:x_hi]).sum())
    var = float((frac**2 * variance[y_lo:y_hi, x_lo:x_hi]).sum())
    return flux, math.sqrt(max(var, 0.0))


def gaussian_aperture_fraction(radius: float, sigma: float) -> float:
    return 1.0 - math.exp(-(radius**2) / (2 * sigma**2))


def measure_sources(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    fwhm_guess: float,
    threshold: float = 5.0,
    aperture_fwhm: float = 1.5,
) -> tuple[Table, float]:
    """Detect and measure sources; returns the source table and the PSF FWHM in pixels.

    Columns: x, y (0-based pixels), sigma_px, aperture flux and error (aperture radius
    ``aperture_fwhm`` x PSF FWHM, corrected to total with the Gaussian PSF model), snr,
    and flags saturated, cosmic_ray, edge.
    """
    detections, _ = detect(image, variance, mask, fwhm_guess, threshold)
    ny, nx = image.shape
    rows = []
    guess_sigma = fwhm_guess / FWHM_PER_SIGMA
    for det in detections:
        xc, yc, s = adaptive_moments(image, det.x, det.y, guess_sigma)
        rows.append((xc, yc, s, det.saturated, det.npix))
    if not rows:
        return _empty_sources(), float("nan")
    xs = np.array([r[0] for r in rows])
    ys = np.array([r[1] for r in rows])
    sig = np.array([r[2] for r in rows])
    saturated = np.array([r[3] for r in rows])
    # PSF size from bright, unsaturated, well-measured sources.
    candidates = (~saturated) & np.isfinite(sig) & (sig > 0.3 * guess_sigma)
    # The moments see the PSF convolved with the pixel (variance + 1/12 px^2): that
    # width is right for aperture sums, while the reported PSF size removes the pixel.
    psf_sigma = float(np.median(sig[candidates])) if candidates.sum() >= 3 else guess_sigma
    optical_sigma = math.sqrt(max(psf_sigma**2 - 1.0 / 12.0, 0.01))
    cosmic_ray = (~np.isfinite(sig)) | (sig < 0.6 * psf_sigma)
    radius = aperture_fwhm * psf_sigma * FWHM_PER_SIGMA
    edge = (xs < radius) | (ys < radius) | (xs > nx - 1 - radius) | (ys > ny - 1 - radius)
    ap_corr = gaussian_aperture_fraction(radius, psf_sigma)
    flux = np.empty(len(rows))
    flux_err = np.empty(len(rows))
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        f, e = aperture_flux(image, variance, x, y, radius)
        flux[i], flux_err[i] = f / ap_corr, e / ap_corr
    table = Table(
        {
            "x": xs,
            "y": ys,
            "sigma_px": sig,
            "ap_flux": flux,
            "ap_flux_err": flux_err,
            "snr": flux / np.where(flux_err > 0, flux_err, np.inf),
            "saturated": saturated,
            "cosmic_ray": cosmic_ray,
            "edge": edge,
        }
    )
    return table, optical_sigma * FWHM_PER_SIGMA


def _empty_sources() -> Table:
    names = ("x", "y", "sigma_px", "ap_flux", "ap_flux_err", "snr")
    cols: dict[str, np.ndarray] = {n: np.zeros(0) for n in names}
    cols.update({f: np.zeros(0, dtype=bool) for f in ("saturated", "cosmic_ray", "edge")})
    return Table(cols)


def match_radec(
    ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour of each (ra1, dec1) in (ra2, dec2): index (-1 if none) and distance."""

    def xyz(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        r, d = np.deg2rad(ra), np.deg2rad(dec)
        return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])

    if len(ra1) == 0 or len(ra2) == 0:
        return np.full(len(ra1), -1), np.full(len(ra1), np.inf)
    chord = 2 * math.sin(math.radians(radius_arcsec / 3600) / 2)
    dist, idx = cKDTree(xyz(ra2, dec2)).query(xyz(ra1, dec1), distance_upper_bound=chord)
    idx = np.where(np.isfinite(dist), idx, -1)
    arcsec = np.degrees(2 * np.arcsin(np.clip(dist / 2, 0, 1))) * 3600
    return idx, np.where(np.isfinite(dist), arcsec, np.inf)
