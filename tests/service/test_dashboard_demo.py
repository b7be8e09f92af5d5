"""The dashboard of a real demo campaign, in a real browser, while it runs.

What an operator does after ``make demo``: the demo campaign (both steps, the real
pipeline over a tiny demo survey, the local engine) is submitted, and ``skybatch serve
--with-manager`` runs it while the dashboard shows it. A viewer sees the campaign and
no operator button, and the API refuses its session's pause; the operator pauses it
from the page (asked first) and the page shows ``paused`` without a reload; resumed
through the API, the campaign runs to its end and the open page follows it over the
event stream to ``succeeded``; then what the page shows (steps, groups, the selection
of the dynamic step) is what the state database holds, and the CLI's ``--json`` of
the campaign is the API's JSON.

Skipped with the reason when Chromium or Playwright is missing, except under CI
(as the stand-in dashboard tests, whose browser fixtures this module shares).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving import serving
from test_dashboard_browser import (  # the same server, browser and sign-in set-up
    Dashboard,
    _signed_in,
    _state_text,
    browser,
)

from skybatch.auth.tokens import create_token
from skybatch.campaign.demo import DEMO_SITES, demo_campaign_path
from skybatch.campaign.submit import submit_campaign
from skybatch.db.state import open_state_db
from skybatch.demo.params import SurveyParams
from skybatch.demo.survey import build_survey
from skybatch.read.campaigns import campaign_status, list_groups
from skybatch.settings import load_settings

__all__ = ["browser"]  # a fixture, used by name

pytestmark = pytest.mark.slow
SKYBATCH = str(Path(sys.executable).parent / "skybatch")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The demo campaign submitted over a tiny demo survey, and ``skybatch serve
    --with-manager`` running it, with a viewer and an operator token."""
    root = tmp_path_factory.mktemp("demo-dashboard")
    survey = root / "survey"
    build_survey(survey, SurveyParams(visits=3, detectors=2, size=128, seed=13))
    home = root / "home"
    settings = load_settings(home=home)
    environ = {
        **os.environ,
        "DEMO_SURVEY": str(survey),
        "DEMO_SITE": DEMO_SITES["local"],
        "DEMO_WORKERS": "2",
    }
    campaign = submit_campaign(settings, demo_campaign_path(), environ).id
    with open_state_db(settings).begin() as session:
        tokens = {
            role: create_token(session, f"{role}1", role).token for role in ("viewer", "operator")
        }
    with serving(home, "--with-manager", log=root / "serve.log") as served:
        shots = [tmp_path_factory.mktemp("screenshots")]
        if os.environ.get("SKYBATCH_TEST_SCREENSHOTS"):
            shots.append(Path(os.environ["SKYBATCH_TEST_SCREENSHOTS"]))
        yield Dashboard(served.url, settings, tokens, {"demo": campaign}, shots)


def test_the_demo_campaign_paused_resumed_and_followed_to_its_end(
    browser: Any, demo: Dashboard
) -> None:
    campaign_id = demo.campaigns["demo"]
    path = f"/ui/campaigns/{campaign_id}"
    viewer = _signed_in(browser, demo, "viewer", path)
    viewer.wait_for_selector("#state.state-running", timeout=120_000)  # the manager took it
    assert viewer.locator("button[data-action]").count() == 0
    refused = viewer.request.post(
        f"{demo.url}/api/campaigns/{campaign_id}/pause", data={}, headers={"Origin": demo.url}
    )
    assert refused.status == 403

    operator = _signed_in(browser, demo, "operator", path)
    operator.wait_for_selector("#state.state-running")
    operator.evaluate("window.notReloaded = true")
    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    operator.once("dialog", accept)
    operator.click("button[data-action=pause]")
    operator.wait_for_selector("#state.state-paused")
    assert asked and asked[0].startswith("pause campaign")
    viewer.wait_for_selector("#state.state-paused")  # the other open page, live
    demo.screenshot(operator, "demo-campaign-paused")

    resumed = demo.api("POST", f"/api/campaigns/{campaign_id}/resume", json={})
    assert resumed.status_code == 200, resumed.text
    operator.wait_for_selector("#state.state-succeeded", timeout=600_000)
    assert operator.evaluate("window.notReloaded") is True
    assert _state_text(operator) == "succeeded"

    # What the page shows is what the state database holds.
    operator.wait_for_selector("#groups tbody tr")
    with open_state_db(demo.settings)() as session:
        status = campaign_status(session, campaign_id)
        groups = list_groups(session, campaign_id)
    assert status.state == "succeeded" and groups
    steps = [row.split("\t")[:2] for row in operator.locator("#steps tbody tr").all_inner_texts()]
    assert steps == [[s.name, s.state] for s in status.steps]
    shown = [row.split("\t")[:3] for row in operator.locator("#groups tbody tr").all_inner_texts()]
    assert sorted(shown) == sorted([g.step, g.name, g.state] for g in groups)
    demo.screenshot(operator, "demo-campaign-succeeded")
    for page in (viewer, operator):
        page.context.close()

    # The CLI's JSON of the campaign is the API's, once the manager's clean-up after
    # the campaign's end (site cache, work directories) is recorded too.
    deadline = time.monotonic() + 120
    while demo.api("GET", f"/api/campaigns/{campaign_id}", role="viewer").json()["cleanup"] is None:
        assert time.monotonic() < deadline, "the campaign's clean-up was never recorded"
        time.sleep(0.5)
    for command, endpoint in (("status", ""), ("report", "/report"), ("history", "/history")):
        api = demo.api("GET", f"/api/campaigns/{campaign_id}{endpoint}", role="viewer").json()
        home = str(demo.settings.home)
        cli = subprocess.run(
            [SKYBATCH, "--home", home, "campaign", command, str(campaign_id), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(cli.stdout) == api, command
