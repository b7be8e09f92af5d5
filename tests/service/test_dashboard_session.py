"""The dashboard's session (issue 14, live updates): ``/ui/login`` checks a token and
keeps it in an HttpOnly, SameSite=Strict cookie; the API accepts the cookie as it
accepts a bearer token (so a browser's EventSource, which cannot send a header,
follows /api/events), but an action authenticated by the cookie must come from the
service's own origin (no cross-site request forgery)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standins import standin_backbone, standin_campaign, standin_details

from skybatch.auth.tokens import create_token
from skybatch.db.models import utcnow
from skybatch.db.state import open_state_db
from skybatch.service.app import create_app
from skybatch.settings import load_settings

ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def site(db_url: str, tmp_path: Path) -> tuple[TestClient, dict[str, str], int]:
    settings = load_settings(home=tmp_path / "home", db={"url": db_url})
    campaign_id = standin_campaign(settings, "running")
    standin_details(settings, campaign_id, tmp_path / "logs")
    standin_backbone(settings)
    with open_state_db(settings).begin() as session:
        tokens = {r: create_token(session, r, r).token for r in ("viewer", "operator")}
    return TestClient(create_app(settings), follow_redirects=False), tokens, campaign_id


def _sign_in(client: TestClient, token: str, headers: dict[str, str] = ORIGIN) -> int:
    answer = client.post(
        "/ui/login",
        content=f"token={token}&next=/ui/campaigns/1",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    return answer.status_code


def test_pages_send_a_browser_without_session_to_the_login_page(site: tuple) -> None:
    client, _, campaign_id = site
    answer = client.get(f"/ui/campaigns/{campaign_id}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/ui/login?next=/ui/campaigns/{campaign_id}"
    assert "sign in" in client.get("/ui/login").text


def test_login_sets_an_httponly_strict_cookie_and_the_api_accepts_it(site: tuple) -> None:
    client, tokens, campaign_id = site
    answer = client.post(
        "/ui/login",
        content=f"token={tokens['viewer']}&next=/ui/campaigns/{campaign_id}",
        headers={"Content-Type": "application/x-www-form-urlencoded", **ORIGIN},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/ui/campaigns/{campaign_id}"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/api/campaigns").status_code == 200
    page = client.get(f"/ui/campaigns/{campaign_id}")
    assert page.status_code == 200 and "viewer" in page.text
    assert 'data-action="pause"' not in page.text  # a viewer's page has no operator buttons
    stream = client.get(f"/api/events?campaign={campaign_id}&after=0&wait_s=0.1")
    assert stream.status_code == 200 and "event: state" not in stream.text


def test_a_wrong_token_or_a_foreign_next_does_not_get_through(site: tuple) -> None:
    client, tokens, _ = site
    assert _sign_in(client, "sbt_wrong") == 401
    assert client.get("/api/campaigns").status_code == 401
    assert _sign_in(client, tokens["viewer"], {"Origin": "http://evil.example"}) == 403
    answer = client.post(
        "/ui/login",
        content=f"token={tokens['viewer']}&next=//evil.example/x",
        headers={"Content-Type": "application/x-www-form-urlencoded", **ORIGIN},
    )
    assert answer.headers["location"] == "/ui"


def test_a_cookie_session_acts_only_from_its_own_origin(site: tuple) -> None:
    client, tokens, campaign_id = site
    assert _sign_in(client, tokens["operator"]) == 303
    pause = f"/api/campaigns/{campaign_id}/pause"
    assert client.post(pause, json={}).status_code == 403  # no Origin, no Referer
    assert client.post(pause, json={}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post(pause, json={}, headers={"Origin": "null"}).status_code == 403
    answer = client.post(pause, json={}, headers={"Referer": "http://testserver/ui"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["actor"] == "token:operator"
    # a bearer token needs no origin (scripts), and wins over the cookie
    resume = f"/api/campaigns/{campaign_id}/resume"
    viewer = {"Authorization": f"Bearer {tokens['viewer']}", **ORIGIN}
    assert client.post(resume, json={}, headers=viewer).status_code == 403
    operator = {"Authorization": f"Bearer {tokens['operator']}"}
    assert client.post(resume, json={}, headers=operator).status_code == 200


def test_logout_drops_the_session(site: tuple) -> None:
    client, tokens, _ = site
    assert _sign_in(client, tokens["viewer"]) == 303
    assert client.post("/ui/logout", headers=ORIGIN).status_code == 303
    assert client.get("/api/campaigns").status_code == 401


def test_the_figures_are_svg_for_a_session_only(site: tuple) -> None:
    client, tokens, campaign_id = site
    figures = [
        f"/ui/campaigns/{campaign_id}/{f}.svg" for f in ("graph", "progress", "cpu", "memory")
    ]
    assert all(client.get(f).status_code == 401 for f in figures)
    assert _sign_in(client, tokens["viewer"]) == 303
    for figure in figures:
        answer = client.get(figure)
        assert answer.status_code == 200, (figure, answer.text)
        assert answer.headers["content-type"].startswith("image/svg+xml")
        assert answer.text.startswith("<svg") and answer.text.endswith("</svg>")
    assert 'data-step="step2" data-state="waiting"' in client.get(figures[0]).text
    assert "succeeded 10" in client.get(figures[1]).text  # quanta of g0's 3 jobs and g1's
    assert 'data-task="measure"' in client.get(figures[2]).text
    assert client.get(f"/ui/campaigns/{campaign_id}/disk.svg").status_code == 422
    assert client.get("/ui/campaigns/999/graph.svg").status_code == 404


def test_backbone_storage_counts_pinned_cached_and_recall_waiting_files(site: tuple) -> None:
    client, tokens, _ = site
    answer = client.get(
        "/api/backbone/storage", headers={"Authorization": f"Bearer {tokens['viewer']}"}
    )
    assert answer.status_code == 200
    storage = answer.json()
    assert (storage["pinned_bytes"], storage["cached_bytes"], storage["recall_waiting_files"]) == (
        1_000_000,
        2_000_000,
        2,
    )
    archive, site_ = storage["endpoints"]
    assert (archive["name"], archive["nearline_files"], archive["cached_bytes"]) == (
        "archive",
        2,
        0,
    )
    assert (site_["pinned_files"], site_["recall_waiting_bytes"]) == (1, 2_000_000)


def test_figures_escape_what_they_draw() -> None:
    from skybatch.read.dashboard import StepNode
    from skybatch.service.plots import graph_svg

    drawn = graph_svg(
        [StepNode(name="<script>x</script>", state="running", depends_on=[], layer=0)]
    )
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn


def test_figures_follow_new_quanta_and_quartiles_match_the_sample(
    db_url: str, tmp_path: Path
) -> None:
    """The figures a page redraws are kept only while the campaign's quanta are the
    same; the box plots' quartiles are those of the sample within a 500th of its range."""
    import random
    import statistics

    from sqlalchemy import select

    from skybatch.read.dashboard import task_resources
    from skybatch.run.models import JobRow, QuantumRunRow

    settings = load_settings(home=tmp_path / "home", db={"url": db_url})
    campaign_id = standin_campaign(settings, "running")
    standin_details(settings, campaign_id, tmp_path / "logs")
    with open_state_db(settings).begin() as session:
        token = create_token(session, "v", "viewer").token
    client = TestClient(create_app(settings), follow_redirects=False)
    assert _sign_in(client, token) == 303
    figure = f"/ui/campaigns/{campaign_id}/progress.svg"
    assert "succeeded 10" in client.get(figure).text
    rng = random.Random(7)
    cpu = [rng.lognormvariate(3, 1) for _ in range(2000)]
    with open_state_db(settings).begin() as session:
        job = session.scalars(select(JobRow).where(JobRow.label == "calibrate")).first()
        assert job is not None
        before = session.scalars(
            select(QuantumRunRow.cpu_s).where(QuantumRunRow.task_label == "calibrate")
        ).all()
        for i, value in enumerate(cpu):
            session.add(
                QuantumRunRow(
                    run_id=job.run_id,
                    job_id=job.id,
                    attempt=2,
                    quantum_id=f"extra-{i}",
                    task_label="calibrate",
                    status="succeeded",
                    end=utcnow(),
                    cpu_s=value,
                )
            )
    assert "succeeded 2,010" in client.get(figure).text
    sample = [*cpu, *[v for v in before if v is not None]]
    with open_state_db(settings)() as session:
        calibrate = next(t for t in task_resources(session, campaign_id) if t.task == "calibrate")
    d = calibrate.cpu_s
    assert (d.count, d.min, d.max) == (len(sample), min(sample), max(sample))
    exact = statistics.quantiles(sample, n=4, method="inclusive")
    tolerance = (max(sample) - min(sample)) / 500 * 2
    for got, want in zip((d.q1, d.median, d.q3), exact, strict=True):
        assert got is not None and abs(got - want) <= tolerance, (got, want)
    assert calibrate.peak_memory_mb.count == len(before)


