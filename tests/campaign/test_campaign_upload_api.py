"""Validating and submitting an uploaded campaign through the service: the demo
campaign with its include against a real (empty) Butler repository; every problem
of an invalid upload with its file, line and field (422), nothing stored; the
server's environment never substituted into an uploaded file; operator role needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from campaignworld import DATA, DEMO_PIPELINES
from fastapi.testclient import TestClient

from skybatch.auth.tokens import create_token
from skybatch.db.state import open_state_db
from skybatch.service.app import create_app
from skybatch.settings import load_settings


@pytest.fixture
def api(tmp_path: Path, empty_survey: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    monkeypatch.delenv("DEMO_PIPELINES", raising=False)
    monkeypatch.delenv("DEMO_WORKERS", raising=False)
    settings = load_settings(home=tmp_path / "home")
    with open_state_db(settings).begin() as session:
        headers = {
            role: {"Authorization": f"Bearer {create_token(session, role, role).token}"}
            for role in ("viewer", "operator")
        }
    return TestClient(create_app(settings)), headers, settings


def _upload(survey: Path, **changes: str) -> dict:
    files = {p.name: p.read_text() for p in DATA.glob("*.yaml")}
    files.update(changes)
    return {
        "main": "demo_campaign.yaml",
        "files": files,
        "variables": {"DEMO_SURVEY": str(survey), "DEMO_PIPELINES": str(DEMO_PIPELINES)},
    }


def test_validate_and_submit_an_upload(api: tuple, empty_survey: Path) -> None:
    client, headers, settings = api
    body = _upload(empty_survey)
    assert (
        client.post("/api/campaigns/validate", json=body, headers=headers["viewer"]).status_code
        == 403
    )
    checked = client.post("/api/campaigns/validate", json=body, headers=headers["operator"])
    assert checked.status_code == 200, checked.text
    assert checked.json() == {"valid": True, "name": "demo-drp", "steps": ["step1", "step2"]}
    assert not any((settings.home / "uploads").iterdir())  # a validation keeps nothing
    made = client.post("/api/campaigns", json=body, headers=headers["operator"])
    assert made.status_code == 201, made.text
    assert (made.json()["id"], made.json()["steps"]) == (1, ["step1", "step2"])
    assert sorted(Path(p).name for p in made.json()["provenance"]) == [
        "campaign-validated.json",
        "demo_campaign.yaml",
        "include-1-demo_site.yaml",
    ]
    listed = client.get("/api/campaigns", headers=headers["viewer"]).json()
    assert [(c["id"], c["name"], c["state"]) for c in listed] == [(1, "demo-drp", "waiting")]


def test_an_invalid_upload_is_422_with_every_problem_and_stores_nothing(
    api: tuple, empty_survey: Path
) -> None:
    client, headers, settings = api
    text = (DATA / "demo_campaign.yaml").read_text()
    broken = text.replace("name: demo-drp", "name: demo-drp\nbogus_field: 1")
    body = _upload(empty_survey, **{"demo_campaign.yaml": broken})
    for path in ("/api/campaigns/validate", "/api/campaigns"):
        answer = client.post(path, json=body, headers=headers["operator"])
        assert answer.status_code == 422, answer.text
        problems = answer.json()["detail"]["problems"]
        assert any(
            p["file"] == "demo_campaign.yaml" and p["field"] == "bogus_field" and p["line"]
            for p in problems
        ), problems
    assert client.get("/api/campaigns", headers=headers["viewer"]).json() == []
    assert not any((settings.home / "uploads").iterdir())


def test_upload_paths_and_the_servers_environment_stay_out(
    api: tuple, empty_survey: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, headers, _ = api
    body = _upload(empty_survey)
    body["files"]["../escape.yaml"] = "x: 1"
    answer = client.post("/api/campaigns/validate", json=body, headers=headers["operator"])
    assert answer.status_code == 400
    assert "bad file name '../escape.yaml'" in answer.json()["detail"]["message"]
    # DEMO_SURVEY set on the server only: the upload does not see it
    monkeypatch.setenv("DEMO_SURVEY", str(empty_survey))
    body = _upload(empty_survey)
    del body["variables"]["DEMO_SURVEY"]
    answer = client.post("/api/campaigns/validate", json=body, headers=headers["operator"])
    assert answer.status_code == 422
    assert "demo-survey/repo" in answer.text  # the file's default, not the server's value
