"""The REST service against a real state database (SQLite; PostgreSQL when set): every
endpoint's answer per role (401 without a token, 403 below its role), 404 for unknown
ids, 409 for the loser of two operators acting at once (nothing of it written), the
token's name in the campaign history, /metrics, and the CLI's ``--json`` equal to the
API's JSON."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from standins import standin_campaign, waiting_campaign

from skybatch.auth.models import TokenRow
from skybatch.auth.tokens import create_token
from skybatch.campaign.models import CampaignEventRow, CampaignGroupRow
from skybatch.cli.main import main
from skybatch.db.state import open_state_db
from skybatch.service.app import create_app
from skybatch.settings import Settings, load_settings

ROLES = ("viewer", "operator", "admin")


@dataclass
class Service:
    settings: Settings
    client: TestClient
    tokens: dict[str, str]  # role -> secret (token named after its role)
    campaign_id: int

    def get(self, path: str, role: str | None = "viewer", **kw: Any) -> Any:
        return self.client.get(path, headers=self.auth(role), **kw)

    def post(self, path: str, role: str | None = "operator", **kw: Any) -> Any:
        return self.client.post(path, headers=self.auth(role), **kw)

    def auth(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    def cli(self, *args: str) -> list[str]:
        return ["--home", str(self.settings.home), "--db-url", self.settings.database_url(), *args]


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Service:
    settings = load_settings(home=tmp_path / "home", db={"url": db_url})
    campaign_id = standin_campaign(settings, "running")
    secrets = {}
    with open_state_db(settings).begin() as session:
        for role in ROLES:
            secrets[role] = create_token(session, role, role).token
    client = TestClient(create_app(settings))
    return Service(settings, client, secrets, campaign_id)


# -- the auth matrix -------------------------------------------------------------------------
#: (method, path from a fresh campaign id and the service, lowest role, campaign state)
Path_ = Callable[[int, Service], str]
ENDPOINTS: list[tuple[str, Path_, str, str]] = [
    ("GET", lambda c, s: "/metrics", "viewer", "running"),
    ("GET", lambda c, s: "/api/campaigns", "viewer", "running"),
    ("GET", lambda c, s: "/api/campaigns?state=running&offset=0&limit=5", "viewer", "running"),
    ("GET", lambda c, s: f"/api/campaigns/{c}", "viewer", "running"),
    ("GET", lambda c, s: f"/api/campaigns/{c}/report", "viewer", "running"),
    ("GET", lambda c, s: f"/api/campaigns/{c}/steps", "viewer", "running"),
    (
        "GET",
        lambda c, s: f"/api/campaigns/{c}/groups?step=step1&state=running",
        "viewer",
        "running",
    ),
    ("GET", lambda c, s: f"/api/campaigns/{c}/jobs?state=held&task=measure", "viewer", "running"),
    ("GET", lambda c, s: f"/api/campaigns/{c}/failures", "viewer", "running"),
    ("GET", lambda c, s: f"/api/campaigns/{c}/history", "viewer", "running"),
    ("GET", lambda c, s: "/api/runs", "viewer", "running"),
    ("GET", lambda c, s: f"/api/runs/standin/{c}/step1/g0", "viewer", "running"),
    ("GET", lambda c, s: f"/api/runs/standin/{c}/step1/g0/jobs?failure=oom", "viewer", "running"),
    ("POST", lambda c, s: f"/api/campaigns/{c}/pause", "operator", "running"),
    ("POST", lambda c, s: f"/api/campaigns/{c}/resume", "operator", "paused"),
    ("POST", lambda c, s: f"/api/campaigns/{c}/cancel", "operator", "running"),
    ("POST", lambda c, s: f"/api/campaigns/{c}/retry", "operator", "failed"),
    ("GET", lambda c, s: f"/api/runs/standin/{c}/step1/g0/jobs/a1?tail=5", "viewer", "running"),
    ("GET", lambda c, s: "/api/backbone/endpoints", "viewer", "running"),
    ("GET", lambda c, s: "/api/backbone/usage?by=run", "viewer", "running"),
    ("GET", lambda c, s: "/api/backbone/storage", "viewer", "running"),
    ("GET", lambda c, s: "/api/overview?state=running&limit=5", "viewer", "running"),
    ("GET", lambda c, s: "/api/files?id=1", "viewer", "running"),
    ("GET", lambda c, s: f"/api/events?campaign={c}&after=0&wait_s=0.1", "viewer", "running"),
    ("GET", lambda c, s: "/api/tokens", "admin", "running"),
    ("POST", lambda c, s: "/api/tokens", "admin", "running"),
    ("DELETE", lambda c, s: "/api/tokens/viewer", "admin", "running"),
    ("GET", lambda c, s: f"/api/files/{_a_file(s)[0]}/provenance", "viewer", "running"),
    ("GET", lambda c, s: f"/api/files/provenance?path={_a_file(s)[1]}", "viewer", "running"),
    ("POST", lambda c, s: f"/api/backbone/endpoints/{_archive(s)}/verify", "admin", "running"),
    ("POST", lambda c, s: f"/api/backbone/endpoints/{_archive(s)}/evict", "admin", "running"),
    ("POST", lambda c, s: f"/api/backbone/endpoints/{_archive(s)}/recover", "admin", "running"),
    # Bodies the endpoint refuses (422/404) once the token passed: what is checked here
    # is who gets past authentication and the role; what they do is tested on its own
    # (tests/campaign/test_campaign_upload_api.py, the failures retry test below).
    ("POST", lambda c, s: "/api/campaigns/validate", "operator", "running"),
    ("POST", lambda c, s: "/api/campaigns", "operator", "running"),
    ("POST", lambda c, s: f"/api/campaigns/{c}/failures/retry", "operator", "failed"),
]

#: JSON bodies of the matrix's requests (by path); the others send none.
BODIES: dict[str, dict[str, Any]] = {
    "/api/tokens": {"name": "matrix", "role": "viewer"},
    "/api/backbone/endpoints/archive/verify": {},
    "/api/backbone/endpoints/archive/evict": {"all": True},
    "/api/campaigns/validate": {"main": "c.yaml", "files": {"c.yaml": "name: [\n"}},
    "/api/campaigns": {"main": "c.yaml", "files": {"c.yaml": "name: [\n"}},
}
#: Endpoints whose allowed requests above are refused for their body, not their token.
BODY_REFUSED = {"/api/campaigns/validate", "/api/campaigns", "/failures/retry"}


def _archive(service: Service) -> str:
    """The name of the backbone's archive endpoint (made with a file if missing)."""
    _a_file(service)
    return "archive"


