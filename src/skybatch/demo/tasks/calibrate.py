"""Single-frame calibration: background, detection, measurement, matching, zero point.

Per visit + detector. Outputs the calibrated image (``calexp``, FITS), the source table
(``src``, parquet) and a small summary (``calexpSummary``) used by ``visitSummary``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table, vstack
from lsst.pex.config import Field
from lsst.pipe.base import (
    InputQuantizedConnection,
    OutputQuantizedConnection,
    PipelineTask,
    PipelineTaskConfig,
    PipelineTaskConnections,
    QuantumContext,
    Struct,
)
from lsst.pipe.base import connectionTypes as cT

from .. import measure
from ..image import MaskBit, SkyImage
from ..params import FILTERS

DIMENSIONS = ("instrument", "visit", "detector")


class CalibrateConnections(PipelineTaskConnections, dimensions=DIMENSIONS):
    exposure = cT.Input(
        doc="Output of isr for the visit's exposure.",
        name="postISRCCD",
        storageClass="SkyImage",
        dimensions=("instrument", "exposure", "detector"),
    )
    refCat = cT.PrerequisiteInput(
        doc="Reference catalog shards (HTM level 7) overlapping the detector.",
        name="ref_cat",
        storageClass="ArrowAstropy",
        dimensions=("htm7",),
        multiple=True,
    )
    calexp = cT.Output(
        doc="Background-subtracted, photometrically calibrated image.",
        name="calexp",
        storageClass="SkyImage",
        dimensions=DIMENSIONS,
    )
    sources = cT.Output(
        doc="Detected and measured sources matched to the reference catalog.",
        name="src",
        storageClass="ArrowAstropy",
        dimensions=DIMENSIONS,
    )
    summary = cT.Output(
        doc="PSF size, zero point and counts of this detector.",
        name="calexpSummary",
        storageClass="StructuredDataDict",
        dimensions=DIMENSIONS,
    )


class CalibrateConfig(PipelineTaskConfig, pipelineConnections=CalibrateConnections):
    detection_threshold = Field[float](doc="Detection threshold in sigma.", default=5.0)
    fwhm_guess_px = Field[float](doc="Initial PSF FWHM guess in pixels.", default=2.5)
    background_mesh_px = Field[int](doc="Background mesh size in pixels.", default=64)
    match_radius_arcsec = Field[float](doc="Reference match radius.", default=1.0)
    zero_point_min_snr = Field[float](doc="Minimum S/N of zero-point stars.", default=10.0)


class CalibrateTask(PipelineTask):
    """Detect, measure and photometrically calibrate one detector of one visit."""

    ConfigClass = CalibrateConfig
    config: CalibrateConfig
    _DefaultName = "calibrate"

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        data_id = butlerQC.quantum.dataId
        assert data_id is not None
        result = self.run(
            exposure=inputs["exposure"],
            refCat=inputs["refCat"],
            visit=int(data_id["visit"]),
            detector=int(data_id["detector"]),
        )
        butlerQC.put(result, outputRefs)

    def run(self, exposure: SkyImage, refCat: list[Table], visit: int, detector: int) -> Struct:
        cfg = self.config
        mask = exposure.mask_or_zeros().copy()
        variance = (
            exposure.variance if exposure.variance is not None else np.ones_like(exposure.image)
        )
        bkg = measure.background(exposure.image, mask, cfg.background_mesh_px)
        image = (exposure.image - bkg).astype(np.float32)
        n_cr = measure.repair_cosmic_rays(image, variance, mask)
        sources, fwhm = measure.measure_sources(
            image, variance, mask, cfg.fwhm_guess_px, cfg.detection_threshold
        )
        _mask_cosmic_rays(mask, sources)
        self.metadata["n_cosmic_ray_pixels"] = n_cr
        wcs = exposure.wcs
        ra, dec = wcs.all_pix2world(np.asarray(sources["x"]), np.asarray(sources["y"]), 0)
        sources["ra"], sources["dec"] = ra, dec
        band = FILTERS.get(str(exposure.header.get("FILTER")), "r")
        ref = (
            vstack(refCat) if refCat else Table({"id": [], "ra": [], "dec": [], f"{band}_mag": []})
        )
        idx, dist = measure.match_radec(
            ra, dec, np.asarray(ref["ra"]), np.asarray(ref["dec"]), cfg.match_radius_arcsec
        )
        matched = idx >= 0
        sources["ref_id"] = np.where(matched, np.asarray(ref["id"])[np.clip(idx, 0, None)], -1)
        ref_mag = np.asarray(ref[f"{band}_mag"], dtype=float)
        sources["ref_mag"] = np.where(matched, ref_mag[np.clip(idx, 0, None)], np.nan)
        sources["match_dist_arcsec"] = dist
        good = (
            matched
            & ~np.asarray(sources["saturated"])
            & ~np.asarray(sources["cosmic_ray"])
            & ~np.asarray(sources["edge"])
            & (np.asarray(sources["snr"]) > cfg.zero_point_min_snr)
            & (np.asarray(sources["ap_flux"]) > 0)
        )
        zero_point, zp_err = weighted_zero_point(
            np.asarray(sources["ref_mag"])[good],
            np.asarray(sources["ap_flux"])[good],
            np.asarray(sources["snr"])[good],
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            sources["mag"] = zero_point - 2.5 * np.log10(np.asarray(sources["ap_flux"]))
        header = dict(exposure.header)
        header.update(
            MAGZERO=zero_point,
            PSFFWHM=fwhm,
            BGMEAN=float(np.mean(bkg)),
            NSRC=len(sources),
            NMATCH=int(matched.sum()),
        )
        calexp = SkyImage(image=image, header=header, mask=mask, variance=variance)
        summary: dict[str, Any] = {
            "visit": visit,
            "detector": detector,
            "band": band,
            "psf_fwhm_px": fwhm,
            "psf_fwhm_arcsec": fwhm * _pixel_scale_arcsec(wcs),
            "zero_point": zero_point,
            "zero_point_err": zp_err,
            "n_zero_point_stars": int(good.sum()),
            "n_sources": len(sources),
            "n_matched": int(matched.sum()),
            "sky_adu": float(np.mean(bkg)),
        }
        self.metadata["zero_point"] = zero_point
        self.metadata["psf_fwhm_px"] = fwhm
        return Struct(calexp=calexp, sources=sources, summary=summary)


def weighted_zero_point(
    ref_mag: np.ndarray, flux: np.ndarray, snr: np.ndarray, clip: float = 3.0
) -> tuple[float, float | None]:
    """Inverse-variance weighted zero point with iterative sigma clipping."""
    if len(flux) == 0:
        return float("nan"), None
    zp = ref_mag + 2.5 * np.log10(flux)
    err = np.hypot(1.0857 / snr, 0.005)
    keep = np.ones(len(zp), dtype=bool)
    mean = float(np.median(zp))
    for _ in range(3):
        w = 1.0 / err[keep] ** 2
        mean = float(np.sum(w * zp[keep]) / np.sum(w))
        new_keep = np.abs(zp - mean) < clip * np.maximum(err, 0.01)
        if new_keep.sum() < 2 or (new_keep == keep).all():
            break
        keep = new_keep
    return mean, float(1.0 / np.sqrt(np.sum(1.0 / err[keep] ** 2)))


def _mask_cosmic_rays(mask: np.ndarray, sources: Table) -> None:
    ny, nx = mask.shape
    for row in sources[np.asarray(sources["cosmic_ray"], dtype=bool)]:
        x, y = round(float(row["x"])), round(float(row["y"]))
        mask[max(y - 2, 0) : min(y + 3, ny), max(x - 2, 0) : min(x + 3, nx)] |= int(MaskBit.CR)


def _pixel_scale_arcsec(wcs: Any) -> float:
    cd = wcs.pixel_scale_matrix
    return float(np.sqrt(abs(np.linalg.det(cd))) * 3600.0)
