"""Every read command's ``--json`` is exactly the repository's read model as JSON (what
the service will return), and its text output is drawn from the same model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from readworld import ReadWorld
from sqlalchemy import select
from sqlalchemy.orm import Session

from skybatch.backbone.models import FileRow
from skybatch.cli.main import main
from skybatch.read import backbone, campaigns, failures, runs
from skybatch.read.models import ReadModel, jsonable

pytestmark = pytest.mark.slow


def _oom_run(session: Session, world: ReadWorld) -> str:
    return campaigns.campaign_report(session, world.oom_id).steps[0].groups[0].run


def _coadd(session: Session, world: ReadWorld) -> int:
    """The id of a deepCoadd file the demo campaign wrote."""
    query = select(FileRow.id).where(FileRow.dataset_type == "deepCoadd").order_by(FileRow.id)
    return next(iter(session.scalars(query)))


def _oom_files(session: Session, world: ReadWorld) -> list[int]:
    """The ids of the failed group's files, by path (as `backbone locate --run` selects)."""
    query = select(FileRow.id).where(FileRow.run == _oom_run(session, world))
    return list(session.scalars(query.order_by(FileRow.path)))


#: (command line after the global options, the repository call it prints)
Read = Callable[[Session, ReadWorld], ReadModel | list[Any]]
COMMANDS: list[tuple[Callable[[Session, ReadWorld], list[str]], Read]] = [
    (lambda s, w: ["campaign", "list"], lambda s, w: campaigns.list_campaigns(s)),
    (
        lambda s, w: ["campaign", "status", str(w.demo_id)],
        lambda s, w: campaigns.campaign_status(s, w.demo_id),
    ),
    (
        lambda s, w: ["campaign", "report", str(w.demo_id)],
        lambda s, w: campaigns.campaign_report(s, w.demo_id),
    ),
    (
        lambda s, w: ["campaign", "report", str(w.oom_id)],
        lambda s, w: campaigns.campaign_report(s, w.oom_id),
    ),
    (
        lambda s, w: ["campaign", "history", str(w.oom_id)],
        lambda s, w: campaigns.campaign_history(s, w.oom_id),
    ),
    (
        lambda s, w: ["campaign", "history", str(w.demo_id), "--limit", "3"],
        lambda s, w: campaigns.campaign_history(s, w.demo_id, 3),
    ),
    (lambda s, w: ["report", "--list"], lambda s, w: runs.list_runs(s)),
    (lambda s, w: ["report", _oom_run(s, w)], lambda s, w: runs.run_report(s, _oom_run(s, w))),
    (lambda s, w: ["backbone", "usage"], lambda s, w: backbone.endpoint_usage(s)),
    (
        lambda s, w: ["backbone", "usage", "--by", "dataset_type"],
        lambda s, w: backbone.endpoint_usage(s, "dataset_type"),
    ),
    (lambda s, w: ["backbone", "endpoint", "list"], lambda s, w: backbone.list_endpoints(s)),
    (
        lambda s, w: ["backbone", "locate", "--run", _oom_run(s, w)],
        lambda s, w: backbone.locate(s, _oom_files(s, w)),
    ),
    (
        lambda s, w: ["backbone", "provenance", str(_coadd(s, w))],
        lambda s, w: backbone.file_provenance(s, _coadd(s, w)),
    ),
    (
        lambda s, w: ["campaign", "failures", str(w.oom_id)],
        lambda s, w: failures.failure_signatures(s, w.oom_id),
    ),
]


@pytest.mark.parametrize("index", range(len(COMMANDS)))
def test_json_is_the_read_model(
    world: ReadWorld, index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    command, read = COMMANDS[index]
    with world.session() as session:
        args = command(session, world)
        expected = jsonable(read(session, world))
    capsys.readouterr()
    assert main([*world.cli_args(), *args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == expected
    assert printed  # never an empty document for this world


def test_text_status_shows_the_selection_once(
    world: ReadWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    with world.session() as session:
        selection = campaigns.campaign_status(session, world.demo_id).steps[1].selection
    assert selection is not None
    capsys.readouterr()
    assert main([*world.cli_args(), "campaign", "status", str(world.demo_id)]) == 0
    out = capsys.readouterr().out
    assert out.count(selection.describe()) == 1, out
    assert "kept visit=" in out


def test_text_of_failures_and_provenance(
    world: ReadWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    with world.session() as session:
        coadd = backbone.file_provenance(session, _coadd(session, world))
    capsys.readouterr()
    assert main([*world.cli_args(), "campaign", "failures", str(world.oom_id)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 job(s), out_of_memory: job calibrate-visit<n>-det<n> reached")
    assert "  tasks: calibrate; steps: step1\n" in out
    assert out.count("  e.g. step1/visit_1000 calibrate-visit1000-det") == 2
    assert main([*world.cli_args(), "campaign", "failures", str(world.demo_id)]) == 0
    assert "no held or failed jobs" in capsys.readouterr().out
    assert main([*world.cli_args(), "backbone", "provenance", coadd.file.path]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{coadd.file.path}: ")
    assert "  written by quantum " in out and "(coadd)" in out
    assert f"  from {len(coadd.inputs)} input file(s):" in out
    assert main([*world.cli_args(), "backbone", "provenance", "no/such.fits"]) != 0
    assert "no file 'no/such.fits' in the backbone catalog" in capsys.readouterr().err
