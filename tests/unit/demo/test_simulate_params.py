"""Tests of the demo survey plan (skybatch.demo.params) and image simulator (simulate)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from astropy.table import Table
from pydantic import ValidationError

from skybatch.demo import simulate
from skybatch.demo.params import (
    EPOCHS,
    FILTERS,
    SurveyParams,
    VisitTruth,
    limiting_magnitude,
    plan_survey,
    saturation_magnitude,
)

# -- plan_survey --------------------------------------------------------------------------


def test_plan_survey_is_deterministic_for_a_seed() -> None:
    first = plan_survey(SurveyParams(seed=7, visits=5))
    again = plan_survey(SurveyParams(seed=7, visits=5))
    other = plan_survey(SurveyParams(seed=8, visits=5))

    assert first == again
    pointings = [(v.ra_deg, v.dec_deg, v.rotation_deg, v.fwhm_px) for v in first.visits]
    other_pointings = [(v.ra_deg, v.dec_deg, v.rotation_deg, v.fwhm_px) for v in other.visits]
    assert all(a != b for a, b in zip(pointings, other_pointings, strict=True))


@pytest.mark.parametrize("n_visits", [1, 2, 7, 12])
def test_plan_survey_splits_visits_across_calibration_epochs(n_visits: int) -> None:
    truth = plan_survey(SurveyParams(visits=n_visits))

    assert len(truth.visits) == n_visits
    assert truth.epochs == [name for name, _, _ in EPOCHS]
    counts = {name: sum(v.epoch == name for v in truth.visits) for name, _, _ in EPOCHS}
    # Half (rounded up) in the first epoch, the rest in the second.
    assert counts == {EPOCHS[0][0]: math.ceil(n_visits / 2), EPOCHS[1][0]: n_visits // 2}
    validity = {name: (begin, end) for name, begin, end in EPOCHS}
    for v in truth.visits:
        begin, end = validity[v.epoch]
        # The whole exposure lies in its epoch's validity range, so calibration lookup
        # by exposure time finds exactly that epoch's bias and flat.
        assert begin <= v.start < v.end
        assert end is None or v.end <= end
        assert (v.end - v.start).total_seconds() == pytest.approx(truth.params.exposure_time_s)
    assert len({v.visit for v in truth.visits}) == n_visits


def test_plan_survey_visit_properties_are_consistent() -> None:
    params = SurveyParams(visits=8, seed=3)
    truth = plan_survey(params)

    assert {v.physical_filter for v in truth.visits} == set(FILTERS)
    for v in truth.visits:
        assert v.band == FILTERS[v.physical_filter]
        # Dithers stay well within the focal plane around the field centre.
        offset_deg = math.hypot(
            (v.ra_deg - params.ra_deg) * math.cos(math.radians(params.dec_deg)),
            v.dec_deg - params.dec_deg,
        )
        assert offset_deg < 0.5 * params.focal_plane_deg
        # day_obs is the date in the UTC-12h time zone: one observing night, one day_obs.
        assert v.day_obs == int((v.start - timedelta(hours=12)).strftime("%Y%m%d"))


# -- calibration frames ----------------------------------------------------------------------


@pytest.mark.parametrize("epoch_index", [0, 1])
@pytest.mark.parametrize("physical_filter", sorted(FILTERS))
@pytest.mark.parametrize("detector", [0, 3])
def test_flat_frames_are_normalised_to_mean_one(
    epoch_index: int, physical_filter: str, detector: int
) -> None:
    params = SurveyParams(size=64, detectors=4)

    flat = simulate.flat_frame(params, epoch_index, detector, physical_filter)

    assert flat.shape == (64, 64)
    assert float(np.mean(flat, dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    assert np.all(flat > 0)


def test_flat_frames_of_the_two_epochs_differ() -> None:
    params = SurveyParams(size=64)
    f0 = simulate.flat_frame(params, 0, 1, "DemoCam-r")
    f1 = simulate.flat_frame(params, 1, 1, "DemoCam-r")
    # The pixel response differs by ~1% rms between epochs, far above float precision.
    assert np.std(f1 / f0) > 0.005


def test_bias_frames_of_the_two_epochs_differ() -> None:
    params = SurveyParams(size=64)
    for detector in range(params.detectors):
        b0 = simulate.bias_frame(params, 0, detector)
        b1 = simulate.bias_frame(params, 1, detector)
        # Using the wrong epoch's bias must be noticeable: much larger than the read noise.
        assert np.abs(b1 - b0).min() > 5 * params.read_noise_adu


# -- raw images ------------------------------------------------------------------------------


def one_star_refcat(ra: float, dec: float, mag: float) -> Table:
    return Table(
        {
            "id": [1],
            "ra": [ra],
            "dec": [dec],
            "g_mag": [mag],
            "g_magErr": [0.01],
            "r_mag": [mag],
            "r_magErr": [0.01],
        }
    )


def raw_with_star(delta_mag: float) -> tuple[SurveyParams, VisitTruth, np.ndarray, float]:
    """A raw of one detector with a star ``delta_mag`` fainter than saturation_magnitude.

    Returns the parameters, the visit, the image, the star's pixel position and its flux.
    """
    params = SurveyParams(size=64, detectors=1, visits=1, cosmic_rays_per_detector=0, seed=11)
    visit = plan_survey(params).visits[0]
    wcs = simulate.detector_wcs(params, visit, 0)
    ra, dec = wcs.all_pix2world(STAR_X, STAR_Y, 0)
    mag = saturation_magnitude(params, visit.fwhm_px, visit.zero_point) + delta_mag
    raw = simulate.raw_image(params, visit, 0, 0, one_star_refcat(float(ra), float(dec), mag))
    return params, visit, raw.image, 10 ** (-0.4 * (mag - visit.zero_point))


STAR_X, STAR_Y = 30.3, 33.6


def test_raw_image_clips_a_star_brighter_than_saturation_magnitude() -> None:
    params, _, image, _ = raw_with_star(-1.0)

    assert image.max() == np.float32(params.saturation_adu)
    saturated = np.argwhere(image >= params.saturation_adu)
    assert len(saturated) >= 1
    # The clipped pixels are the star's core, not elsewhere.
    assert np.hypot(saturated[:, 1] - STAR_X, saturated[:, 0] - STAR_Y).max() < 4.0


def test_raw_image_star_fainter_than_saturation_magnitude_is_not_clipped() -> None:
    params, visit, image, flux = raw_with_star(+1.0)

    assert image.max() < params.saturation_adu
    # The star is rendered where the WCS puts it: the brightest pixel is its centre.
    py, px = np.unravel_index(np.argmax(image), image.shape)
    assert (px, py) == (round(STAR_X), round(STAR_Y))
    # Its total signal is flux (from magnitude and zero point) times the flat response.
    flat = simulate.flat_frame(params, 0, 0, visit.physical_filter)
    star = image - simulate.bias_frame(params, 0, 0) - flat * params.sky_adu
    star_flat = float(flat[py - 2 : py + 3, px - 2 : px + 3].mean())
    assert float(star.sum()) == pytest.approx(flux * star_flat, rel=0.02)


def test_raw_image_header_describes_the_exposure() -> None:
    params = SurveyParams(size=64, detectors=2, visits=2, cosmic_rays_per_detector=0)
    visit = plan_survey(params).visits[1]
    empty = one_star_refcat(0.0, -89.0, 20.0)[:0]

    raw = simulate.raw_image(params, visit, 1, 1, empty)

    assert raw.shape == (64, 64)
    assert raw.header["EXPID"] == visit.visit
    assert raw.header["DETECTOR"] == 1
    assert raw.header["FILTER"] == visit.physical_filter
    assert raw.header["SATURATE"] == params.saturation_adu
    # Without stars the raw is bias + flat * sky + noise (this visit is in epoch 2).
    bias = simulate.bias_frame(params, 1, 1)
    flat = simulate.flat_frame(params, 1, 1, visit.physical_filter)
    residual = raw.image - bias - flat * params.sky_adu
    noise = math.sqrt(params.sky_adu + params.read_noise_adu**2)
    assert abs(float(np.mean(residual))) < 4 * noise / 64  # 4 sigma of a 64x64 mean
    assert float(np.std(residual)) == pytest.approx(noise, rel=0.05)
    # The header's WCS is the detector's.
    expected = simulate.detector_wcs(params, visit, 1)
    np.testing.assert_allclose(
        raw.wcs.all_pix2world([0.0, 63.0], [0.0, 63.0], 0),
        expected.all_pix2world([0.0, 63.0], [0.0, 63.0], 0),
        atol=1e-10,
    )


# -- limiting and saturation magnitudes -----------------------------------------------------


def test_limiting_magnitude_is_fainter_for_lower_snr_and_better_seeing() -> None:
    params = SurveyParams()
    zp = params.zero_point
    by_snr = [limiting_magnitude(params, 2.5, zp, snr) for snr in (50.0, 10.0, 5.0, 3.0)]
    assert by_snr == sorted(by_snr)
    assert len(set(by_snr)) == len(by_snr)
    by_seeing = [limiting_magnitude(params, fwhm, zp, 5.0) for fwhm in (4.0, 3.0, 2.0, 1.5)]
    assert by_seeing == sorted(by_seeing)
    assert len(set(by_seeing)) == len(by_seeing)
    # Background-limited: noise ~ sqrt(area) ~ FWHM, so halving the FWHM gains ~2.5 log10(2).
    gain = limiting_magnitude(params, 1.5, zp, 5.0) - limiting_magnitude(params, 3.0, zp, 5.0)
    assert gain == pytest.approx(2.5 * math.log10(2), abs=0.05)


@pytest.mark.parametrize(("fwhm", "snr"), [(2.0, 5.0), (3.5, 10.0), (2.5, 100.0)])
def test_star_at_limiting_magnitude_has_the_requested_snr(fwhm: float, snr: float) -> None:
    params = SurveyParams()
    zp = 30.5
    mag = limiting_magnitude(params, fwhm, zp, snr)
    flux = 10 ** (-0.4 * (mag - zp))
    # Optimal PSF photometry of a Gaussian: effective noise area 4 pi sigma^2.
    area = 4 * math.pi * (fwhm / (2 * math.sqrt(2 * math.log(2)))) ** 2
    noise = math.sqrt(flux + area * (params.sky_adu + params.read_noise_adu**2))
    assert flux / noise == pytest.approx(snr, rel=1e-3)


def test_saturation_magnitude_brighter_for_sharper_psf() -> None:
    params = SurveyParams()
    # The same flux concentrated in a smaller PSF saturates sooner.
    assert saturation_magnitude(params, 2.0, 31.0) > saturation_magnitude(params, 3.0, 31.0)
    # And a deeper saturation level allows brighter stars.
    deeper = SurveyParams(saturation_adu=120_000.0)
    assert saturation_magnitude(deeper, 2.0, 31.0) < saturation_magnitude(params, 2.0, 31.0)


# -- SurveyParams validation ------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("visits", 0), ("size", 10)])
def test_survey_params_rejects_invalid_values(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as info:
        SurveyParams(**{field: value})
    assert field in str(info.value)


def test_survey_params_defaults_and_layout() -> None:
    params = SurveyParams(detectors=5)
    cols, rows = params.layout
    assert cols * rows >= 5
    assert cols * (rows - 1) < 5  # no empty row of detectors
    # Detector origins are one pitch apart and the focal plane is centred on the boresight.
    offsets = [params.detector_offset(d) for d in range(params.detectors)]
    pitch = params.size + params.gap
    assert offsets[1][0] - offsets[0][0] == pytest.approx(pitch)
    assert offsets[cols][1] - offsets[0][1] == pytest.approx(pitch)
    centre_x = (offsets[0][0] + offsets[cols - 1][0] + params.size) / 2
    assert centre_x == pytest.approx(0.0)
