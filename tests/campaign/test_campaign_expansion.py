"""Expanding steps into groups: select conditions, splits, queries (a stand-in Butler)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from astropy.table import Table
from campaignworld import DEMO_CAMPAIGN, CampaignCli

from skybatch.campaign import Campaign, load_campaign
from skybatch.campaign.condition import ConditionError, parse_condition
from skybatch.campaign.expansion import ExpansionError, and_queries, expand_step


@dataclass(frozen=True)
class _Dimensions:
    required: tuple[str, ...]
    governors: tuple[str, ...]


class _DataId(dict[str, Any]):
    dimensions = _Dimensions(("instrument", "visit"), ("instrument",))


@dataclass(frozen=True)
class _Ref:
    dataId: _DataId


class FakeButler:
    """What expansion asks of a Butler: visitSummary tables and visit values."""

    def __init__(self, psf: dict[int, list[float]]) -> None:
        self.psf = psf
        self.where: list[str] = []
        self.collections: list[Any] = []

    def query_datasets(self, dataset_type: str, collections: Iterable[str], **kw: Any) -> list:
        self.collections.append(list(collections))
        return [_Ref(_DataId(instrument="DemoCam", visit=v)) for v in self.psf]

    def get(self, ref: _Ref) -> Table:
        values = self.psf[ref.dataId["visit"]]
        return Table({"psf_fwhm_arcsec": values, "n_sources": [10] * len(values)})

    def query_data_ids(self, dimensions: list[str], where: str = "", **kw: Any) -> list:
        self.where.append(where)
        found = re.search(r"visit IN \(([^)]*)\)", where)
        visits = [int(v) for v in found.group(1).split(",")] if found else list(self.psf)
        return [{"visit": v} for v in visits]


@pytest.fixture
def demo(demo_env: Path) -> Campaign:
    return load_campaign(DEMO_CAMPAIGN)


def test_conditions_are_parsed_not_evaluated() -> None:
    condition = parse_condition("psf_fwhm_arcsec < 1.6 and n_sources >= 1e2")
    assert str(condition) == "psf_fwhm_arcsec < 1.6 AND n_sources >= 100"
    assert condition.holds({"psf_fwhm_arcsec": 1.2, "n_sources": 100})
    assert not condition.holds({"psf_fwhm_arcsec": float("nan"), "n_sources": 100})
    assert not condition.holds({"psf_fwhm_arcsec": 1.2})  # a missing value holds nothing
    assert condition.rows_pass([{"psf_fwhm_arcsec": 1, "n_sources": 200}], "all")
    assert not condition.rows_pass([], "any")
    for bad in ("__import__('os').system('true') < 1", "a < b", "a < 1 OR b > 2", "a ~ 1"):
        with pytest.raises(ConditionError):
            parse_condition(bad)


def test_select_keeps_the_visits_whose_rows_pass_and_splits_the_rest(demo: Campaign) -> None:
    butler = FakeButler({1000: [1.1, 1.2], 1001: [1.5, 1.7], 1002: [1.3, 1.4]})
    runs = {"step1": ["c/1/step1/visit_1000", "c/1/step1/visit_1001"]}
    result = expand_step(demo, demo.step("step2"), runs, butler)
    assert butler.collections == [runs["step1"]]
    assert result.kept == [{"visit": 1000}, {"visit": 1002}]
    assert result.dropped == [{"visit": 1001}]
    assert result.message is not None and "kept visit=1000, visit=1002" in result.message
    (group,) = result.groups  # step2 is not split
    assert group.name == "all"
    assert group.query == "(instrument = 'DemoCam') AND (visit IN (1000, 1002))"

    step1 = demo.step("step1")  # split by visit: a group per visit
    groups = expand_step(demo, step1, {}, butler).groups
    assert [g.name for g in groups] == ["visit_1000", "visit_1001", "visit_1002"]
    assert groups[1].query == "(instrument = 'DemoCam') AND (visit = 1001)"


def test_select_any_row_and_nothing_selected(demo: Campaign) -> None:
    butler = FakeButler({1000: [1.1, 1.9], 1001: [1.7, 1.8]})
    any_row = demo.step("step2").model_copy(
        update={"select": demo.step("step2").select.model_copy(update={"match": "any"})}  # type: ignore[union-attr]
    )
    assert expand_step(demo, any_row, {"step1": ["r"]}, butler).kept == [{"visit": 1000}]
    result = expand_step(demo, demo.step("step2"), {"step1": ["r"]}, butler)
    assert result.groups == [] and result.kept == []
    assert result.message is not None and result.message.startswith("nothing selected: ")


def test_chunks_of_max_ids_and_missing_columns(demo: Campaign) -> None:
    from skybatch.campaign.config import SplitByCount

    butler = FakeButler({v: [1.0] for v in range(1000, 1005)})
    chunked = demo.step("step1").model_copy(
        update={"split": SplitByCount(max_ids=2, dimension="visit")}
    )
    groups = expand_step(demo, chunked, {}, butler).groups
    assert [g.name for g in groups] == ["visit_part0001", "visit_part0002", "visit_part0003"]
    assert groups[2].query.endswith("(visit IN (1004))")

    step2 = demo.step("step2")
    bad = step2.model_copy(
        update={"select": step2.select.model_copy(update={"where": "seeing < 1"})}  # type: ignore[union-attr]
    )
    with pytest.raises(ExpansionError, match="has no column 'seeing'") as caught:
        expand_step(demo, bad, {"step1": ["r"]}, butler)
    assert "psf_fwhm_arcsec" in (caught.value.hint or "")


def test_and_queries() -> None:
    assert and_queries("", " a = 1 ") == "a = 1"
    assert and_queries("a = 1", "", "b = 2") == "(a = 1) AND (b = 2)"


def test_validate_rejects_a_condition_the_manager_cannot_read(
    campaign_dir: Path, campaign_cli: CampaignCli
) -> None:
    path = campaign_dir / "demo_campaign.yaml"
    text = path.read_text()
    path.write_text(text.replace('"psf_fwhm_arcsec < 1.6"', '"psf_fwhm_arcsec < limit"'))
    result = campaign_cli("validate", path)
    assert result.code == 2
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "< limit" in t)
    assert f"demo_campaign.yaml:{line}:" in result.err
    assert "steps[1].select.where: cannot read the condition" in result.err
    campaign_cli.assert_no_database()
