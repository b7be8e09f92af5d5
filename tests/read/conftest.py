"""A state database with real campaign runs to read, built once per backend.

On the tiny demo survey (3 visits, 2 detectors), the demo campaign runs to its end
(step 2 keeps the good-seeing visits) and a second campaign fails: calibrate runs out
of memory on both attempts, so its group fails with two held jobs. The world is only
read by the tests; SQLite always, PostgreSQL when ``SKYBATCH_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import pytest
from readworld import ReadWorld, oom_campaign

from skybatch.campaign.demo import run_demo_campaign
from skybatch.campaign.manager import Manager
from skybatch.campaign.submit import submit_campaign
from skybatch.db.engine import upgrade
from skybatch.settings import load_settings


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ReadWorld:
    from skybatch.demo.params import SurveyParams
    from skybatch.demo.survey import build_survey

    root = tmp_path_factory.mktemp(f"read-{request.param}")
    survey = root / "survey"
    build_survey(survey, SurveyParams(visits=3, detectors=2, size=128, seed=13))
    db = {}
    if request.param == "postgres":
        db = {"url": request.getfixturevalue("session_postgres_url")}
        upgrade(db["url"])  # a server database is migrated by the operator
    settings = load_settings(home=root / "home", db=db)
    lines: list[str] = []
    demo = run_demo_campaign(settings, survey, workers=2, say=lines.append)
    assert demo.succeeded, "\n".join(lines)
    oom_id = submit_campaign(settings, oom_campaign(root, survey)).id
    with Manager(settings, say=lines.append) as manager:
        assert manager.run_until_done(oom_id) == "failed"
    return ReadWorld(settings, survey, demo.campaign_id, oom_id)
