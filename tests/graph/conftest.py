"""A tiny demo survey and its expansion, built once per test module.

Module scope (not session): one module executes a graph into the repository, and the
others must not see its outputs.
"""

from __future__ import annotations

from typing import Any

import pytest

from skybatch.demo.driver import pipeline_path
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import DEFAULTS, Survey, build_survey
from skybatch.graph.expand import ExpansionResult, expand

#: Two visits in two filters, two detectors: every task has quanta, coadds overlap.
PARAMS = SurveyParams(visits=2, detectors=2, size=128, seed=11)
RUN = "graphtest/run1"


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Survey:
    return build_survey(tmp_path_factory.mktemp("graph") / "survey", PARAMS)


@pytest.fixture(scope="module")
def expansion(survey: Survey) -> ExpansionResult:
    return expand(
        survey.repo, str(pipeline_path()), [DEFAULTS], RUN, "", survey.root / "out" / "graph.qg"
    )


@pytest.fixture(scope="module")
def build_kwargs(survey: Survey, expansion: ExpansionResult) -> dict[str, Any]:
    """The keyword arguments of build_workflow that every test passes the same way."""
    return {
        "repo": survey.repo,
        "butler_config": survey.repo / "butler.yaml",
        "run": expansion.output_run,
        "pipeline": expansion.pipeline,
        "input_collections": expansion.input_collections,
        "where": expansion.where,
        "expansion_s": expansion.expansion_s,
    }
