"""``skybatch campaign submit`` and the operator commands on campaigns that have not run
(a repository without data: the manager can only fail to expand them)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from campaignworld import DATA, DEMO_PIPELINES, SkybatchCli
from sqlalchemy import select

from skybatch.backbone.checksums import md5_file
from skybatch.backbone.service import Backbone
from skybatch.campaign import load_campaign
from skybatch.campaign.models import CampaignRow
from skybatch.campaign.submit import campaign_from_row
from skybatch.settings import load_settings


@pytest.fixture
def files(tmp_path: Path, empty_survey: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo campaign (and its site file) pointing at an empty repository."""
    target = tmp_path / "campaigns"
    target.mkdir()
    for source in DATA.glob("*.yaml"):
        shutil.copy(source, target / source.name)
    monkeypatch.setenv("DEMO_PIPELINES", str(DEMO_PIPELINES))
    monkeypatch.delenv("DEMO_WORKERS", raising=False)
    return target / "demo_campaign.yaml"


@pytest.fixture
def sky(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> SkybatchCli:
    return SkybatchCli(tmp_path / "home", capsys)


def test_submit_twice_gives_two_campaigns_with_archived_provenance(
    files: Path, empty_survey: Path, sky: SkybatchCli
) -> None:
    first = sky("campaign", "submit", files)
    assert first.code == 0, first.err
    assert first.out.startswith("campaign 1 submitted (demo-drp): steps step1, step2\n")
    second = sky("campaign", "submit", "-q", files)
    assert (second.code, second.out) == (0, "2\n")

    settings = load_settings(home=sky.home)
    backbone = Backbone.from_settings(settings)
    with backbone.catalog.sessions() as session:
        rows = session.scalars(select(CampaignRow).order_by(CampaignRow.id)).all()
    assert len({r.uuid for r in rows}) == 2
    prefix = f"skybatch/provenance/campaigns/{rows[0].uuid}/"
    archived = backbone.catalog.files(path_prefix=prefix)
    assert [Path(f.path).name for f in archived] == [
        "campaign-validated.json",
        "demo_campaign.yaml",
        "include-1-demo_site.yaml",
    ]
    for f in archived:  # copies in the archive (the repository), verified
        assert md5_file(empty_survey / "repo" / f.path) == (f.size_bytes, f.md5)
    original = empty_survey / "repo" / prefix / "demo_campaign.yaml"
    assert original.read_bytes() == files.read_bytes()
    with backbone.catalog.sessions() as session:
        rows = session.scalars(select(CampaignRow).order_by(CampaignRow.id)).all()
    assert [r.state for r in rows] == ["waiting", "waiting"]
    # The stored configuration is the validated campaign; policy overrides survive.
    stored = campaign_from_row(rows[0])
    loaded = load_campaign(files)
    assert stored == loaded
    assert stored.resources_for("step2", "coadd") == loaded.resources_for("step2", "coadd")
    assert stored.policies_for("step1").retries == loaded.policies_for("step1").retries

    listed = sky("campaign", "list", "--json")
    assert [(c["id"], c["state"]) for c in json.loads(listed.out)] == [
        (1, "waiting"),
        (2, "waiting"),
    ]


def test_an_invalid_campaign_is_not_submitted_and_touches_no_database(
    files: Path, sky: SkybatchCli
) -> None:
    files.write_text(files.read_text().replace("split: {by: visit}", "split: {by: visits}"))
    result = sky("campaign", "submit", files)
    assert result.code == 2
    assert "steps[0].split.by: unknown dimension 'visits'" in result.err
    assert not sky.home.exists() or not any(sky.home.rglob("*.sqlite3"))


def test_operator_actions_follow_the_state_table(files: Path, sky: SkybatchCli) -> None:
    assert sky("campaign", "submit", "-q", files).out == "1\n"
    assert sky("campaign", "submit", "-q", files).out == "2\n"

    paused = sky("campaign", "pause", 1, "--reason", "maintenance")
    assert paused.code == 0, paused.err
    assert "campaign 1 (demo-drp) paused: now paused" in paused.out
    again = sky("campaign", "pause", 1)
    assert again.code == 2
    assert "campaign 'demo-drp' (id 1) is paused: `pause` cannot make it paused" in again.err
    assert sky("campaign", "resume", 1).code == 0
    cancelled = sky("campaign", "cancel", 2)
    assert "now cancelled; steps step1, step2" in cancelled.out
    nothing = sky("campaign", "retry", 1)
    assert nothing.code == 2 and "nothing to retry" in nothing.err
    assert sky("campaign", "status", 99).code == 2

    history = json.loads(sky("campaign", "history", 1, "--json").out)
    keys = ("kind", "from_state", "to_state", "actor", "action")
    assert [tuple(e[k] for k in keys) for e in history] == [
        ("campaign", None, "waiting", "operator", None),
        ("campaign", "waiting", "paused", "operator", "pause"),
        ("campaign", "paused", "running", "operator", "resume"),
    ]
    assert history[1]["reason"] == "maintenance"

    # The repository has no DemoCam data: campaign 1's first step cannot be expanded,
    # so the campaign fails; the cancelled campaign 2 is cleaned up.
    # `manager run --once` exits with the documented failure status and names it.
    ran = sky("manager", "run", "--once")
    assert ran.code == 5, ran.err
    assert "error: 1 campaign(s) failed: campaign 1 (demo-drp): step(s) failed: step1" in ran.err
    assert "skybatch campaign retry 1" in ran.err
    assert sky("manager", "run", "--once").code == 0  # nothing failed in this pass
    status = json.loads(sky("campaign", "status", 1, "--json").out)
    assert status["state"] == "failed"
    step1, step2 = status["steps"]
    assert step1["state"] == "failed" and "matches no visit" in step1["message"]
    assert step2["state"] == "waiting"
    assert json.loads(sky("campaign", "status", 2, "--json").out)["cleanup"]["targets"] == [
        "site_cache",
        "workdirs",
    ]
    # retry: a step that failed before it had groups is expanded again.
    retried = sky("campaign", "retry", 1, "--step", "step1", "--retries", "5")
    assert retried.code == 0, retried.err
    status = json.loads(sky("campaign", "status", 1, "--json").out)
    assert status["state"] == "running"
    assert status["steps"][0]["state"] == "ready"
    assert status["steps"][0]["overrides"] == {"max_attempts": 5}
    text = sky("campaign", "status", 1).out
    assert "step step1            ready" in text


def test_states_prints_the_transition_table(sky: SkybatchCli) -> None:
    result = sky("campaign", "states")
    assert result.code == 0
    assert "group     failed     ready      retry     its run resumes" in result.out


def test_a_second_manager_is_refused(sky: SkybatchCli) -> None:
    from skybatch.campaign.lock import manager_lock

    with manager_lock(load_settings(home=sky.home)):
        result = sky("manager", "run", "--once")
    assert result.code == 2
    assert f"another campaign manager is running for {sky.home} (pid {os.getpid()})" in result.err
    assert sky("manager", "run", "--once").code == 0  # the lock went with its holder


def test_two_homes_on_one_repository_never_overwrite_each_others_provenance(
    files: Path, empty_survey: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Campaign ids restart in every state database: the archive paths must not."""
    first, second = SkybatchCli(tmp_path / "home1", capsys), SkybatchCli(tmp_path / "home2", capsys)
    text = files.read_text()
    assert first("campaign", "submit", "-q", files).out == "1\n"
    files.write_text(text.replace("Per-visit processing", "Per-visit processing (again)"))
    assert second("campaign", "submit", "-q", files).out == "1\n"  # the same id again

    documents = {}
    for sky in (first, second):
        backbone = Backbone.from_settings(load_settings(home=sky.home))
        with backbone.catalog.sessions() as session:
            row = session.scalars(select(CampaignRow)).one()
        archived = list(backbone.catalog.files_by_paths(row.summary["provenance"]).values())
        assert len(archived) == 3
        for f in archived:  # each home's files are intact in the shared archive
            assert md5_file(empty_survey / "repo" / f.path) == (f.size_bytes, f.md5)
        documents[sky.home] = (empty_survey / "repo" / row.summary["provenance"][0]).read_text()
        verify = sky("backbone", "verify", "--endpoint", "archive", "--no-repair", "--json")
        assert verify.code == 0, verify.err
        report = json.loads(verify.out)
        assert (report["corrupt"], report["missing"]) == ([], [])
    assert documents[first.home] == text
    assert "(again)" in documents[second.home]


def test_the_archive_never_replaces_a_file_with_other_content(tmp_path: Path) -> None:
    import io

    from skybatch.backbone.endpoints.posix import PosixEndpoint
    from skybatch.backbone.errors import FileOverwriteError
    from skybatch.backbone.transfer import write_verified

    backbone = Backbone.from_settings(load_settings(home=tmp_path / "home"))
    archive = backbone.add_endpoint("archive", "archive", str(tmp_path / "repo"))
    old, new = b"first version\n", b"second version\n"

    def write(target: Any, data: bytes, **kw: Any) -> Any:
        expected = (len(data), hashlib.md5(data).hexdigest())
        return write_verified(io.BytesIO(data), target, "p/file.txt", expected, **kw)

    write(archive, old)
    write(archive, old)  # the same content again: a no-op
    with pytest.raises(FileOverwriteError) as caught:
        write(archive, new)
    assert "p/file.txt" in caught.value.message
    assert (tmp_path / "repo" / "p/file.txt").read_bytes() == old
    # a job's stage-out to the archive writes through a plain directory endpoint
    with pytest.raises(FileOverwriteError):
        write(PosixEndpoint("archive", tmp_path / "repo"), new, write_once=True)
    assert (tmp_path / "repo" / "p/file.txt").read_bytes() == old
    assert not [p for p in (tmp_path / "repo" / "p").iterdir() if p.name != "file.txt"]
