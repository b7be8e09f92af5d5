"""Instrument signature removal: bias, flat and saturation mask (per exposure + detector)."""

from __future__ import annotations

from typing import Any

import numpy as np
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

from ..image import MaskBit, SkyImage

DIMENSIONS = ("instrument", "exposure", "detector")


class IsrConnections(PipelineTaskConnections, dimensions=DIMENSIONS):
    raw = cT.Input(
        doc="Raw exposure of one detector.",
        name="raw",
        storageClass="SkyImage",
        dimensions=DIMENSIONS,
    )
    bias = cT.PrerequisiteInput(
        doc="Master bias valid at the time of the exposure.",
        name="bias",
        storageClass="SkyImage",
        dimensions=("instrument", "detector"),
        isCalibration=True,
    )
    flat = cT.PrerequisiteInput(
        doc="Master flat of the exposure's filter valid at the time of the exposure.",
        name="flat",
        storageClass="SkyImage",
        dimensions=("instrument", "detector", "physical_filter"),
        isCalibration=True,
    )
    postIsr = cT.Output(
        doc="Bias-subtracted, flat-fielded image with mask and variance planes.",
        name="postISRCCD",
        storageClass="SkyImage",
        dimensions=DIMENSIONS,
    )


class IsrConfig(PipelineTaskConfig, pipelineConnections=IsrConnections):
    saturation_adu = Field[float](
        doc="Saturation level in raw ADU; the raw header's SATURATE wins when present.",
        default=60_000.0,
    )
    gain = Field[float](doc="Electrons per ADU.", default=1.0)
    read_noise_adu = Field[float](doc="Read noise in ADU.", default=5.0)
    saturation_grow = Field[int](doc="Grow the saturation mask by this many pixels.", default=1)


class IsrTask(PipelineTask):
    """Remove the bias, divide by the flat, and mask saturated pixels."""

    ConfigClass = IsrConfig
    config: IsrConfig
    _DefaultName = "isr"

    def runQuantum(
        self,
        butlerQC: QuantumContext,
        inputRefs: InputQuantizedConnection,
        outputRefs: OutputQuantizedConnection,
    ) -> None:
        inputs = butlerQC.get(inputRefs)
        provenance = {
            "BIASID": str(inputRefs.bias.id),
            "BIASRUN": inputRefs.bias.run,
            "FLATID": str(inputRefs.flat.id),
            "FLATRUN": inputRefs.flat.run,
        }
        result = self.run(**inputs, provenance=provenance)
        butlerQC.put(result, outputRefs)

    def run(
        self,
        raw: SkyImage,
        bias: SkyImage,
        flat: SkyImage,
        provenance: dict[str, Any] | None = None,
    ) -> Struct:
        saturation = float(raw.header.get("SATURATE", self.config.saturation_adu))
        data = raw.image.astype(np.float64)
        saturated = data >= saturation
        if self.config.saturation_grow > 0 and saturated.any():
            from scipy import ndimage

            saturated = ndimage.binary_dilation(saturated, iterations=self.config.saturation_grow)
        mask = np.where(saturated, int(MaskBit.SAT), 0).astype(np.int32)
        signal = data - bias.image
        flat_data = np.where(flat.image > 0.05, flat.image, 1.0)
        image = signal / flat_data
        variance = (
            np.clip(signal, 0, None) / self.config.gain + self.config.read_noise_adu**2
        ) / flat_data**2
        header = dict(raw.header)
        header["BIASEPO"] = bias.header.get("CALEPOCH", "unknown")
        header["FLATEPO"] = flat.header.get("CALEPOCH", "unknown")
        header.update(provenance or {})
        out = SkyImage(
            image=image.astype(np.float32),
            header=header,
            mask=mask,
            variance=variance.astype(np.float32),
        )
        self.metadata["n_saturated"] = int(saturated.sum())
        return Struct(postIsr=out)
