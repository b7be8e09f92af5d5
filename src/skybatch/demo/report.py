"""Plain-text summaries of demo pipeline outputs."""

from __future__ import annotations

import numpy as np

from .survey import Survey


def visit_table(survey: Survey, collection: str) -> str:
    """One line per visit: band, seeing and zero point measured vs injected."""
    from lsst.daf.butler import Butler

    truth = {v.visit: v for v in survey.truth().visits}
    header = ("visit", "band", "epoch", "FWHM(as)", "ZP meas", "ZP true", "sources")
    lines = ["{:>6} {:>4} {:>7} {:>8} {:>8} {:>8} {:>8}".format(*header)]
    with Butler.from_config(str(survey.repo)) as butler:
        for ref in sorted(
            butler.query_datasets("visitSummary", collections=collection, explain=False),
            key=lambda r: int(r.dataId["visit"]),
        ):
            table = butler.get(ref)
            visit = int(ref.dataId["visit"])
            t = truth.get(visit)
            lines.append(
                f"{visit:>6} {table['band'][0]:>4} {t.epoch if t else '?':>7} "
                f"{np.median(table['psf_fwhm_arcsec']):>8.2f} "
                f"{np.median(table['zero_point']):>8.3f} "
                f"{t.zero_point if t else float('nan'):>8.3f} {int(np.sum(table['n_sources'])):>8}"
            )
    return "\n".join(lines)
