"""A run whose set-up fails before its first job leaves nothing behind: its Butler RUN
collection, its catalog files and its work directory are removed, its state says why,
and the same command runs it once the cause is fixed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lsst.daf.butler import Butler
from runworld import run_command

from skybatch.backbone.service import Backbone
from skybatch.demo.survey import RAW_RUN, Survey
from skybatch.read.runs import get_run
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


def _hide_a_raw(survey: Survey, aside: Path) -> tuple[Path, Path]:
    """Move one raw file out of the datastore: the registry still lists it."""
    with Butler.from_config(str(survey.repo)) as butler:
        ref = butler.query_datasets("raw", collections=RAW_RUN, limit=1)[0]
        path = Path(butler.getURI(ref).ospath)
    shutil.move(path, aside)
    return path, aside


def test_a_failed_set_up_is_removed_says_why_and_the_same_command_runs_again(
    survey: Survey, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    original, aside = _hide_a_raw(survey, tmp_path / "raw.fits")
    command = run_command(home, survey, "t/setup-fails", "--workers", "2")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 5, done.stderr  # stored data is missing (DataError)
    assert "is in the Butler but its file is missing" in done.stderr, done.stderr
    assert original.name in done.stderr, done.stderr

    settings = load_settings(home=home)
    backbone = Backbone.from_settings(settings)
    with backbone.catalog.sessions() as session:
        row = get_run(session, "t/setup-fails")
        assert row.state == "failed" and row.finished_at is not None
        assert "its set-up failed" in (row.message or "")
        assert original.name in (row.message or "")
        assert "not removed" not in (row.message or "")
    assert backbone.catalog.files(run="t/setup-fails") == []
    assert backbone.catalog.files(path_prefix="skybatch/provenance/t/setup-fails/") == []
    with Butler.from_config(str(survey.repo)) as butler:
        assert "t/setup-fails" not in set(butler.collections.query("*"))
    assert not (home / "runs" / "t_setup-fails").exists()

    shutil.move(aside, original)  # the cause fixed: the same command succeeds
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    with backbone.catalog.sessions() as session:
        assert get_run(session, "t/setup-fails").state == "succeeded"


def test_an_unreachable_registry_fails_the_run_saying_what_was_not_removed(
    survey: Survey, tmp_path: Path
) -> None:
    from lsst.daf.butler import Config

    config = Config(str(survey.repo / "butler.yaml"))
    config["registry", "db"] = "postgresql://postgres@127.0.0.1:1/gone"
    config["root"] = survey.repo.resolve().as_uri()
    unreachable = tmp_path / "unreachable.yaml"
    config.dumpToUri(str(unreachable))
    home = tmp_path / "home"
    command = run_command(home, survey, "t/no-registry")
    command[command.index("--repo") + 1] = str(unreachable)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    backbone = Backbone.from_settings(load_settings(home=home))
    with backbone.catalog.sessions() as session:
        row = get_run(session, "t/no-registry")
        assert row.state == "failed"
        message = row.message or ""
    assert message.startswith("its set-up failed: ")
    assert "not removed" in message and "its Butler RUN collection t/no-registry" in message
    assert not (home / "runs" / "t_no-registry").exists()
