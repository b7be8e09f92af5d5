"""A tiny demo survey, built and processed once per test session with `pipetask run`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from skybatch.demo.driver import PipetaskResult, run_with_pipetask
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import Survey, build_survey

#: Two visits (one per calibration epoch), two detectors: the smallest survey that
#: exercises both calibration epochs and both filters.
TINY = SurveyParams(visits=2, detectors=2, size=256, seed=7)


@dataclass
class ProcessedSurvey:
    survey: Survey
    result: PipetaskResult


@pytest.fixture(scope="session")
def processed_survey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessedSurvey]:
    root = tmp_path_factory.mktemp("demo") / "survey"
    survey = build_survey(root, TINY)
    result = run_with_pipetask(survey, output="test/run", show_progress=False)
    yield ProcessedSurvey(survey, result)


@pytest.fixture(scope="session")
def tiny_survey_root(processed_survey: ProcessedSurvey) -> Path:
    return processed_survey.survey.root
