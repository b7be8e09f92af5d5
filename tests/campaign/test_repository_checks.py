"""``campaign validate`` checks what the repository can tell: queries name its
dimensions (the corpus in data/broken has the refusals); valid queries pass."""

from __future__ import annotations

from pathlib import Path

from campaignworld import CampaignCli

from skybatch.campaign.repochecks import query_identifiers


def test_query_identifiers_are_listed_once_in_order() -> None:
    query = "instrument = 'X' AND (visit.day_obs > 3 OR visit IN (1..5)) AND visit > :v"
    assert query_identifiers(query) == ["instrument", "visit.day_obs", "visit"]


def test_queries_on_dimensions_their_fields_and_dataset_fields_are_valid(
    campaign_dir: Path, campaign_cli: CampaignCli
) -> None:
    path = campaign_dir / "demo_campaign.yaml"
    query = (
        "visit.day_obs > 20260101 AND exposure.observation_type = 'science' "
        "AND band IN ('g', 'r') AND ingest_date > T'2020-01-01'"
    )
    path.write_text(
        path.read_text().replace(
            "    split: {by: visit}", f'    split: {{by: visit}}\n    query: "{query}"'
        )
    )
    result = campaign_cli("validate", path)
    assert result.code == 0, result.err