def _a_file(service: Service) -> tuple[int, str]:
    """A file in the backbone catalog (registered once per service)."""
    from skybatch.backbone.catalog import Catalog, FileRecord

    catalog = Catalog(open_state_db(service.settings))
    path = "standin/raw/r1.fits"
    found = catalog.files_by_paths([path])
    if not found:
        catalog.add_endpoint("archive", "archive", str(service.settings.home / "archive"))
        catalog.register([FileRecord(path=path, size_bytes=1, md5="0" * 32)], "archive")
        found = catalog.files_by_paths([path])
    return found[path].id, path


@pytest.mark.parametrize(("method", "path", "lowest", "state"), ENDPOINTS)
def test_every_endpoint_needs_a_token_of_its_role(
    service: Service, method: str, path: Path_, lowest: str, state: str
) -> None:
    for role in (None, *ROLES):
        campaign_id = standin_campaign(service.settings, state)  # each request its own
        url = path(campaign_id, service)
        plain = url.split("?")[0]
        body = BODIES.get(plain) if method == "POST" else None
        answer = service.client.request(method, url, headers=service.auth(role), json=body)
        if role is None:
            expected = 401
            assert answer.headers["www-authenticate"] == "Bearer"
        elif ROLES.index(role) < ROLES.index(lowest):
            expected = 403
        elif method == "POST" and any(plain.endswith(end) for end in BODY_REFUSED):
            assert answer.status_code in (404, 422), (role, url, answer.text)
            continue
        else:
            assert 200 <= answer.status_code < 300, (role, url, answer.text)
            continue
        assert answer.status_code == expected, (role, url, answer.text)


