"""Tests of the demo pipeline's image measurement (skybatch.demo.measure).

Images are synthetic: pixel-integrated Gaussian stars from ``render_stars`` on a
background-subtracted sky, with Gaussian noise of the Poisson + read-noise variance.
Expectations come from the injected truth and from the physics of Gaussian PSFs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.table import Table
from scipy import stats

from skybatch.demo import measure
from skybatch.demo.image import MaskBit
from skybatch.demo.simulate import render_stars

SKY_ADU = 300.0
READ_NOISE_ADU = 5.0
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def observe(
    shape: tuple[int, int],
    xs: np.ndarray,
    ys: np.ndarray,
    fluxes: np.ndarray,
    fwhm: float,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background-subtracted image, its variance plane and an empty mask.

    ``rng=None`` gives a noiseless image (the variance plane is still the physical one).
    """
    stars = render_stars(shape, np.asarray(xs, float), np.asarray(ys, float), fluxes, fwhm)
    variance = SKY_ADU + READ_NOISE_ADU**2 + stars
    image = stars.copy()
    if rng is not None:
        image += rng.normal(0.0, 1.0, shape) * np.sqrt(variance)
    return image, variance, np.zeros(shape, dtype=np.int32)


def star_grid(
    rng: np.random.Generator, log_flux_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16 isolated stars (35 px apart) at random sub-pixel positions on a 160x160 image."""
    centres = 25.0 + 35.0 * np.arange(4)
    gx, gy = np.meshgrid(centres, centres)
    xs = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    ys = gy.ravel() + rng.uniform(-0.5, 0.5, gy.size)
    fluxes = 10 ** rng.uniform(*log_flux_range, gx.size)
    return xs, ys, fluxes


def nearest(table: Table, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest measured source to each true star and the distance in pixels."""
    mx, my = np.asarray(table["x"]), np.asarray(table["y"])
    d = np.hypot(mx[None, :] - xs[:, None], my[None, :] - ys[:, None])
    idx = d.argmin(axis=1)
    return idx, d[np.arange(len(xs)), idx]


# -- measure_sources ---------------------------------------------------------------


@pytest.mark.parametrize("fwhm", [2.0, 3.5])
def test_measure_sources_recovers_positions_of_high_snr_stars(fwhm: float) -> None:
    rng = np.random.default_rng(101)
    xs, ys, fluxes = star_grid(rng, (3.7, 5.5))
    image, variance, mask = observe((160, 160), xs, ys, fluxes, fwhm, rng)

    table, _ = measure.measure_sources(image, variance, mask, fwhm_guess=2.5)

    assert len(table) == len(xs)  # one source per star, nothing spurious
    idx, dist = nearest(table, xs, ys)
    assert len(set(idx.tolist())) == len(xs)
    high = np.asarray(table["snr"])[idx] > 50
    assert high.sum() >= 10  # the test is about S/N > 50 stars: make sure there are many
    assert dist[high].max() < 0.1


@pytest.mark.parametrize("fwhm", [2.0, 3.5])
def test_measure_sources_total_flux_of_bright_isolated_stars(fwhm: float) -> None:
    rng = np.random.default_rng(202)
    xs, ys, fluxes = star_grid(rng, (5.0, 5.7))
    image, variance, mask = observe((160, 160), xs, ys, fluxes, fwhm, rng)

    table, _ = measure.measure_sources(image, variance, mask, fwhm_guess=2.5)

    idx, _ = nearest(table, xs, ys)
    measured = np.asarray(table["ap_flux"])[idx]
    np.testing.assert_allclose(measured, fluxes, rtol=0.02)
    # The reported error is the photon + sky noise in the aperture, so S/N is high here.
    assert np.all(np.asarray(table["snr"])[idx] > 100)


def test_measure_sources_applies_aperture_correction_for_small_apertures() -> None:
    # Radius = 1 FWHM holds only 1 - 2**-4 = 93.75% of a Gaussian's flux; the
    # correction to total must bring the flux back within 2%.
    assert 1 - measure.gaussian_aperture_fraction(3.5, 3.5 / FWHM_PER_SIGMA) == pytest.approx(
        2.0**-4
    )
    rng = np.random.default_rng(303)
    xs, ys, fluxes = star_grid(rng, (5.0, 5.7))
    image, variance, mask = observe((160, 160), xs, ys, fluxes, 3.5, rng)

    table, _ = measure.measure_sources(image, variance, mask, fwhm_guess=2.5, aperture_fwhm=1.0)

    idx, _ = nearest(table, xs, ys)
    np.testing.assert_allclose(np.asarray(table["ap_flux"])[idx], fluxes, rtol=0.02)


@pytest.mark.parametrize(
    "fwhm",
    [
        2.0,
        3.5,
    ],
)
def test_measure_sources_psf_fwhm_within_5_percent(fwhm: float) -> None:
    rng = np.random.default_rng(404)
    xs, ys, fluxes = star_grid(rng, (4.5, 5.5))
    image, variance, mask = observe((160, 160), xs, ys, fluxes, fwhm, rng)

    _, measured_fwhm = measure.measure_sources(image, variance, mask, fwhm_guess=2.5)

    assert measured_fwhm == pytest.approx(fwhm, rel=0.05)


def test_measure_sources_on_empty_image_returns_empty_table() -> None:
    image, variance, mask = observe((64, 64), np.zeros(0), np.zeros(0), np.zeros(0), 2.5, None)

    table, fwhm = measure.measure_sources(image, variance, mask, fwhm_guess=2.5)

    assert len(table) == 0
    assert {"x", "y", "ap_flux", "ap_flux_err", "snr", "saturated"} <= set(table.colnames)
    assert math.isnan(fwhm)


# -- detect --------------------------------------------------------------------------


@pytest.mark.parametrize("fwhm", [2.0, 3.5])
@pytest.mark.parametrize("flux_ratio", [1.0, 3.0])
def test_detect_separates_stars_three_fwhm_apart(fwhm: float, flux_ratio: float) -> None:
    rng = np.random.default_rng(606)
    xs = np.array([40.2, 40.2 + 3 * fwhm])
    ys = np.array([48.0, 48.0])
    fluxes = np.array([1e4 * flux_ratio, 1e4])
    image, variance, mask = observe((96, 96), xs, ys, fluxes, fwhm, rng)

    detections, _ = measure.detect(image, variance, mask, fwhm)

    assert len(detections) == 2
    found = sorted((d.x, d.y) for d in detections)
    for (dx, dy), x, y in zip(found, xs, ys, strict=True):
        assert math.hypot(dx - x, dy - y) <= 1.0


def test_detect_single_star_gives_one_detection_with_footprint() -> None:
    rng = np.random.default_rng(707)
    image, variance, mask = observe(
        (64, 64), np.array([30.4]), np.array([33.7]), np.array([2e4]), 3.0, rng
    )

    detections, labels = measure.detect(image, variance, mask, 3.0)

    assert len(detections) == 1
    det = detections[0]
    assert math.hypot(det.x - 30.4, det.y - 33.7) <= 1.0
    assert not det.saturated
    # The footprint label map covers the star and reports its size.
    label = labels[round(det.y), round(det.x)]
    assert label > 0
    assert det.npix == int((labels == label).sum())


def test_detect_finds_nothing_in_pure_noise_including_the_borders() -> None:
    # 200 images of 64x64 pure noise hold ~60,000 independent beams; the chance of a
    # 5-sigma excursion among them is ~2%, so a correct detector finds nothing.
    rng = np.random.default_rng(2024)
    positions = []
    for _ in range(200):
        image, variance, mask = observe((64, 64), np.zeros(0), np.zeros(0), np.zeros(0), 2.5, rng)
        detections, _ = measure.detect(image, variance, mask, 2.5)
        positions += [(d.x, d.y) for d in detections]
    assert positions == []


def test_detect_flags_footprints_with_saturated_pixels() -> None:
    rng = np.random.default_rng(808)
    image, variance, mask = observe(
        (64, 64), np.array([20.0, 45.0]), np.array([20.0, 45.0]), np.array([2e4, 2e4]), 3.0, rng
    )
    mask[45, 45] |= MaskBit.SAT

    detections, _ = measure.detect(image, variance, mask, 3.0)

    by_position = {(round(d.x), round(d.y)): d.saturated for d in detections}
    assert by_position == {(20, 20): False, (45, 45): True}


# -- repair_cosmic_rays ---------------------------------------------------------------

#: Cosmic-ray tracks like the simulator's: 1-3 pixels, horizontal, vertical or diagonal.
CR_TRACKS = (
    [(70, 50, 6000.0)],
    [(15, 80, 4000.0), (16, 80, 9000.0)],
    [(52, 12, 3000.0), (52, 13, 12000.0), (52, 14, 5000.0)],
    [(85, 60, 15000.0), (86, 61, 8000.0), (87, 62, 4000.0)],
)


@pytest.mark.parametrize("fwhm", [1.8, 2.5, 3.5])
def test_repair_cosmic_rays_flags_tracks_and_spares_stars(fwhm: float) -> None:
    rng = np.random.default_rng(909)
    # Stars on pixel centres (sharpest case) and off-centre, with peaks of high S/N.
    xs = np.array([20.0, 60.5, 30.0, 75.3])
    ys = np.array([25.0, 30.0, 70.5, 20.6])
    fluxes = np.array([2e5, 4e5, 3e5, 2e5])
    image, variance, mask = observe((96, 96), xs, ys, fluxes, fwhm, rng)
    clean = image.copy()
    for track in CR_TRACKS:
        for x, y, amplitude in track:
            image[y, x] += amplitude
    track_mask = np.zeros(image.shape, dtype=bool)
    for track in CR_TRACKS:
        for x, y, _ in track:
            track_mask[y, x] = True

    n = measure.repair_cosmic_rays(image, variance, mask)

    cr = (mask & MaskBit.CR) != 0
    assert n == track_mask.sum()
    assert cr[track_mask].all()
    # Only the tracks (grown by one pixel) are masked: no star pixel is.
    grown = np.zeros_like(track_mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(track_mask, dy, axis=0), dx, axis=1)
    assert not (cr & ~grown).any()
    # Repaired pixels are back at the (zero) background, within the noise.
    noise = math.sqrt(SKY_ADU + READ_NOISE_ADU**2)
    assert np.abs(image[cr]).max() < 5 * noise
    # The stars are untouched and keep their flux.
    for x, y, flux in zip(xs, ys, fluxes, strict=True):
        repaired, _ = measure.aperture_flux(image, variance, x, y, 3 * fwhm)
        before, _ = measure.aperture_flux(clean, variance, x, y, 3 * fwhm)
        assert repaired == pytest.approx(before, rel=1e-6)
        assert repaired == pytest.approx(flux, rel=0.01)


def test_repair_cosmic_rays_leaves_saturated_pixels_alone() -> None:
    rng = np.random.default_rng(1010)
    image, variance, mask = observe((48, 48), np.zeros(0), np.zeros(0), np.zeros(0), 2.5, rng)
    image[20, 20] += 50_000.0  # a single hot pixel, but masked saturated
    mask[20, 20] |= MaskBit.SAT

    n = measure.repair_cosmic_rays(image, variance, mask)

    assert n == 0
    assert not ((mask & MaskBit.CR) != 0).any()
    assert image[20, 20] > 40_000.0


# -- background -------------------------------------------------------------------------


def gradient_sky(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return 1000.0 + 0.5 * xx - 0.3 * yy


def test_background_of_a_pure_linear_gradient_is_exact() -> None:
    sky = gradient_sky((256, 256))

    bg = measure.background(sky, np.zeros(sky.shape, dtype=np.int32))

    assert bg.shape == sky.shape
    # A linear plane is reproduced by the cell medians and by bilinear inter- and
    # extrapolation, including the corners outside the outermost cell centres.
    np.testing.assert_allclose(bg, sky, rtol=1e-6)


def test_background_recovers_gradient_within_one_percent_with_stars() -> None:
    rng = np.random.default_rng(1111)
    shape = (256, 256)
    sky = gradient_sky(shape)
    n = 25
    stars = render_stars(
        shape, rng.uniform(5, 251, n), rng.uniform(5, 251, n), 10 ** rng.uniform(3.5, 5.5, n), 3.0
    )
    truth = sky + stars
    image = truth + rng.normal(0.0, 1.0, shape) * np.sqrt(truth + READ_NOISE_ADU**2)

    bg = measure.background(image, np.zeros(shape, dtype=np.int32))

    assert np.abs(bg / sky - 1).max() < 0.01


def test_background_ignores_saturated_pixels() -> None:
    rng = np.random.default_rng(1212)
    shape = (256, 256)
    sky = gradient_sky(shape)
    image = sky + rng.normal(0.0, 1.0, shape) * np.sqrt(sky + READ_NOISE_ADU**2)
    mask = np.zeros(shape, dtype=np.int32)
    # A bleed trail covering most of one 64x64 mesh cell: its median would be 60000.
    image[64:128, 64:104] = 60_000.0
    mask[64:128, 64:104] |= MaskBit.SAT

    bg = measure.background(image, mask)

    assert np.abs(bg / sky - 1).max() < 0.01


# -- match_radec ---------------------------------------------------------------------------


def test_match_radec_matches_within_radius_and_reports_distance() -> None:
    dec0 = 60.0
    ra2 = np.array([150.0, 150.0])
    dec2 = np.array([dec0, dec0 + 10 / 3600])
    # 0.5" north of the first star; 0.8" east of the second (RA offset / cos(dec)).
    ra1 = np.array([150.0, 150.0 + 0.8 / 3600 / math.cos(math.radians(dec0 + 10 / 3600))])
    dec1 = np.array([dec0 + 0.5 / 3600, dec0 + 10 / 3600])

    idx, dist = measure.match_radec(ra1, dec1, ra2, dec2, radius_arcsec=1.0)

    assert idx.tolist() == [0, 1]
    np.testing.assert_allclose(dist, [0.5, 0.8], atol=1e-3)


def test_match_radec_returns_minus_one_beyond_radius() -> None:
    ra2, dec2 = np.array([10.0]), np.array([-30.0])
    ra1 = np.array([10.0, 10.0])
    dec1 = np.array([-30.0 + 0.9 / 3600, -30.0 + 1.1 / 3600])

    idx, dist = measure.match_radec(ra1, dec1, ra2, dec2, radius_arcsec=1.0)

    assert idx.tolist() == [0, -1]
    assert dist[0] == pytest.approx(0.9, abs=1e-3)
    assert np.isinf(dist[1])


def test_match_radec_picks_the_nearest_and_works_across_ra_zero() -> None:
    # On the equator 1 deg of RA is 1 deg on the sky; both candidates are within 2".
    ra2 = np.array([0.0003, 359.99995])
    dec2 = np.array([0.0, 0.0])
    ra1, dec1 = np.array([0.00002]), np.array([0.0])

    idx, dist = measure.match_radec(ra1, dec1, ra2, dec2, radius_arcsec=2.0)

    assert idx.tolist() == [1]  # the neighbour on the other side of RA = 0
    assert dist[0] == pytest.approx((0.00002 + 0.00005) * 3600, abs=1e-4)


def test_match_radec_handles_empty_inputs() -> None:
    empty = np.zeros(0)
    some_ra, some_dec = np.array([1.0, 2.0]), np.array([3.0, 4.0])

    idx, dist = measure.match_radec(empty, empty, some_ra, some_dec, 1.0)
    assert len(idx) == 0
    assert len(dist) == 0

    idx, dist = measure.match_radec(some_ra, some_dec, empty, empty, 1.0)
    assert idx.tolist() == [-1, -1]
    assert np.isinf(dist).all()


# -- aperture photometry -----------------------------------------------------------------------


@pytest.mark.parametrize("radius_over_sigma", [0.5, 1.0, 2.0, 3.0])
def test_gaussian_aperture_fraction_matches_chi2_with_two_dof(radius_over_sigma: float) -> None:
    # For a circular 2-D Gaussian, (r/sigma)**2 is chi-square distributed with 2 dof.
    sigma = 1.7
    expected = stats.chi2.cdf(radius_over_sigma**2, df=2)
    assert measure.gaussian_aperture_fraction(radius_over_sigma * sigma, sigma) == pytest.approx(
        expected, rel=1e-12
    )


def test_gaussian_aperture_fraction_is_one_half_at_the_half_width_half_maximum() -> None:
    fwhm = 3.0
    sigma = fwhm / FWHM_PER_SIGMA
    assert measure.gaussian_aperture_fraction(fwhm / 2, sigma) == pytest.approx(0.5, rel=1e-6)
    assert measure.gaussian_aperture_fraction(0.0, sigma) == 0.0
    assert measure.gaussian_aperture_fraction(50 * sigma, sigma) == pytest.approx(1.0)


@pytest.mark.parametrize("radius_over_sigma", [2.0, 3.0])
def test_aperture_flux_of_a_rendered_star_matches_gaussian_fraction(
    radius_over_sigma: float,
) -> None:
    fwhm, flux = 6.0, 1e5
    sigma = fwhm / FWHM_PER_SIGMA
    image = render_stars((64, 64), np.array([31.3]), np.array([32.6]), np.array([flux]), fwhm)
    variance = np.full(image.shape, 4.0)
    radius = radius_over_sigma * sigma

    measured, error = measure.aperture_flux(image, variance, 31.3, 32.6, radius)

    expected = flux * measure.gaussian_aperture_fraction(radius, sigma)
    assert measured == pytest.approx(expected, rel=0.01)
    # Uniform variance v over an aperture of area pi r**2: error = sqrt(pi r**2 v), roughly
    # (partial pixels count with their overlap squared, so slightly less).
    full = math.sqrt(math.pi * radius**2 * 4.0)
    assert 0.85 * full < error <= full
