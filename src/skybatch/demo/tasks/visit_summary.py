"""Per-visit summary: one row per detector with PSF size, zero point and source counts."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from astropy.table import Table
from lsst.pipe.base import PipelineTask, PipelineTaskConfig, PipelineTaskConnections, Struct
from lsst.pipe.base import connectionTypes as cT


class VisitSummaryConnections(PipelineTaskConnections, dimensions=("instrument", "visit")):
    summaries = cT.Input(
        doc="Per-detector summaries written by calibrate.",
        name="calexpSummary",
        storageClass="StructuredDataDict",
        dimensions=("instrument", "visit", "detector"),
        multiple=True,
    )
    visitSummary = cT.Output(
        doc="One row per detector of the visit.",
        name="visitSummary",
        storageClass="ArrowAstropy",
        dimensions=("instrument", "visit"),
    )


class VisitSummaryConfig(PipelineTaskConfig, pipelineConnections=VisitSummaryConnections):
    pass


COLUMNS = (
    "visit",
    "detector",
    "band",
    "psf_fwhm_px",
    "psf_fwhm_arcsec",
    "zero_point",
    "n_sources",
    "n_matched",
    "sky_adu",
)


class VisitSummaryTask(PipelineTask):
    """Gather the detectors' summaries of one visit into a table."""

    ConfigClass = VisitSummaryConfig
    _DefaultName = "visitSummary"
    #: The columns of each output table (``campaign validate`` checks ``select.where``).
    output_columns: ClassVar[dict[str, tuple[str, ...]]] = {"visitSummary": COLUMNS}

    def run(self, summaries: list[dict[str, Any]]) -> Struct:
        rows = sorted(summaries, key=lambda s: int(s["detector"]))
        table = Table({c: [r[c] for r in rows] for c in COLUMNS})
        table.meta["median_psf_fwhm_arcsec"] = float(np.median(table["psf_fwhm_arcsec"]))
        self.metadata["median_psf_fwhm_arcsec"] = table.meta["median_psf_fwhm_arcsec"]
        return Struct(visitSummary=table)