def test_the_auth_matrix_has_every_endpoint_of_the_api(service: Service) -> None:
    # A new endpoint cannot be left out of the matrix above: every method and path of
    # the OpenAPI schema (but /healthz, open to all, tested below) has a request there.
    asked = [(method, path(1, service).split("?")[0]) for method, path, _, _ in ENDPOINTS]
    missing = []
    for template, methods in service.client.get("/openapi.json").json()["paths"].items():
        if template == "/healthz":
            continue
        parts = re.split(r"\{(\w+)\}", template)  # text, name, text, name, ..., text
        pattern = "".join(
            re.escape(part) if i % 2 == 0 else (".+" if part == "run" else "[^/]+")
            for i, part in enumerate(parts)
        )
        for method in methods:
            if not any(m == method.upper() and re.fullmatch(pattern, u) for m, u in asked):
                missing.append(f"{method.upper()} {template}")
    assert not missing, f"endpoints missing from the auth matrix: {missing}"


def test_a_wrong_revoked_or_expired_token_is_401(service: Service) -> None:
    assert (
        service.client.get("/api/campaigns", headers={"Authorization": "Bearer sbt_x"}).status_code
        == 401
    )
    assert (
        service.client.get("/api/campaigns", headers={"Authorization": "Basic abc"}).status_code
        == 401
    )
    assert main(service.cli("token", "revoke", "viewer")) == 0
    assert service.get("/api/campaigns", "viewer").status_code == 401
    assert service.get("/api/campaigns", "operator").status_code == 200