def test_the_overview_gives_quanta_failures_rate_and_eta(site: tuple) -> None:
    """A running campaign whose quanta ended in the last 10 minutes has a rate, and an
    ETA for the quanta of its jobs not yet done; a finished one has neither."""
    client, tokens, campaign_id = site
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    card = client.get("/api/overview", headers=viewer).json()[0]
    assert card["campaign"]["id"] == campaign_id
    # g0's 3 jobs (1 quantum each): 1 succeeded, 2 held; its quanta ended 30-60 min ago
    assert (card["quanta_done"], card["quanta_expected"], card["failed_jobs"]) == (1, 3, 2)
    assert (card["quanta_per_s"], card["eta"]) == (0.0, None)


def test_a_running_campaigns_rate_gives_its_eta(db_url: str, tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from sqlalchemy import select

    from skybatch.read.dashboard import campaign_cards
    from skybatch.run.models import JobRow, QuantumRunRow, RunRow

    settings = load_settings(home=tmp_path / "home", db={"url": db_url})
    running = standin_campaign(settings, "running", "busy")
    paused = standin_campaign(settings, "paused", "resting")
    with open_state_db(settings).begin() as session:
        for job in session.scalars(select(JobRow)):
            for i in range(30):  # 30 quanta per job ended a minute ago: 60 per campaign
                session.add(
                    QuantumRunRow(
                        run_id=job.run_id,
                        job_id=job.id,
                        attempt=1,
                        quantum_id=f"{job.id}-{i}",
                        task_label=job.label,
                        status="succeeded" if job.state == "succeeded" else "failed",
                        end=utcnow() - timedelta(minutes=1),
                    )
                )
        for run in session.scalars(select(RunRow)):  # ended long ago, then resumed
            run.finished_at = utcnow() - timedelta(hours=2)
    before = utcnow()
    with open_state_db(settings)() as session:
        cards = {c.campaign.id: c for c in campaign_cards(session)}
    busy, resting = cards[running], cards[paused]
    assert busy.quanta_per_s == pytest.approx(30 / 600)
    assert busy.eta is not None
    # 2 quanta left at 0.05 per second: 40 s from now
    eta: datetime = busy.eta
    assert 35 <= (eta - before).total_seconds() <= 45
    assert resting.eta is None and resting.quanta_per_s == 0.0  # only running campaigns


def test_every_page_of_a_campaigns_jobs_is_the_slice_of_them_all(
    db_url: str, tmp_path: Path
) -> None:
    """campaign_jobs finds a page by counting each run's matching jobs first; its pages,
    whatever the offset, limit and filters, are those of the whole ordered list."""
    from sqlalchemy import select

    from skybatch.campaign.models import CampaignGroupRow, CampaignStepRow
    from skybatch.read.jobs import campaign_jobs
    from skybatch.run.models import JobRow, RunRow

    settings = load_settings(home=tmp_path / "home", db={"url": db_url})
    standin_campaign(settings, "running", "first")
    campaign_id = standin_campaign(settings, "failed", "second")
    with open_state_db(settings).begin() as session:  # step2 gets a group too, run first
        step2 = session.scalar(
            select(CampaignStepRow).where(
                CampaignStepRow.name == "step2", CampaignStepRow.campaign_id == campaign_id
            )
        )
        assert step2 is not None
        run = RunRow(
            name="second/x/step2/g0",
            repo="/r",
            pipeline="p",
            workdir="/w",
            state="running",
            summary={},
        )
        session.add(run)
        session.flush()
        session.add(
            CampaignGroupRow(
                campaign_id=campaign_id,
                step_id=step2.id,
                name="g0",
                position=0,
                data_query="",
                state="running",
                run_name=run.name,
            )
        )
        for i in range(5):
            session.add(
                JobRow(
                    run_id=run.id,
                    name=f"c{i}",
                    label="coadd",
                    state="held" if i % 2 else "succeeded",
                    memory_mb=1,
                    walltime_s=1,
                    failure="oom" if i % 2 else None,
                )
            )
    with open_state_db(settings)() as session:
        everything = campaign_jobs(session, campaign_id)
        ordered = session.execute(  # step, group and job order, as one query sorts them
            select(RunRow.name, JobRow.name)
            .join(RunRow, RunRow.id == JobRow.run_id)
            .join(CampaignGroupRow, CampaignGroupRow.run_name == RunRow.name)
            .join(CampaignStepRow, CampaignStepRow.id == CampaignGroupRow.step_id)
            .where(CampaignGroupRow.campaign_id == campaign_id)
            .order_by(CampaignStepRow.position, CampaignGroupRow.position, JobRow.id)
        ).all()
        assert [(j.run, j.name) for j in everything] == [tuple(r) for r in ordered]
        assert everything[-1].run == "second/x/step2/g0"
        filters: dict[str, Any]
        for filters in (
            {},
            {"states": ["held"]},
            {"failure": "oom"},
            {"label": "coadd"},
            {"step": "step2"},
        ):
            whole = campaign_jobs(session, campaign_id, **filters)
            for offset in range(len(whole) + 2):
                for limit in (1, 2, 3, 100):
                    page = campaign_jobs(
                        session, campaign_id, offset=offset, limit=limit, **filters
                    )
                    assert page == whole[offset : offset + limit], (filters, offset, limit)
            assert campaign_jobs(session, campaign_id, offset=2, **filters) == whole[2:]
