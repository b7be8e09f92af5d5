"""Campaign files: a Butler repository to point them at and a CLI runner.

The repository has the collections the demo campaign names and no data: validating a
campaign checks its collections, expanding it needs data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from campaignworld import DATA, DEMO_PIPELINES, CampaignCli, make_survey_repo


@pytest.fixture(scope="session")
def survey_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory shaped like the demo survey: ``repo/`` and ``refcat.sqlite``."""
    return make_survey_repo(tmp_path_factory.mktemp("campaign") / "survey")


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


@pytest.fixture(scope="session")
def _pristine_demo_survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real demo survey, built once: 3 visits (bands g, r, g), 2 detectors."""
    from skybatch.demo.params import SurveyParams
    from skybatch.demo.survey import build_survey

    root = tmp_path_factory.mktemp("pristine-demo") / "survey"
    build_survey(root, SurveyParams(visits=3, detectors=2, size=128, seed=13))
    return root


@pytest.fixture
def demo_survey(_pristine_demo_survey: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny demo survey (campaigns write into its repository)."""
    root = tmp_path / "demo-survey"
    shutil.copytree(_pristine_demo_survey, root, symlinks=True)
    return root


@pytest.fixture
def empty_survey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test survey-shaped directory with a repository without data, as DEMO_SURVEY."""
    root = make_survey_repo(tmp_path / "empty-survey")
    monkeypatch.setenv("DEMO_SURVEY", str(root))
    return root