def test_healthz_needs_no_token_and_docs_list_the_endpoints(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    paths = service.client.get("/openapi.json").json()["paths"]
    assert "/api/campaigns/{campaign_id}/pause" in paths
    assert "/api/runs/{run}/jobs" in paths
    assert service.client.get("/docs").status_code == 200


# -- reads ---------------------------------------------------------------------------------
def test_reads_filter_and_page(service: Service) -> None:
    other = standin_campaign(service.settings, "failed", name="other")
    c = service.campaign_id
    listed = service.get("/api/campaigns").json()
    assert [x["id"] for x in listed] == [c, other]
    assert [x["id"] for x in service.get("/api/campaigns?state=failed").json()] == [other]
    assert [x["id"] for x in service.get("/api/campaigns?offset=1&limit=1").json()] == [other]
    assert listed[0]["groups"] == {"running": 1, "ready": 2}
    steps = service.get(f"/api/campaigns/{c}/steps").json()
    assert [(s["name"], s["state"], s["jobs"]) for s in steps] == [
        ("step1", "running", {"succeeded": 1, "held": 2}),
        ("step2", "waiting", {}),
    ]
    groups = service.get(f"/api/campaigns/{c}/groups?state=ready").json()
    assert [g["name"] for g in groups] == ["g1", "g2"]
    jobs = service.get(f"/api/campaigns/{other}/jobs?state=held").json()
    assert [(j["run"], j["name"]) for j in jobs] == [
        (f"other/{other}/step1/g{g}", n) for g in (0, 1) for n in ("a1", "b0")
    ]
    oom = service.get(f"/api/campaigns/{other}/jobs?failure=oom&limit=1&offset=1").json()
    assert [(j["run"], j["name"], j["failure"]) for j in oom] == [
        (f"other/{other}/step1/g1", "a1", "oom")
    ]
    assert [j["name"] for j in service.get(f"/api/campaigns/{other}/jobs?task=measure").json()] == [
        "b0",
        "b0",
    ]
    failures = service.get(f"/api/campaigns/{other}/failures").json()
    # the numbers in the errors are masked: one signature per cause, two jobs each
    assert sorted((f["failure"], f["count"], f["tasks"]) for f in failures) == [
        ("error", 2, ["measure"]),
        ("oom", 2, ["calibrate"]),
    ]
    run = service.get(f"/api/runs/other/{other}/step1/g1").json()
    assert (run["run"], run["jobs"]) == (f"other/{other}/step1/g1", {"succeeded": 1, "held": 2})
    run_jobs = service.get(f"/api/runs/other/{other}/step1/g1/jobs?state=held&task=calibrate")
    assert [j["name"] for j in run_jobs.json()] == ["a1"]
    assert service.get("/api/campaigns?limit=0").status_code == 422


def test_a_jobs_attempts_and_log_tail(service: Service, tmp_path: Path) -> None:
    from skybatch.run.models import JobAttemptRow, JobRow, RunRow

    c = service.campaign_id
    run = f"standin/{c}/step1/g0"
    attempt_dir = tmp_path / "jobs" / "a1" / "attempt-2"
    attempt_dir.mkdir(parents=True)
    (attempt_dir / "job.log").write_text("".join(f"line {i}\n" for i in range(100)))
    with open_state_db(service.settings).begin() as session:
        job = session.scalar(
            select(JobRow).join(RunRow).where(RunRow.name == run, JobRow.name == "a1")
        )
        assert job is not None
        for attempt, rss in ((1, 300.0), (2, 530.5)):
            session.add(
                JobAttemptRow(
                    job_id=job.id,
                    attempt=attempt,
                    state="failed",
                    failure="oom",
                    exit_code=137,
                    error="MemoryError: over 512 MB\nTraceback",
                    memory_mb=256 * attempt,
                    max_rss_mb=rss,
                    report_path=str(
                        tmp_path / "jobs" / "a1" / f"attempt-{attempt}" / "report.json"
                    ),
                )
            )
    detail = service.get(f"/api/runs/{run}/jobs/a1?tail=3").json()
    assert detail["job"]["name"] == "a1" and detail["job"]["failure"] == "oom"
    assert [(a["attempt"], a["memory_mb"], a["max_rss_mb"]) for a in detail["attempts"]] == [
        (1, 256, 300.0),
        (2, 512, 530.5),
    ]
    assert detail["attempts"][0]["error"] == "MemoryError: over 512 MB"
    assert detail["log_path"] == str(attempt_dir / "job.log")
    assert detail["log_tail"] == ["line 97", "line 98", "line 99"]
    missing = service.get(f"/api/runs/{run}/jobs/zz")
    assert missing.status_code == 404
    assert "has no job 'zz'" in missing.json()["detail"]["message"]


def test_metrics_are_prometheus_text(service: Service) -> None:
    standin_campaign(service.settings, "failed", name="other")
    answer = service.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = answer.text.splitlines()
    assert "# TYPE skybatch_jobs gauge" in lines
    assert 'skybatch_jobs{state="held"} 6' in lines
    assert 'skybatch_jobs{state="succeeded"} 3' in lines
    assert 'skybatch_campaigns{state="running"} 1' in lines
    assert 'skybatch_campaigns{state="failed"} 1' in lines
    assert 'skybatch_groups{state="ready"} 2' in lines
    assert "skybatch_groups_in_flight 1" in lines
    assert "skybatch_jobs_queued 0" in lines
    assert "skybatch_job_transitions_per_second 0" in lines
    assert "skybatch_state_changes_total 0" in lines
    c = service.campaign_id
    assert service.post(f"/api/campaigns/{c}/pause").status_code == 200
    lines = service.get("/metrics").text.splitlines()
    assert "skybatch_state_changes_total 3" in lines  # the campaign and its 2 ready groups
    from skybatch.run.models import JobAttemptRow, JobRow

    with open_state_db(service.settings).begin() as session:
        job_id = session.scalar(select(JobRow.id).limit(1))
        assert job_id is not None
        session.add(JobAttemptRow(job_id=job_id, attempt=1, state="running", memory_mb=512))
    lines = service.get("/metrics").text.splitlines()
    assert "skybatch_job_transitions_per_second 0.0166667" in lines  # 1 in the last 60 s
    assert 'skybatch_job_attempts_total{state="running"} 1' in lines


UNKNOWN = [
    ("GET", "/api/campaigns/999"),
    ("GET", "/api/campaigns/999/report"),
    ("GET", "/api/campaigns/999/steps"),
    ("GET", "/api/campaigns/999/groups"),
    ("GET", "/api/campaigns/999/jobs"),
    ("GET", "/api/campaigns/999/failures"),
    ("GET", "/api/campaigns/999/history"),
    ("POST", "/api/campaigns/999/pause"),
    ("POST", "/api/campaigns/999/resume"),
    ("POST", "/api/campaigns/999/cancel"),
    ("POST", "/api/campaigns/999/retry"),
    ("GET", "/api/runs/no/such/run"),
    ("GET", "/api/runs/no/such/run/jobs"),
    ("DELETE", "/api/tokens/nobody"),
    ("GET", "/api/runs/no/such/run/jobs/a0"),
    ("GET", "/api/files/999/provenance"),
    ("GET", "/api/files/provenance?path=no/such/file.fits"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN)
def test_unknown_ids_are_404(service: Service, method: str, path: str) -> None:
    answer = service.client.request(method, path, headers=service.auth("admin"))
    assert answer.status_code == 404, answer.text
    detail = answer.json()["detail"]
    assert detail["message"].startswith("no ")
    assert detail["hint"]


# -- actions -------------------------------------------------------------------------------
def _events(settings: Settings, campaign_id: int) -> list[tuple[str, str, str, str | None]]:
    with open_state_db(settings)() as session:
        rows = session.execute(
            select(
                CampaignEventRow.kind,
                CampaignEventRow.to_state,
                CampaignEventRow.actor,
                CampaignEventRow.action,
            )
            .where(CampaignEventRow.campaign_id == campaign_id)
            .order_by(CampaignEventRow.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_actions_are_recorded_with_the_tokens_name(service: Service) -> None:
    c = service.campaign_id
    paused = service.post(f"/api/campaigns/{c}/pause", json={"reason": "disk full"})
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused"
    assert paused.json()["groups"] == 2
    assert paused.json()["actor"] == "token:operator"
    resumed = service.post(f"/api/campaigns/{c}/resume", "admin")
    assert resumed.json()["state"] == "running"
    assert _events(service.settings, c) == [
        ("campaign", "paused", "token:operator", "pause"),
        ("group", "paused", "token:operator", "pause"),
        ("group", "paused", "token:operator", "pause"),
        ("campaign", "running", "token:admin", "resume"),
        ("group", "ready", "token:admin", "resume"),
        ("group", "ready", "token:admin", "resume"),
    ]
    history = service.get(f"/api/campaigns/{c}/history").json()
    assert {e["actor"] for e in history} == {"token:operator", "token:admin"}
    from skybatch.db.models import Operation

    with open_state_db(service.settings)() as session:
        logged = [
            (o.command, o.status, o.arguments["actor"], o.arguments["id"])
            for o in session.scalars(select(Operation).order_by(Operation.id))
        ]
    assert logged == [
        ("campaign pause", "succeeded", "token:operator", c),
        ("campaign resume", "succeeded", "token:admin", c),
    ]
    assert any(e["reason"] == "disk full" for e in history)


def test_retry_raises_memory_and_rejects_bad_input(service: Service) -> None:
    failed = standin_campaign(service.settings, "failed", name="other")
    bad = service.post(f"/api/campaigns/{failed}/retry", json={"step": "nope"})
    assert bad.status_code == 400
    assert bad.json()["detail"]["where"] == "--step"
    assert service.post(f"/api/campaigns/{failed}/retry", json={"memory_mb": 0}).status_code == 422
    retried = service.post(f"/api/campaigns/{failed}/retry", json={"memory_mb": 2048})
    assert retried.status_code == 200, retried.text
    assert (retried.json()["state"], retried.json()["jobs_raised"]) == ("running", 2)
    jobs = service.get(f"/api/campaigns/{failed}/jobs?state=held").json()
    assert {(j["run"].rsplit("/", 1)[1], j["memory_mb"]) for j in jobs} == {
        ("g0", 512),
        ("g1", 2048),
    }


def test_retry_of_one_failure_signature_resumes_only_its_groups(service: Service) -> None:
    from sqlalchemy import update

    from skybatch.run.models import JobRow, RunRow

    failed = standin_campaign(service.settings, "failed", name="other")
    g0 = f"other/{failed}/step1/g0"
    with open_state_db(service.settings).begin() as session:
        # g0 failed too, but only of the Python error: its out-of-memory job succeeded
        session.execute(
            update(CampaignGroupRow).where(CampaignGroupRow.run_name == g0).values(state="failed")
        )
        run_id = session.scalar(select(RunRow.id).where(RunRow.name == g0))
        session.execute(
            update(JobRow)
            .where(JobRow.run_id == run_id, JobRow.name == "a1")
            .values(state="succeeded", failure=None, error=None)
        )
    oom = next(
        f for f in service.get(f"/api/campaigns/{failed}/failures").json() if f["failure"] == "oom"
    )
    answer = service.post(
        f"/api/campaigns/{failed}/failures/retry",
        json={"failure": "oom", "signature": oom["signature"], "memory_mb": 1024},
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["groups"], answer.json()["jobs_raised"]) == (1, 2)
    groups = service.get(f"/api/campaigns/{failed}/groups").json()
    assert [(g["name"], g["state"]) for g in groups] == [("g0", "failed"), ("g1", "ready")]
    history = service.get(f"/api/campaigns/{failed}/history").json()
    assert any(e["reason"].startswith("retry of oom: ") for e in history if e["reason"])
    again = service.post(
        f"/api/campaigns/{failed}/failures/retry",
        json={"failure": "oom", "signature": "no such error"},
    )
    assert again.status_code == 404
    assert (
        service.post(
            f"/api/campaigns/{failed}/failures/retry",
            json={"failure": "oom", "signature": oom["signature"]},
            role="viewer",
        ).status_code
        == 403
    )


def test_an_action_the_state_does_not_allow_is_409_with_the_state(service: Service) -> None:
    c = service.campaign_id
    answer = service.post(f"/api/campaigns/{c}/resume")
    assert answer.status_code == 409
    assert answer.json()["detail"]["state"] == "running"
    assert _events(service.settings, c) == []


@pytest.mark.parametrize("action", ["pause", "cancel", "retry"])
def test_two_operators_at_once_one_wins_the_other_gets_409(service: Service, action: str) -> None:
    with open_state_db(service.settings).begin() as session:
        second = create_token(session, "second", "operator").token
    c = service.campaign_id
    if action == "retry":
        c = standin_campaign(service.settings, "failed", name="other")
    start = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def act(who: str, secret: str) -> None:
        client = TestClient(service.client.app)
        start.wait()
        answers[who] = client.post(
            f"/api/campaigns/{c}/{action}", headers={"Authorization": f"Bearer {secret}"}
        )

    threads = [
        threading.Thread(target=act, args=("operator", service.tokens["operator"])),
        threading.Thread(target=act, args=("second", second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = sorted(a.status_code for a in answers.values())
    assert codes == [200, 409], {k: a.text for k, a in answers.items()}
    target = {"pause": "paused", "cancel": "cancelled", "retry": "running"}[action]
    winner = next(who for who, a in answers.items() if a.status_code == 200)
    loser = next(a for a in answers.values() if a.status_code == 409)
    assert loser.json()["detail"]["state"] == target
    events = _events(service.settings, c)
    # the winner's transitions only, each once
    assert {actor for _, _, actor, _ in events} == {f"token:{winner}"}
    assert [kind for kind, *_ in events].count("campaign") == 1
    with open_state_db(service.settings)() as session:
        states = sorted(
            session.scalars(select(CampaignGroupRow.state).where(CampaignGroupRow.campaign_id == c))
        )
    if action == "pause":
        assert states == ["paused", "paused", "running"]
    elif action == "cancel":
        assert states == ["cancelled"] * 3
    else:  # the failed group is ready again, once
        assert states == ["ready", "succeeded"]
        assert [to for kind, to, *_ in events if kind == "group"] == ["ready"]


# -- the CLI's --json is the API's JSON ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "path"),
    [
        (lambda c: ["campaign", "list"], lambda c: "/api/campaigns"),
        (lambda c: ["campaign", "status", str(c)], lambda c: f"/api/campaigns/{c}"),
        (lambda c: ["campaign", "report", str(c)], lambda c: f"/api/campaigns/{c}/report"),
        (lambda c: ["campaign", "history", str(c)], lambda c: f"/api/campaigns/{c}/history"),
        (lambda c: ["campaign", "failures", str(c)], lambda c: f"/api/campaigns/{c}/failures"),
        (lambda c: ["backbone", "usage"], lambda c: "/api/backbone/usage"),
        (lambda c: ["backbone", "endpoint", "list"], lambda c: "/api/backbone/endpoints"),
        (lambda c: ["report", "--list"], lambda c: "/api/runs"),
        (
            lambda c: ["report", f"standin/{c}/step1/g0"],
            lambda c: f"/api/runs/standin/{c}/step1/g0",
        ),
    ],
)
def test_cli_json_equals_the_api_json(
    service: Service,
    capsys: pytest.CaptureFixture[str],
    args: Callable[[int], list[str]],
    path: Callable[[int], str],
) -> None:
    c = service.campaign_id
    assert service.post(f"/api/campaigns/{c}/pause").status_code == 200  # some history
    capsys.readouterr()
    assert main(service.cli(*args(c), "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == service.get(path(c)).json()


# -- tokens ----------------------------------------------------------------------------------
def test_tokens_are_stored_only_as_hashes_and_managed_by_admins(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        main(
            service.cli(
                "token", "create", "--name", "ops-bot", "--role", "operator", "--expires", "30"
            )
        )
        == 0
    )
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("sbt_")
    with open_state_db(service.settings)() as session:
        stored = [
            value
            for row in session.scalars(select(TokenRow))
            for value in (row.name, row.role, row.token_hash)
        ]
    assert secret not in stored and not any(secret in v for v in stored)
    assert (
        service.client.get(
            "/api/campaigns", headers={"Authorization": f"Bearer {secret}"}
        ).status_code
        == 200
    )
    assert main(service.cli("token", "list", "--json")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["viewer", "operator", "admin", "ops-bot"]
    assert all("token" not in t for t in listed)
    assert listed[-1]["last_used"] is not None  # the request above
    assert listed[0]["last_used"] is None  # the viewer's token was not used
    assert listed[-1]["expires"] is not None and listed[-1]["active"]
    # the same name twice is refused, nothing written
    assert main(service.cli("token", "create", "--name", "ops-bot", "--role", "viewer")) == 2
    assert "a token named 'ops-bot' exists" in capsys.readouterr().err
    # admins manage tokens through the API too
    made = service.client.post(
        "/api/tokens", json={"name": "eve", "role": "viewer"}, headers=service.auth("admin")
    )
    assert made.status_code == 201
    assert (
        service.client.post(
            "/api/tokens", json={"name": "x", "role": "admin"}, headers=service.auth("operator")
        ).status_code
        == 403
    )
    eve = {"Authorization": f"Bearer {made.json()['token']}"}
    assert service.client.get("/api/runs", headers=eve).status_code == 200
    assert (
        service.client.delete("/api/tokens/eve", headers=service.auth("admin")).status_code == 200
    )
    assert service.client.get("/api/runs", headers=eve).status_code == 401


def test_serve_refuses_a_public_address_without_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "serve", "--host", "0.0.0.0", "--port", "8099"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0: no active token exists" in err
    assert "--host" in err


# -- the event stream ------------------------------------------------------------------------
def _sse(text: str) -> list[dict[str, Any]]:
    """The data of the ``state`` events of a server-sent-events body."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "state":
            data = json.loads(fields["data"])
            assert int(fields["id"]) == data["id"]
            out.append(data)
    return out


def test_the_event_stream_sends_state_changes_as_they_happen(service: Service) -> None:
    c = service.campaign_id
    other = standin_campaign(service.settings, "running", name="other")
    assert service.post(f"/api/campaigns/{c}/pause").status_code == 200  # before: not sent
    timer = threading.Timer(1.0, lambda: service.post(f"/api/campaigns/{c}/resume"))
    timer.start()
    try:
        with service.client.stream(
            "GET", f"/api/events?campaign={c}&poll_s=0.1&wait_s=3", headers=service.auth("viewer")
        ) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            body = answer.read().decode()
    finally:
        timer.join()
    changes = _sse(body)
    assert [(e["kind"], e["to_state"], e["actor"]) for e in changes] == [
        ("campaign", "running", "token:operator"),
        ("group", "ready", "token:operator"),
        ("group", "ready", "token:operator"),
    ]
    # resuming after an event id (Last-Event-ID) sends what came after it, of that campaign
    first_pause = service.get(f"/api/events?campaign={c}&after=0&wait_s=0.1")
    ids = [e["id"] for e in _sse(first_pause.text)]
    assert len(ids) == 6
    assert service.post(f"/api/campaigns/{other}/cancel").status_code == 200
    resumed = service.client.get(
        f"/api/events?campaign={c}&wait_s=0.1",
        headers={**service.auth("viewer"), "Last-Event-ID": str(ids[2])},
    )
    assert [e["id"] for e in _sse(resumed.text)] == ids[3:]


def test_with_manager_the_service_runs_campaigns(db_url: str, tmp_path: Path) -> None:
    from skybatch.campaign.expansion import StepExpansion
    from skybatch.campaign.manager import Manager
    from skybatch.service.manager import ManagerThread

    settings = load_settings(home=tmp_path / "home", db={"url": db_url})
    campaign_id = waiting_campaign(settings)
    with open_state_db(settings).begin() as session:
        secret = create_token(session, "v", "viewer").token
    runner = ManagerThread(
        settings,
        poll_s=0.05,
        factory=lambda s: Manager(s, expander=lambda c, step, runs: StepExpansion([])),
    )
    with TestClient(create_app(settings, manager=runner)) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        for _ in range(200):
            state = client.get(f"/api/campaigns/{campaign_id}", headers=headers).json()["state"]
            if state == "succeeded":
                break
            threading.Event().wait(0.05)
        assert state == "succeeded"
        # the home's manager lock is held: a second manager is refused
        assert (
            main(["--home", str(settings.home), "--db-url", db_url, "manager", "run", "--once"])
            == 2
        )
    assert runner.passes >= 1
    history = client.get(f"/api/campaigns/{campaign_id}/history", headers=headers)
    assert {e["actor"] for e in history.json()} == {"manager"}


# -- the dashboard ---------------------------------------------------------------------------
def test_the_dashboard_pages_fetch_only_api_paths_that_exist(service: Service) -> None:
    import re

    openapi = service.client.get("/openapi.json").json()["paths"]
    patterns = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/?]+", p) + "$") for p in openapi]
    service.client.post(
        "/ui/login",
        content=f"token={service.tokens['operator']}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "http://testserver",
        },
    )  # the session cookie (tests/service/test_dashboard_session.py)
    for page in ("/ui", f"/ui/campaigns/{service.campaign_id}"):
        answer = service.client.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        called = re.findall(r"(?:api|post)\(`?\"?(/api/[^\"`?]*)", answer.text)
        assert called, page
        for path in called:
            for action in ("pause", "resume", "retry", "cancel"):  # the buttons' actions
                concrete = re.sub(r"\$\{[^}]+\}", "1", path.replace("${action}", action))
                assert any(p.match(concrete) for p in patterns), (page, path)
    page = service.client.get(f"/ui/campaigns/{service.campaign_id}").text
    assert f"const ID = {service.campaign_id};" in page
    assert all(f'data-action="{a}"' in page for a in ("pause", "resume", "retry", "cancel"))
    assert service.client.get("/ui/campaigns/x").status_code == 422


def test_every_api_route_refuses_a_request_without_a_token(service: Service) -> None:
    """Over the app's own OpenAPI paths, so an endpoint added later is covered too."""
    paths = service.client.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        if not (template.startswith("/api") or template == "/metrics"):
            continue
        path = template.replace("{run}", "r/un").replace("{name}", "someone")
        path = path.replace("{campaign_id}", str(service.campaign_id)).replace("{file_id}", "1")
        path = path.replace("{job}", "a0")
        assert "{" not in path, template
        for method in operations:
            answer = service.client.request(method.upper(), path, json={})
            assert answer.status_code == 401, (method, path, answer.text)
            checked += 1
    assert checked >= 31  # every route of this version


# -- backbone maintenance (admin) ------------------------------------------------------------
def test_an_admin_verifies_an_endpoint_finds_a_corrupt_replica_and_is_recorded(
    service: Service, tmp_path: Path
) -> None:
    from skybatch.backbone.maintenance import register_paths
    from skybatch.backbone.models import Activity
    from skybatch.backbone.service import Backbone

    site = tmp_path / "site"
    (site / "run1").mkdir(parents=True)
    for name in ("a.fits", "b.fits"):
        (site / "run1" / name).write_bytes(name.encode() * 100)
    backbone = Backbone.from_settings(service.settings)
    backbone.add_endpoint("site:t", "site", str(site))
    register_paths(backbone, "site:t", ["run1/a.fits", "run1/b.fits"], run="run1")
    (site / "run1" / "b.fits").write_bytes(b"x" * 600)  # the same size, other bytes
    answer = service.post(
        "/api/backbone/endpoints/site:t/verify", json={"run": "run1", "repair": False}, role="admin"
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["checked"] == 2 and report["corrupt"] == ["run1/b.fits"]
    assert report["repaired"] == []
    with open_state_db(service.settings)() as session:
        done = session.scalars(select(Activity).where(Activity.kind == "maintenance")).all()
        assert [(a.name, a.info["token"]) for a in done] == [("verify site:t", "admin")]
    # what an operator may not do, and names that are not there
    assert service.post("/api/backbone/endpoints/site:t/verify", json={}).status_code == 403
    missing = service.post("/api/backbone/endpoints/nowhere/recover", role="admin")
    assert missing.status_code == 404 and "GET /api/backbone/endpoints" in missing.text
    typo = service.post("/api/backbone/endpoints/site:t/verify", json={"run": "run2"}, role="admin")
    assert typo.status_code == 404 and "no catalog files of run 'run2'" in typo.text
    both = service.post(
        "/api/backbone/endpoints/site:t/evict", json={"run": "run1", "all": True}, role="admin"
    )
    assert both.status_code == 400 and "either run or all" in both.text
