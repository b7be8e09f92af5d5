"""A campaign whose site cache is rooted at (in, above) its Butler repository is refused
by validate and submit, before anything is written (issue 12, defect 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from campaignworld import CampaignCli


@pytest.mark.parametrize("root", ["${DEMO_SURVEY}/repo", "${DEMO_SURVEY}/repo/cache", "/"])
def test_site_root_overlapping_the_repository_is_refused(
    campaign_dir: Path, campaign_cli: CampaignCli, demo_env: Path, root: str
) -> None:
    site = campaign_dir / "demo_site.yaml"
    site.write_text(
        site.read_text().replace("  name: site:local\n", f"  name: site:local\n  root: {root}\n")
    )
    line = next(n for n, text in enumerate(site.read_text().splitlines(), 1) if "root:" in text)
    for command in ("validate", "submit"):
        result = campaign_cli(command, campaign_dir / "demo_campaign.yaml")
        assert result.code == 2, result.err
        assert f"demo_site.yaml:{line}:" in result.err
        assert "site.root" in result.err
        assert str((demo_env / "repo").resolve()) in result.err
        assert "the Butler repository" in result.err
        campaign_cli.assert_no_database()


def test_a_site_root_beside_the_repository_is_valid(
    campaign_dir: Path, campaign_cli: CampaignCli, demo_env: Path
) -> None:
    site = campaign_dir / "demo_site.yaml"
    text = site.read_text().replace(
        "  name: site:local\n", "  name: site:local\n  root: ${DEMO_SURVEY}/cache\n"
    )
    site.write_text(text)
    result = campaign_cli("validate", campaign_dir / "demo_campaign.yaml")
    assert result.code == 0, result.err
