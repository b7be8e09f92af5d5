"""The demo pipeline's science, checked against what the simulation injected."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from astropy.table import Table
from lsst.daf.butler import Butler

from skybatch.demo import simulate
from skybatch.demo.params import INSTRUMENT, limiting_magnitude, saturation_magnitude
from skybatch.demo.survey import CALIB_COLLECTION

pytestmark = pytest.mark.slow

EDGE_MARGIN_PX = 10


def _refcat(survey_root) -> Table:  # type: ignore[no-untyped-def]
    with sqlite3.connect(survey_root / "refcat.sqlite") as conn:
        rows = conn.execute("SELECT id, ra, dec, g_mag, r_mag FROM refcat").fetchall()
    return Table(rows=rows, names=("id", "ra", "dec", "g_mag", "r_mag"))


@pytest.fixture(scope="module")
def butler(processed_survey):  # type: ignore[no-untyped-def]
    with Butler.from_config(
        str(processed_survey.survey.repo), collections=[processed_survey.result.output]
    ) as b:
        yield b


def test_every_quantum_produced_its_outputs(processed_survey, butler) -> None:  # type: ignore[no-untyped-def]
    result = processed_survey.result
    assert result.failed == 0
    params = processed_survey.survey.truth().params
    n_ccd = params.visits * params.detectors
    assert result.datasets["postISRCCD"] == n_ccd
    assert result.datasets["calexp"] == n_ccd
    assert result.datasets["src"] == n_ccd
    assert result.datasets["visitSummary"] == params.visits
    assert result.datasets["deepCoadd"] >= 2  # at least one patch in each band
    assert result.datasets["deepCoadd_src"] == result.datasets["deepCoadd"]


def test_reference_stars_are_matched_and_zero_points_recovered(processed_survey, butler) -> None:  # type: ignore[no-untyped-def]
    truth = processed_survey.survey.truth()
    params = truth.params
    catalog = _refcat(processed_survey.survey.root)
    expected_total = matched_total = 0
    for visit in truth.visits:
        faint = limiting_magnitude(params, visit.fwhm_px, visit.zero_point, snr=10.0)
        bright = saturation_magnitude(params, visit.fwhm_px, visit.zero_point)
        for detector in range(params.detectors):
            src = butler.get("src", instrument=INSTRUMENT, visit=visit.visit, detector=detector)
            summary = butler.get(
                "calexpSummary", instrument=INSTRUMENT, visit=visit.visit, detector=detector
            )
            wcs = simulate.detector_wcs(params, visit, detector)
            x, y = wcs.all_world2pix(np.asarray(catalog["ra"]), np.asarray(catalog["dec"]), 0)
            mag = np.asarray(catalog[f"{visit.band}_mag"])
            lo, hi = EDGE_MARGIN_PX, params.size - 1 - EDGE_MARGIN_PX
            expected = (x > lo) & (x < hi) & (y > lo) & (y < hi) & (mag < faint) & (mag > bright)
            expected_ids = set(np.asarray(catalog["id"])[expected].tolist())
            matched_ids = {int(i) for i in src["ref_id"] if i > 0}
            assert len(expected_ids) >= 10, "the tiny survey should hold enough stars"
            found = len(expected_ids & matched_ids)
            assert found / len(expected_ids) >= 0.8, (visit.visit, detector)
            expected_total += len(expected_ids)
            matched_total += found
            assert summary["zero_point"] == pytest.approx(visit.zero_point, abs=0.05)
            assert summary["psf_fwhm_px"] == pytest.approx(visit.fwhm_px, rel=0.1)
    assert matched_total / expected_total >= 0.9


def test_each_exposure_used_the_calibrations_of_its_own_epoch(processed_survey, butler) -> None:  # type: ignore[no-untyped-def]
    truth = processed_survey.survey.truth()
    assert {v.epoch for v in truth.visits} == {"epoch1", "epoch2"}, "both epochs observed"
    for visit in truth.visits:
        own_run = f"{INSTRUMENT}/calib/{visit.epoch}"
        for detector in range(truth.params.detectors):
            post = butler.get(
                "postISRCCD", instrument=INSTRUMENT, exposure=visit.visit, detector=detector
            )
            assert post.header["BIASEPO"] == visit.epoch
            assert post.header["FLATEPO"] == visit.epoch
            bias = butler.find_dataset(
                "bias", collections=own_run, instrument=INSTRUMENT, detector=detector
            )
            flat = butler.find_dataset(
                "flat",
                collections=own_run,
                instrument=INSTRUMENT,
                detector=detector,
                physical_filter=visit.physical_filter,
            )
            assert bias is not None and flat is not None
            assert post.header["BIASID"] == str(bias.id)
            assert post.header["FLATID"] == str(flat.id)
            # The other epoch's bias is 150 ADU off: the sky level shows which was used.
            sky = float(np.median(post.image))
            assert sky == pytest.approx(truth.params.sky_adu, rel=0.03)


def test_calibrations_are_certified_with_disjoint_validity(processed_survey) -> None:
    with Butler.from_config(str(processed_survey.survey.repo)) as butler:
        associations = list(
            butler.registry.queryDatasetAssociations("bias", collections=CALIB_COLLECTION)
        )
    by_detector: dict[int, list] = {}  # type: ignore[type-arg]
    for assoc in associations:
        by_detector.setdefault(int(assoc.ref.dataId["detector"]), []).append(assoc.timespan)
    detectors = processed_survey.survey.truth().params.detectors
    assert set(by_detector) == set(range(detectors))
    for spans in by_detector.values():
        assert len(spans) == 2
        first, second = sorted(spans, key=lambda t: t.begin)
        assert not first.overlaps(second)


def test_coadd_photometry_matches_the_reference_catalog(processed_survey, butler) -> None:  # type: ignore[no-untyped-def]
    from skybatch.demo.measure import match_radec

    catalog = _refcat(processed_survey.survey.root)
    offsets = []
    for ref in butler.query_datasets("deepCoadd_src", explain=False):
        src = butler.get(ref)
        band = str(ref.dataId["band"])
        good = (~np.asarray(src["edge"])) & (~np.asarray(src["saturated"])) & (src["snr"] > 30)
        src = src[good]
        idx, _ = match_radec(
            np.asarray(src["ra"]),
            np.asarray(src["dec"]),
            np.asarray(catalog["ra"]),
            np.asarray(catalog["dec"]),
            1.0,
        )
        ok = idx >= 0
        offsets.extend(
            (np.asarray(src["mag"])[ok] - np.asarray(catalog[f"{band}_mag"])[idx[ok]]).tolist()
        )
    assert len(offsets) >= 20
    # Coadds are in nJy: calibrated magnitudes must agree with the reference catalog.
    assert float(np.median(offsets)) == pytest.approx(0.0, abs=0.05)
