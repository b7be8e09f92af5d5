"""A tiny demo survey per test (copied from one built per session) for end-to-end runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from runworld import Outputs, run_command, run_outputs, skybatch_killed_at

from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import Survey, build_survey


@pytest.fixture(scope="session")
def _pristine_survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "survey"
    build_survey(root, SurveyParams(visits=2, detectors=2, size=128, seed=13))
    return root


@pytest.fixture
def survey(_pristine_survey: Path, tmp_path: Path) -> Survey:
    """A fresh copy: runs write into the repository."""
    root = tmp_path / "survey"
    shutil.copytree(_pristine_survey, root, symlinks=True)
    return Survey(root)


@pytest.fixture(scope="session")
def uninterrupted_outputs(
    _pristine_survey: Path, tmp_path_factory: pytest.TempPathFactory
) -> Outputs:
    """The datasets (type, data id) of an uninterrupted `skybatch run --workers 2` of
    the demo pipeline on the tiny survey: what a killed and finished run must hold."""
    root = tmp_path_factory.mktemp("reference") / "survey"
    shutil.copytree(_pristine_survey, root, symlinks=True)
    survey = Survey(root)
    done = skybatch_killed_at(run_command(root.parent / "home", survey, "t/ref", "--workers", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    return run_outputs(survey.repo, "t/ref")
