"""Parameters and ground truth of a demo survey.

``SurveyParams`` is what the operator chooses (``skybatch demo init`` options);
``plan_survey`` derives every visit's pointing, filter, seeing, zero point and
calibration epoch from it deterministically (same seed, same survey). The truth is
written beside the repository as ``truth.json`` so tests can check the science.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
from pydantic import BaseModel, Field

INSTRUMENT = "DemoCam"
SKYMAP = "demo_skymap"
FILTERS = {"DemoCam-g": "g", "DemoCam-r": "r"}
#: Calibration epochs: (name, validity begin, validity end); the last one is open-ended.
EPOCHS = (
    ("epoch1", datetime(2026, 2, 20, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)),
    ("epoch2", datetime(2026, 3, 8, tzinfo=UTC), None),
)
NIGHTS = (datetime(2026, 3, 1, 3, 0, tzinfo=UTC), datetime(2026, 3, 15, 3, 0, tzinfo=UTC))


class SurveyParams(BaseModel):
    """What a demo survey looks like; every field has a `skybatch demo init` option."""

    visits: int = Field(6, ge=1, le=10_000, description="number of visits (one exposure each)")
    detectors: int = Field(4, ge=1, le=189, description="detectors in the focal plane")
    size: int = Field(256, ge=64, le=8192, description="detector width and height in pixels")
    seed: int = Field(42, description="random seed; the same seed gives the same survey")
    pixel_scale_arcsec: float = Field(0.5, gt=0)
    ra_deg: float = Field(150.0, ge=0, lt=360)
    dec_deg: float = Field(2.0, ge=-80, le=80)
    exposure_time_s: float = Field(30.0, gt=0)
    sky_adu: float = Field(300.0, gt=0, description="sky level in ADU per pixel")
    read_noise_adu: float = Field(5.0, ge=0)
    zero_point: float = Field(31.0, description="mean injected zero point (mag for 1 ADU)")
    saturation_adu: float = Field(60_000.0, gt=0)
    star_density_deg2: float = Field(120_000.0, gt=0, description="stars per deg2, 15-25 mag")
    cosmic_rays_per_detector: int = Field(4, ge=0)
    patch_size: int = Field(256, ge=32, description="patch width and height in pixels")

    @property
    def layout(self) -> tuple[int, int]:
        """Detector grid (columns, rows) in the focal plane."""
        cols = math.ceil(math.sqrt(self.detectors))
        return cols, math.ceil(self.detectors / cols)

    @property
    def gap(self) -> int:
        return max(4, self.size // 16)

    def detector_offset(self, detector: int) -> tuple[float, float]:
        """Pixel offset of a detector's (0, 0) pixel from the focal-plane centre."""
        cols, rows = self.layout
        col, row = detector % cols, detector // cols
        pitch = self.size + self.gap
        return (col - (cols - 1) / 2) * pitch - self.size / 2, (row - (rows - 1) / 2) * pitch - (
            self.size / 2
        )

    @property
    def focal_plane_deg(self) -> float:
        cols, rows = self.layout
        pitch = self.size + self.gap
        return max(cols, rows) * pitch * self.pixel_scale_arcsec / 3600.0


class VisitTruth(BaseModel):
    """What was injected into one visit."""

    visit: int
    physical_filter: str
    band: str
    ra_deg: float
    dec_deg: float
    rotation_deg: float
    fwhm_px: float
    zero_point: float
    epoch: str
    start: datetime
    end: datetime
    day_obs: int


class SurveyTruth(BaseModel):
    params: SurveyParams
    visits: list[VisitTruth]
    epochs: list[str]


def plan_survey(params: SurveyParams) -> SurveyTruth:
    """Choose each visit's pointing, filter, seeing, transparency and time."""
    rng = np.random.default_rng(params.seed)
    dither = params.focal_plane_deg * 0.15
    first_half = math.ceil(params.visits / 2)
    visits: list[VisitTruth] = []
    for i in range(params.visits):
        epoch_index = 0 if i < first_half else 1
        night = NIGHTS[epoch_index]
        start = night + timedelta(seconds=120 * (i if epoch_index == 0 else i - first_half))
        physical_filter = list(FILTERS)[i % len(FILTERS)]
        cos_dec = math.cos(math.radians(params.dec_deg))
        visits.append(
            VisitTruth(
                visit=1000 + i,
                physical_filter=physical_filter,
                band=FILTERS[physical_filter],
                ra_deg=params.ra_deg + float(rng.uniform(-dither, dither)) / cos_dec,
                dec_deg=params.dec_deg + float(rng.uniform(-dither, dither)),
                rotation_deg=float(rng.uniform(-2.0, 2.0)),
                fwhm_px=float(rng.uniform(1.8, 3.6)),
                zero_point=params.zero_point + float(rng.normal(0.0, 0.08)),
                epoch=EPOCHS[epoch_index][0],
                start=start,
                end=start + timedelta(seconds=params.exposure_time_s),
                day_obs=int((night - timedelta(hours=12)).strftime("%Y%m%d")),
            )
        )
    return SurveyTruth(params=params, visits=visits, epochs=[e[0] for e in EPOCHS])


def limiting_magnitude(
    params: SurveyParams, fwhm_px: float, zero_point: float, snr: float
) -> float:
    """Magnitude of a point source detected at ``snr`` in an optimal (PSF) aperture."""
    sigma = fwhm_px / 2.3548
    npix = 4.0 * math.pi * sigma**2
    noise_per_pixel_sq = params.sky_adu + params.read_noise_adu**2
    # Solve F**2 = snr**2 * (F + npix * noise^2) for F.
    b = snr**2
    flux = (b + math.sqrt(b**2 + 4 * b * npix * noise_per_pixel_sq)) / 2
    return zero_point - 2.5 * math.log10(flux)


def saturation_magnitude(params: SurveyParams, fwhm_px: float, zero_point: float) -> float:
    """Brightest magnitude whose peak pixel stays below saturation."""
    sigma = fwhm_px / 2.3548
    peak_fraction = 1.0 / (2 * math.pi * sigma**2)
    max_flux = (params.saturation_adu - params.sky_adu - 1500.0) / peak_fraction
    return zero_point - 2.5 * math.log10(max_flux)
