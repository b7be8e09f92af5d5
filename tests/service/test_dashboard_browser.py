"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright's
Python API (``executable_path``; nothing is downloaded), against ``skybatch serve`` as a
user starts it (a uvicorn process on a free port) over a state database with stand-in
campaigns. A viewer and an operator sign in with their tokens; the pages show what the
state database holds; a viewer gets no operator buttons; the operator's pause asks for
confirmation and the page shows the new state without a reload; a change made
elsewhere reaches an open page over the server-sent-events stream.

Skipped with the reason when Chromium or Playwright is missing, except under CI
(``CI=true``; ``.ci/run`` installs Chromium with scripts/browser/install.sh), where
that fails. Screenshots go to the test's temporary directory, and to
``$SKYBATCH_TEST_SCREENSHOTS`` when set (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standins import standin_campaign

from skybatch.auth.tokens import create_token
from skybatch.db.state import open_state_db
from skybatch.read.campaigns import campaign_status, list_groups
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        for name in ("survey", "pausable", "watched")
    }
    with open_state_db(settings).begin() as session:
        tokens = {
            role: create_token(session, f"{role}1", role).token for role in ("viewer", "operator")
        }
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SKYBATCH_") or k.startswith("SKYBATCH_TEST_")
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "skybatch", "--home", str(home), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)
        shots = [tmp_path_factory.mktemp("screenshots")]
        if os.environ.get("SKYBATCH_TEST_SCREENSHOTS"):
            shots.append(Path(os.environ["SKYBATCH_TEST_SCREENSHOTS"]))
        yield Dashboard(url, settings, tokens, campaigns, shots)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


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
    dashboard.screenshot(page, "campaign-viewer")
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
