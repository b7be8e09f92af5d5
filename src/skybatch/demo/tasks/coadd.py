"""Coaddition: resample calibrated images onto a patch grid and stack (per tract+patch+band)."""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table
from lsst.daf.butler import DeferredDatasetHandle
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
from scipy import ndimage

from .. import measure
from ..image import BAD_FOR_STACK, MaskBit, SkyImage
from ..skymap import patch_wcs

DIMENSIONS = ("skymap", "tract", "patch", "band")


class CoaddConnections(PipelineTaskConnections, dimensions=DIMENSIONS):
    calexps = cT.Input(
        doc="Calibrated images overlapping the patch in this band.",
        name="calexp",
        storageClass="SkyImage",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
        deferLoad=True,
    )
    skyMap = cT.Input(
        doc="Skymap definition (tract and patch geometry).",
        name="skyMap",
        storageClass="StructuredDataDict",
        dimensions=("skymap",),
    )
    coadd = cT.Output(
        doc="Stacked image on the patch grid, in nJy-based units (zero point COADDZP).",
        name="deepCoadd",
        storageClass="SkyImage",
        dimensions=DIMENSIONS,
    )
    coaddSources = cT.Output(
        doc="Sources detected and measured on the coadd.",
        name="deepCoadd_src",
        storageClass="ArrowAstropy",
        dimensions=DIMENSIONS,
    )


class CoaddConfig(PipelineTaskConfig, pipelineConnections=CoaddConnections):
    zero_point = Field[float](doc="Zero point of the coadd (31.4 is nJy).", default=31.4)
    detection_threshold = Field[float](doc="Detection threshold on the coadd.", default=5.0)


class CoaddTask(PipelineTask):
    """Inverse-variance weighted mean of the resampled, flux-scaled inputs."""

    ConfigClass = CoaddConfig
    config: CoaddConfig
    _DefaultName = "coadd"

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
            calexps=inputs["calexps"],
            skyMap=inputs["skyMap"],
            tract=int(data_id["tract"]),
            patch=int(data_id["patch"]),
            band=str(data_id["band"]),
        )
        butlerQC.put(result, outputRefs)

    def run(
        self,
        calexps: list[DeferredDatasetHandle],
        skyMap: dict[str, Any],
        tract: int,
        patch: int,
        band: str,
    ) -> Struct:
        wcs, nx, ny = patch_wcs(skyMap, tract, patch)
        yy, xx = np.mgrid[0:ny, 0:nx]
        ra, dec = wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
        sum_w = np.zeros(nx * ny)
        sum_wi = np.zeros(nx * ny)
        fwhms: list[float] = []
        used: list[str] = []
        for handle in calexps:
            image: SkyImage = handle.get()
            zp = float(image.header.get("MAGZERO", np.nan))
            if not np.isfinite(zp):
                self.log.warning("Skipping %s: no photometric calibration", handle.dataId)
                continue
            x, y = image.wcs.all_world2pix(ra, dec, 0)
            ih, iw = image.shape
            inside = (x > -0.5) & (x < iw - 0.5) & (y > -0.5) & (y < ih - 0.5)
            if not inside.any():
                continue
            scale = 10 ** (0.4 * (self.config.zero_point - zp))
            coords = np.vstack([y[inside], x[inside]])
            values = ndimage.map_coordinates(image.image, coords, order=1, mode="nearest") * scale
            bad_plane = (image.mask_or_zeros() & int(BAD_FOR_STACK)) != 0
            bad = ndimage.map_coordinates(bad_plane.astype(np.float32), coords, order=1) > 0
            var = float(np.median(image.variance)) if image.variance is not None else 1.0
            weight = np.where(bad, 0.0, 1.0 / (var * scale**2))
            sum_w[inside] += weight
            sum_wi[inside] += weight * values
            fwhms.append(float(image.header.get("PSFFWHM", 2.5)))
            used.append(f"{handle.dataId['visit']}/{handle.dataId['detector']}")
        covered = sum_w > 0
        stacked = np.where(covered, sum_wi / np.where(covered, sum_w, 1.0), 0.0).reshape(ny, nx)
        variance = np.where(covered, 1.0 / np.where(covered, sum_w, 1.0), 0.0).reshape(ny, nx)
        mask = np.where(covered.reshape(ny, nx), 0, int(MaskBit.NO_DATA)).astype(np.int32)
        header: dict[str, Any] = {
            "TRACT": tract,
            "PATCH": patch,
            "BAND": band,
            "COADDZP": self.config.zero_point,
            "NINPUTS": len(used),
            "BUNIT": "nJy" if abs(self.config.zero_point - 31.4) < 1e-6 else "scaled",
        }
        coadd = SkyImage(
            image=stacked.astype(np.float32),
            header=header,
            mask=mask,
            variance=variance.astype(np.float32),
        )
        coadd.set_wcs(wcs)
        sources = self._measure(coadd, float(np.median(fwhms)) if fwhms else 2.5)
        self.metadata["n_inputs"] = len(used)
        return Struct(coadd=coadd, coaddSources=sources)

    def _measure(self, coadd: SkyImage, fwhm: float) -> Table:
        assert coadd.variance is not None
        good_var = coadd.variance[coadd.variance > 0]
        variance = np.where(
            coadd.variance > 0, coadd.variance, float(np.median(good_var)) if good_var.size else 1.0
        )
        sources, _ = measure.measure_sources(
            coadd.image, variance, coadd.mask_or_zeros(), fwhm, self.config.detection_threshold
        )
        ra, dec = coadd.wcs.all_pix2world(np.asarray(sources["x"]), np.asarray(sources["y"]), 0)
        sources["ra"], sources["dec"] = ra, dec
        with np.errstate(invalid="ignore", divide="ignore"):
            sources["mag"] = self.config.zero_point - 2.5 * np.log10(np.asarray(sources["ap_flux"]))
        return sources
