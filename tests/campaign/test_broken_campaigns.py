"""The broken-campaign corpus: every file is refused by ``campaign validate`` and
``campaign submit`` with exit status 2, an ``error:`` naming what its header expects
(and where), nothing written and no payload started.

The repository is a real Butler repository with the collections the demo campaign
names, so that only what each file breaks is wrong (see :mod:`broken_corpus`).
"""

from __future__ import annotations

import multiprocessing.process
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broken_corpus import BROKEN, BrokenCampaign, corpus
from campaignworld import DEMO_PIPELINES, CampaignCli, make_survey_repo

CORPUS = corpus()


@pytest.fixture(scope="session")
def corpus_survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A survey directory whose repository has the demo's collections (and no data)."""
    return make_survey_repo(tmp_path_factory.mktemp("broken-corpus") / "survey")


@pytest.fixture
def corpus_env(corpus_survey: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEMO_SURVEY", str(corpus_survey))
    monkeypatch.setenv("DEMO_PIPELINES", str(DEMO_PIPELINES))
    monkeypatch.delenv("DEMO_WORKERS", raising=False)
    return corpus_survey


@pytest.fixture
def payloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records (and stops) any process or task run started while the test runs."""
    started: list[str] = []

    def refuse(what: str) -> Any:
        def start(*args: Any, **kwargs: Any) -> Any:
            started.append(what)
            raise AssertionError(f"a payload was started: {what}")

        return start

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("process"))
    from lsst.pipe.base import PipelineTask

    monkeypatch.setattr(PipelineTask, "runQuantum", refuse("PipelineTask.runQuantum"))
    yield started


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_the_corpus_is_large_and_well_formed() -> None:
    assert len(CORPUS) >= 60
    for case in CORPUS:
        case.place()  # raises if line_of is not in the file


def test_the_corpus_repository_accepts_the_demo_campaign(
    corpus_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The corpus's shared parts and repository are valid: each file fails for its own
    reason."""
    cli = CampaignCli(tmp_path / "home", capsys)
    result = cli("validate", BROKEN / "parts" / "valid.yaml")
    assert result.code == 0, result.err


@pytest.mark.parametrize("command", ["validate", "submit"])
@pytest.mark.parametrize("case", CORPUS, ids=[c.path.stem for c in CORPUS])
def test_a_broken_campaign_is_refused_where_it_is_wrong(
    case: BrokenCampaign,
    command: str,
    corpus_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    payloads: list[str],
) -> None:
    home = tmp_path / "home"
    repo = corpus_env / "repo"
    before = _snapshot(repo)
    cli = CampaignCli(home, capsys)

    result = cli(command, case.path)

    assert result.code == 2, f"exit {result.code}\nout: {result.out}\nerr: {result.err}"
    assert result.out == ""
    assert result.err.startswith("error: "), result.err
    for expected in case.expect:
        assert expected in result.err, f"{expected!r} not in:\n{result.err}"
    place = case.place()
    if place is not None:
        places = re.findall(rf"{re.escape(str(case.path))}:(\d+):(\d+): ", result.err)
        assert tuple(map(str, place)) in places, f"expected {place} in:\n{result.err}"
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]
    assert _snapshot(repo) == before
    assert payloads == []
