"""The demo skymap: one tract centred on the field, cut into square patches.

Its definition is stored in the Butler as the ``skyMap`` dataset (a plain dict), and
``patch_wcs`` rebuilds any patch's pixel grid from it.
"""

from __future__ import annotations

import math
from typing import Any

from .image import tan_wcs
from .params import SKYMAP, SurveyParams


def skymap_definition(params: SurveyParams) -> dict[str, Any]:
    """One tract centred on the field, cut into square patches (the ``skyMap`` dataset)."""
    extent_deg = params.focal_plane_deg * 1.5 + 0.01
    n = max(1, math.ceil(extent_deg * 3600 / params.pixel_scale_arcsec / params.patch_size))
    return {
        "name": SKYMAP,
        "tracts": {
            0: {
                "ra": params.ra_deg,
                "dec": params.dec_deg,
                "pixel_scale_arcsec": params.pixel_scale_arcsec,
                "patch_size": params.patch_size,
                "nx": n,
                "ny": n,
            }
        },
    }


def patch_wcs(skymap: dict[str, Any], tract: int, patch: int) -> tuple[Any, int, int]:
    """WCS and shape of one patch (pixel (0, 0) is the patch's first pixel)."""
    t = skymap["tracts"][tract] if tract in skymap["tracts"] else skymap["tracts"][str(tract)]
    size = int(t["patch_size"])
    px, py = patch % int(t["nx"]), patch // int(t["nx"])
    centre_x, centre_y = t["nx"] * size / 2, t["ny"] * size / 2
    crpix = (centre_x - px * size + 0.5, centre_y - py * size + 0.5)
    return tan_wcs(t["ra"], t["dec"], crpix, t["pixel_scale_arcsec"], 0.0), size, size
