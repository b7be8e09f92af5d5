"""Campaign files: a Butler repository to point them at and a CLI runner.

The repository is an empty one (``Butler.makeRepo``): validating a campaign only reads
its ``butler.yaml``, never its registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from campaignworld import DATA, DEMO_PIPELINES, CampaignCli


@pytest.fixture(scope="session")
def survey_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shaped like the demo survey: ``repo/butler.yaml`` and ``refcat.sqlite``."""
    from lsst.daf.butler import Butler

    root = tmp_path_factory.mktemp("campaign") / "survey"
    Butler.makeRepo(str(root / "repo"))
    (root / "refcat.sqlite").write_bytes(b"")
    return root


@pytest.fixture
def demo_env(survey_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for the demo campaign: DEMO_SURVEY set, DEMO_PIPELINES unset."""
    monkeypatch.setenv("DEMO_SURVEY", str(survey_dir))
    for name in ("DEMO_PIPELINES", "DEMO_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    return survey_dir


@pytest.fixture
def campaign_dir(tmp_path: Path, demo_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the demo campaign and its site file, with DEMO_PIPELINES pointing home."""
    target = tmp_path / "campaigns"
    target.mkdir()
    for source in DATA.glob("*.yaml"):
        shutil.copy(source, target / source.name)
    monkeypatch.setenv("DEMO_PIPELINES", str(DEMO_PIPELINES))
    return target


@pytest.fixture
def campaign_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> CampaignCli:
    return CampaignCli(tmp_path / "home", capsys)
