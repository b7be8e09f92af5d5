"""Tests of the demo image type (SkyImage, tan_wcs) and its Butler formatter."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from lsst.daf.butler import Butler, Config, DatasetType

from skybatch.demo.image import MaskBit, SkyImage, tan_wcs
from skybatch.demo.survey import REPO_CONFIG

#: The WCS every test image carries.
WCS_ = tan_wcs(150.0, 2.0, (8.5, 6.0), 0.5, 1.5)


def make_image(rng: np.random.Generator, *, planes: bool = True) -> SkyImage:
    shape = (12, 17)  # not square, so a transposed plane would be noticed
    image = rng.normal(300.0, 20.0, shape).astype(np.float32)
    mask = None
    variance = None
    if planes:
        mask = np.zeros(shape, dtype=np.int32)
        mask[3, 4] = MaskBit.SAT | MaskBit.DETECTED
        mask[7, 10] = MaskBit.CR
        variance = rng.uniform(200.0, 400.0, shape).astype(np.float32)
    header = {
        "INSTRUME": "DemoCam",
        "DETECTOR": 3,
        "EXPTIME": 30.0,
        "FILTER": "DemoCam-g",
        "SATURATE": 60000.0,
        "FLAGGED": True,
        "ZP": float("nan"),
    }
    sky = SkyImage(image=image, header=header, mask=mask, variance=variance)
    sky.set_wcs(WCS_)
    return sky


def pixel_to_world(image: SkyImage, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra, dec = image.wcs.all_pix2world(x, y, 0)
    return np.asarray(ra), np.asarray(dec)


def assert_same_image(got: SkyImage, expected: SkyImage) -> None:
    np.testing.assert_array_equal(got.image, expected.image)
    for plane in ("mask", "variance"):
        want = getattr(expected, plane)
        have = getattr(got, plane)
        if want is None:
            assert have is None, plane
        else:
            np.testing.assert_array_equal(have, want)
    for key, value in expected.header.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(float(got.header[key])), key
        else:
            assert got.header[key] == value, key
    # The WCS travels with the header: same sky positions for the same pixels.
    xs, ys = np.array([0.0, 16.0, 5.5]), np.array([0.0, 11.0, 3.25])
    np.testing.assert_allclose(
        pixel_to_world(got, xs, ys), WCS_.all_pix2world(xs, ys, 0), rtol=0, atol=1e-10
    )


# -- FITS --------------------------------------------------------------------------------


def test_fits_round_trip_keeps_planes_header_and_wcs(tmp_path: Path) -> None:
    original = make_image(np.random.default_rng(1))
    path = tmp_path / "image.fits"

    original.to_hdulist().writeto(path)
    restored = SkyImage.from_fits(str(path))

    assert_same_image(restored, original)
    assert restored.mask is not None
    assert restored.mask[3, 4] & MaskBit.SAT
    assert restored.mask[7, 10] & MaskBit.CR


def test_fits_round_trip_of_image_without_mask_and_variance(tmp_path: Path) -> None:
    original = make_image(np.random.default_rng(2), planes=False)
    path = tmp_path / "image.fits"

    original.to_hdulist().writeto(path)
    restored = SkyImage.from_fits(str(path))

    assert restored.mask is None
    assert restored.variance is None
    assert_same_image(restored, original)
    # An image without a mask plane still offers an all-good mask.
    np.testing.assert_array_equal(restored.mask_or_zeros(), np.zeros(original.shape))


def test_fits_file_is_readable_by_any_fits_reader(tmp_path: Path) -> None:
    original = make_image(np.random.default_rng(3))
    path = tmp_path / "image.fits"
    original.to_hdulist().writeto(path)

    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == ["IMAGE", "MASK", "VARIANCE"]
        assert hdul[0].header["EXPTIME"] == 30.0
        assert hdul[0].header["CTYPE1"] == "RA---TAN"
        np.testing.assert_array_equal(hdul["IMAGE"].data, original.image)


def test_infinite_header_values_survive_as_strings_float_understands(tmp_path: Path) -> None:
    original = SkyImage(
        image=np.zeros((4, 4), dtype=np.float32),
        header={"NANVAL": float("nan"), "POSINF": float("inf"), "NEGINF": float("-inf")},
    )
    path = tmp_path / "image.fits"
    original.to_hdulist().writeto(path)

    header = SkyImage.from_fits(str(path)).header

    assert math.isnan(float(header["NANVAL"]))
    assert float(header["POSINF"]) == math.inf
    assert float(header["NEGINF"]) == -math.inf


# -- WCS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ra", "dec", "rot"), [(150.0, 2.0, 0.0), (10.0, -45.0, 33.0)])
def test_tan_wcs_round_trip_scale_and_rotation(ra: float, dec: float, rot: float) -> None:
    scale = 0.5
    crpix = (128.5, 64.0)
    wcs = tan_wcs(ra, dec, crpix, scale, rot)

    # The reference pixel (1-based in FITS, so crpix - 1 in 0-based pixels) is at (ra, dec).
    r0, d0 = wcs.all_pix2world(crpix[0] - 1, crpix[1] - 1, 0)
    assert float(r0) == pytest.approx(ra, abs=1e-10)
    assert float(d0) == pytest.approx(dec, abs=1e-10)

    # pixel -> sky -> pixel.
    rng = np.random.default_rng(4)
    xs, ys = rng.uniform(0, 256, 50), rng.uniform(0, 128, 50)
    r, d = wcs.all_pix2world(xs, ys, 0)
    x2, y2 = wcs.all_world2pix(r, d, 0)
    np.testing.assert_allclose(x2, xs, atol=1e-6)
    np.testing.assert_allclose(y2, ys, atol=1e-6)

    # One pixel step is `scale` arcsec on the sky, and +y points rot degrees east of
    # north; +x then points west (RA increases to the left, position angle 270 + rot).
    x0, y0 = crpix[0] - 1, crpix[1] - 1
    centre = SkyCoord(*wcs.all_pix2world(x0, y0, 0), unit="deg")
    step_y = SkyCoord(*wcs.all_pix2world(x0, y0 + 1, 0), unit="deg")
    step_x = SkyCoord(*wcs.all_pix2world(x0 + 1, y0, 0), unit="deg")
    assert centre.separation(step_x).to_value(u.arcsec) == pytest.approx(scale, rel=1e-6)
    assert centre.separation(step_y).to_value(u.arcsec) == pytest.approx(scale, rel=1e-6)
    pa_y = centre.position_angle(step_y).to_value(u.deg)
    pa_x = centre.position_angle(step_x).to_value(u.deg)
    assert (pa_y - rot + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-4)
    assert (pa_x - (270 + rot) + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-4)


def test_set_wcs_replaces_previous_wcs_keywords() -> None:
    image = SkyImage(image=np.zeros((20, 30), dtype=np.float32), header={"EXPTIME": 15.0})
    image.set_wcs(tan_wcs(10.0, 20.0, (5.0, 5.0), 1.0, 45.0))
    # A foreign CD-matrix WCS left in the header must not leak into the new one either.
    image.header.update({"CD1_1": 1.0, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1.0})
    new = tan_wcs(200.0, -30.0, (15.5, 10.5), 0.25, -10.0)

    image.set_wcs(new)

    assert image.header["EXPTIME"] == 15.0
    assert image.header["CRVAL1"] == 200.0
    assert image.header["CRVAL2"] == -30.0
    assert (image.header["CRPIX1"], image.header["CRPIX2"]) == (15.5, 10.5)
    assert not any(key.startswith("CD1_") or key.startswith("CD2_") for key in image.header)
    xs, ys = np.array([0.0, 29.0, 14.5]), np.array([0.0, 19.0, 9.5])
    np.testing.assert_allclose(
        pixel_to_world(image, xs, ys), new.all_pix2world(xs, ys, 0), rtol=0, atol=1e-10
    )


def test_wcs_of_in_memory_image_with_nan_header_value() -> None:
    image = SkyImage(image=np.zeros((10, 10), dtype=np.float32), header={"MAGZERO": math.nan})
    image.set_wcs(WCS_)

    xs, ys = np.array([0.0, 9.0]), np.array([0.0, 9.0])
    np.testing.assert_allclose(
        pixel_to_world(image, xs, ys), WCS_.all_pix2world(xs, ys, 0), rtol=0, atol=1e-10
    )


# -- Butler formatter ------------------------------------------------------------------------


def test_butler_put_get_round_trip_writes_fits(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Butler.makeRepo(str(root), config=Config(REPO_CONFIG))
    butler = Butler.from_config(str(root), writeable=True)
    try:
        butler.registry.insertDimensionData(
            "instrument",
            {
                "name": "DemoCam",
                "visit_max": 1024,
                "exposure_max": 1024,
                "detector_max": 8,
                "visit_system": 0,
                "class_name": "skybatch.demo.DemoCam",
            },
        )
        butler.registry.insertDimensionData(
            "detector",
            {
                "instrument": "DemoCam",
                "id": 3,
                "full_name": "D003",
                "name_in_raft": "S03",
                "raft": "R00",
                "purpose": "SCIENCE",
            },
        )
        butler.registry.registerDatasetType(
            DatasetType(
                "testImage", ("instrument", "detector"), "SkyImage", universe=butler.dimensions
            )
        )
        butler.collections.register("run")
        original = make_image(np.random.default_rng(5))
        data_id = {"instrument": "DemoCam", "detector": 3}

        ref = butler.put(original, "testImage", data_id, run="run")
        restored = butler.get("testImage", data_id, collections="run")
        uri = butler.getURI(ref)
    finally:
        butler.close()

    assert isinstance(restored, SkyImage)
    assert_same_image(restored, original)
    assert uri.ospath.endswith(".fits")
    assert Path(uri.ospath).is_file()
    with fits.open(uri.ospath) as hdul:
        np.testing.assert_array_equal(hdul["VARIANCE"].data, original.variance)
        assert hdul[0].header["FILTER"] == "DemoCam-g"
