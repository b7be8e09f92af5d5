"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright's
Python API (``executable_path``; nothing is downloaded), against ``skybatch serve`` as a
user starts it (a uvicorn process on a free port) over a state database with stand-in
campaigns. A viewer and an operator sign in with their tokens; the pages show what the
state database holds; a viewer gets no operator buttons; the operator's pause asks for
confirmation and the page shows the new state without a reload; a change made
elsewhere reaches an open page over the server-sent-events stream; the campaign page
draws its step graph, selection and figures; a run page filters jobs and shows a log
tail; the failures page retries one signature; the backbone page shows storage.

Skipped with the reason when Chromium or Playwright is missing, except under CI
(``CI=true``; ``.ci/run`` installs Chromium with scripts/browser/install.sh), where
that fails. Screenshots go to the test's temporary directory, and to
``$SKYBATCH_TEST_SCREENSHOTS`` when set (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import serving
from standins import standin_backbone, standin_campaign, standin_details

from skybatch.auth.tokens import create_token
from skybatch.db.state import open_state_db
from skybatch.read.campaigns import campaign_status, list_groups
from skybatch.read.dashboard import backbone_storage, campaign_cards
from skybatch.settings import Settings, load_settings

CHROMIUM_ENV = "SKYBATCH_TEST_CHROMIUM"
TIMEOUT_MS = 15_000


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        _missing(f"no Chromium at {path} (scripts/browser/install.sh installs Debian's)")
    return path


@dataclass
class Dashboard:
    url: str
    settings: Settings
    tokens: dict[str, str]
    campaigns: dict[str, int]
    shots: list[Path]

    def api(self, method: str, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def screenshot(self, page: Any, name: str) -> None:
        for folder in self.shots:
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """``skybatch serve`` over a state database with three running stand-in campaigns
    (one to look at, one to pause, one to change behind the page's back) and a viewer
    and an operator token."""
    home = tmp_path_factory.mktemp("dashboard") / "home"
    settings = load_settings(home=home)
    campaigns = {
        name: standin_campaign(settings, "running", name)
        for name in ("survey", "pausable", "watched", "polled")
    }
    campaigns["broken"] = standin_campaign(settings, "failed", "broken")
    standin_details(settings, campaigns["survey"], home.parent / "logs")
    standin_backbone(settings)
    with open_state_db(settings).begin() as session:
        tokens = {
            role: create_token(session, f"{role}1", role).token for role in ("viewer", "operator")
        }
    with serving(home) as served:
        shots = [tmp_path_factory.mktemp("screenshots")]
        if os.environ.get("SKYBATCH_TEST_SCREENSHOTS"):
            shots.append(Path(os.environ["SKYBATCH_TEST_SCREENSHOTS"]))
        yield Dashboard(served.url, settings, tokens, campaigns, shots)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


def _signed_in(browser: Any, dashboard: Dashboard, role: str, path: str = "/ui") -> Any:
    """A fresh browser context signed in with the ``role`` token, at ``path``."""
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(dashboard.url + path)
    assert "/ui/login" in page.url  # no session yet: the sign-in page
    page.fill("input[name=token]", dashboard.tokens[role])
    page.click("#login button")
    page.wait_for_url(re.compile(re.escape(path) + "$"))
    page.wait_for_selector("#live.on")  # the event stream is open
    return page


def _state_text(page: Any) -> str:
    return str(page.inner_text("#state"))


def test_a_wrong_token_does_not_sign_in(browser: Any, dashboard: Dashboard) -> None:
    page = browser.new_page()
    page.goto(dashboard.url + "/ui")
    page.fill("input[name=token]", "sbt_not-a-token")
    page.click("#login button")
    assert "unknown, revoked or expired token" in page.inner_text("#login-error")
    assert "/ui/login" in page.url
    page.context.close()


def test_overview_shows_each_campaign_with_state_and_progress(
    browser: Any, dashboard: Dashboard
) -> None:
    page = _signed_in(browser, dashboard, "viewer")
    assert "viewer1" in page.inner_text("#who")
    card = page.locator(f".card[data-campaign='{dashboard.campaigns['survey']}']")
    card.wait_for()
    with open_state_db(dashboard.settings)() as session:
        groups = list_groups(session, dashboard.campaigns["survey"])
    done = sum(g.state == "succeeded" for g in groups)
    assert card.locator(".state").inner_text() == "running"
    assert f"{done} of {len(groups)} groups done" in card.locator(".progress").inner_text()
    assert card.locator(".bar span.running").count() == 1
    with open_state_db(dashboard.settings)() as session:
        cards = {c.campaign.id: c for c in campaign_cards(session)}
    known = cards[dashboard.campaigns["survey"]]
    assert (known.quanta_done, known.quanta_expected, known.failed_jobs) == (1, 3, 2)
    assert card.locator(".quanta").inner_text().startswith("1 of 3 quanta")
    assert card.locator(".failures").inner_text() == "2 held or failed job(s)"
    dashboard.screenshot(page, "overview")
    page.context.close()


def test_campaign_page_shows_steps_and_groups_and_a_viewer_no_operator_buttons(
    browser: Any, dashboard: Dashboard
) -> None:
    campaign_id = dashboard.campaigns["survey"]
    page = _signed_in(browser, dashboard, "viewer", f"/ui/campaigns/{campaign_id}")
    page.wait_for_selector("#groups tbody tr")
    with open_state_db(dashboard.settings)() as session:
        status = campaign_status(session, campaign_id)
        groups = list_groups(session, campaign_id)
    steps = [row.split("\t")[:2] for row in page.locator("#steps tbody tr").all_inner_texts()]
    assert steps == [[s.name, s.state] for s in status.steps]
    shown = [row.split("\t")[:3] for row in page.locator("#groups tbody tr").all_inner_texts()]
    assert shown == [[g.step, g.name, g.state] for g in groups]
    assert "MemoryError" in page.inner_text("#failures")
    assert page.locator("button[data-action]").count() == 0
    assert page.locator("button.retry-signature").count() == 0
    # the API refuses the viewer's session the action all the same
    answer = page.request.post(
        f"{dashboard.url}/api/campaigns/{campaign_id}/pause",
        data={},
        headers={"Origin": dashboard.url},
    )
    assert answer.status == 403
    page.context.close()


def test_operator_pause_asks_first_and_the_page_shows_paused_without_reload(
    browser: Any, dashboard: Dashboard
) -> None:
    campaign_id = dashboard.campaigns["pausable"]
    page = _signed_in(browser, dashboard, "operator", f"/ui/campaigns/{campaign_id}")
    page.wait_for_selector("#state.state-running")
    page.evaluate("window.notReloaded = true")
    asked: list[str] = []

    def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("button[data-action=pause]")
    assert asked == ["pause campaign pausable?"]
    page.wait_for_timeout(300)
    assert _state_text(page) == "running"  # declined: nothing done

    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#reason", "disk maintenance")
    page.click("button[data-action=pause]")
    page.wait_for_selector("#state.state-paused")
    assert page.evaluate("window.notReloaded") is True
    assert "token:operator1" in page.inner_text("#history")
    assert dashboard.api("GET", f"/api/campaigns/{campaign_id}").json()["state"] == "paused"
    dashboard.screenshot(page, "campaign-operator-paused")
    page.context.close()


def test_a_change_made_elsewhere_reaches_the_open_page_over_the_event_stream(
    browser: Any, dashboard: Dashboard
) -> None:
    campaign_id = dashboard.campaigns["watched"]
    page = _signed_in(browser, dashboard, "viewer", f"/ui/campaigns/{campaign_id}")
    page.wait_for_selector("#state.state-running")
    page.evaluate("window.notReloaded = true")
    answer = dashboard.api("POST", f"/api/campaigns/{campaign_id}/pause", json={"reason": "cli"})
    assert answer.status_code == 200, answer.text
    page.wait_for_selector("#state.state-paused")
    assert page.evaluate("window.notReloaded") is True
    # the stream delivered it: the page names the newest state change it was sent
    with open_state_db(dashboard.settings)() as session:
        from skybatch.read.events import last_event_id

        newest = last_event_id(session)
    page.wait_for_function(f"document.getElementById('live').dataset.last == '{newest}'")
    assert page.locator("#live").get_attribute("class") == "on"
    page.context.close()


def test_campaign_page_draws_the_step_graph_selection_progress_and_resources(
    browser: Any, dashboard: Dashboard
) -> None:
    campaign_id = dashboard.campaigns["survey"]
    page = _signed_in(browser, dashboard, "viewer", f"/ui/campaigns/{campaign_id}")
    page.wait_for_selector("#graph svg g.step")
    page.wait_for_selector("#memory svg g.task")
    with open_state_db(dashboard.settings)() as session:
        status = campaign_status(session, campaign_id)
    drawn = {
        g.get_attribute("data-step"): g.get_attribute("data-state")
        for g in page.locator("#graph svg g.step").all()
    }
    assert drawn == {s.name: s.state for s in status.steps}
    assert page.locator("#graph svg line").count() == 1  # step1 -> step2
    selection = page.inner_text("#steps .selection >> nth=1")
    assert "kept 1: visit=0" in selection and "dropped 1: visit=1" in selection
    assert page.locator("#progress svg polyline.succeeded").count() == 1
    page.click("#graph g.step[data-step=step2]")  # its groups: none yet
    assert page.locator("#groups tbody tr").count() == 0
    page.click("#graph g.step[data-step=step1]")
    assert page.locator("#groups tbody tr").count() == 3
    assert [t.get_attribute("data-task") for t in page.locator("#cpu svg g.task").all()] == [
        "calibrate",
        "measure",
    ]
    dashboard.screenshot(page, "campaign-figures")
    page.context.close()


def test_run_page_filters_jobs_by_state_and_shows_a_failed_jobs_log_tail(
    browser: Any, dashboard: Dashboard
) -> None:
    campaign_id = dashboard.campaigns["survey"]
    page = _signed_in(browser, dashboard, "viewer", f"/ui/campaigns/{campaign_id}")
    page.wait_for_selector("#groups tbody tr")
    run = f"survey/{campaign_id}/step1/g0"
    page.click(f"#groups a:text-is('{run}')")
    page.wait_for_selector("#jobs tbody tr.job")
    assert page.inner_text("#summary").startswith(f"run {run}")
    assert len(page.locator("#jobs tbody tr").all()) == 3
    page.select_option("#state-filter", "held")
    page.wait_for_function("document.querySelectorAll('#jobs tbody tr').length == 2")
    held = page.locator("#jobs tbody tr[data-job=a1]").inner_text().split("\t")
    assert held == [
        "a1",
        "calibrate",
        "held",
        "1",
        "oom",
        "1",
        "512",
        "MemoryError: job 0 over 512 MB",
    ]
    page.click("#jobs tbody tr[data-job=a1]")
    page.wait_for_selector("pre#log-tail")
    tail = page.inner_text("pre#log-tail").splitlines()
    assert len(tail) == 50 and tail[-1] == "MemoryError: job 0 over 512 MB"
    dashboard.screenshot(page, "run")
    page.context.close()


def test_failures_page_groups_by_signature_and_the_operator_retries_one(
    browser: Any, dashboard: Dashboard
) -> None:
    campaign_id = dashboard.campaigns["broken"]
    path = f"/ui/campaigns/{campaign_id}/failures"
    viewer = _signed_in(browser, dashboard, "viewer", path)
    viewer.wait_for_selector(".signature")
    kinds = [s.get_attribute("data-failure") for s in viewer.locator(".signature").all()]
    failures = dashboard.api("GET", f"/api/campaigns/{campaign_id}/failures", "viewer").json()
    assert kinds == [f["failure"] for f in failures] and len(kinds) == 2
    assert viewer.locator("button.retry-signature").count() == 0
    viewer.context.close()

    page = _signed_in(browser, dashboard, "operator", path)
    page.wait_for_selector(".signature[data-failure=oom] button.retry-signature")
    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click(".signature[data-failure=oom] button.retry-signature")
    page.wait_for_selector("#outcome:has-text('retried')")
    assert "with 1024 MB" in asked[0]
    assert "token:operator1" in page.inner_text("#outcome")
    campaign = dashboard.api("GET", f"/api/campaigns/{campaign_id}", "viewer").json()
    assert campaign["state"] != "failed"
    dashboard.screenshot(page, "failures")
    page.context.close()


def test_backbone_page_shows_pinned_and_cached_bytes_and_files_waiting_on_recall(
    browser: Any, dashboard: Dashboard
) -> None:
    page = _signed_in(browser, dashboard, "viewer", "/ui/backbone")
    page.wait_for_selector("#endpoints tbody tr[data-endpoint=site]")
    with open_state_db(dashboard.settings)() as session:
        storage = backbone_storage(session)
    assert storage.pinned_bytes == 1_000_000 and storage.recall_waiting_files == 2
    assert page.inner_text("#pinned") == "1.0 MB"
    assert page.inner_text("#cached") == "2.0 MB"
    assert page.inner_text("#recall") == "2"
    site = page.inner_text("#endpoints tbody tr[data-endpoint=site]").split("\t")
    assert site[-1] == "2 · 2.0 MB"
    archive = page.inner_text("#endpoints tbody tr[data-endpoint=archive]").split("\t")
    assert archive[5] == "2 · 2.0 MB"  # on tape only
    dashboard.screenshot(page, "backbone")
    page.context.close()


def test_without_the_event_stream_the_page_polls(browser: Any, dashboard: Dashboard) -> None:
    """A proxy that drops the stream (here: the browser refuses /api/events) leaves the
    page polling every 5 s: a change made elsewhere still shows without a reload."""
    campaign_id = dashboard.campaigns["polled"]
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/api/events*", lambda route: route.abort())
    page = context.new_page()
    page.goto(f"{dashboard.url}/ui/campaigns/{campaign_id}")
    page.fill("input[name=token]", dashboard.tokens["viewer"])
    page.click("#login button")
    page.wait_for_selector("#state.state-running")
    page.wait_for_function("document.getElementById('live').textContent.includes('polling')")
    page.evaluate("window.notReloaded = true")
    answer = dashboard.api("POST", f"/api/campaigns/{campaign_id}/pause", json={})
    assert answer.status_code == 200, answer.text
    page.wait_for_selector("#state.state-paused")
    assert page.evaluate("window.notReloaded") is True
    context.close()
