"""`skybatch run --repo` takes a repository as the Butler names it: a butler.yaml kept
apart from its datastore (the archive is the datastore root), a repository index label,
and what is none is refused naming --repo before anything is written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from lsst.daf.butler import Butler, Config
from runworld import run_command, run_outputs

from skybatch.backbone.service import Backbone
from skybatch.demo.survey import Survey
from skybatch.settings import load_settings

pytestmark = pytest.mark.slow


def _config_apart(survey: Survey, target: Path) -> Path:
    """The survey's butler.yaml moved to ``target``, naming its root (as
    ``butler create --outfile`` writes one); the repository keeps no butler.yaml."""
    config = Config(str(survey.repo / "butler.yaml"))
    config["root"] = survey.repo.resolve().as_uri()
    target.parent.mkdir(parents=True, exist_ok=True)
    config.dumpToUri(str(target))
    (survey.repo / "butler.yaml").unlink()
    return target


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )


def _check_succeeded(home: Path, location: Path, survey: Survey, run: str) -> None:
    outputs = run_outputs(location, run)
    assert {"calexp", "deepCoadd", "isr_config"} <= {t for t, _ in outputs}
    backbone = Backbone.from_settings(load_settings(home=home))
    archive = backbone.endpoint(backbone.archive_name())
    assert archive.root.resolve() == survey.repo.resolve()  # the datastore root
    with Butler.from_config(str(location)) as butler:
        refs = butler.query_all_datasets(run, find_first=False, limit=None)
    files = backbone.catalog.files_by_dataset_ids([str(r.id) for r in refs])
    assert len(files) == len(refs) and all(f.md5 for f in files.values())
    assert all((survey.repo / f.path).is_file() for f in files.values())


def test_a_butler_yaml_outside_the_datastore_root_runs_archived_at_the_datastore(
    survey: Survey, tmp_path: Path
) -> None:
    config = _config_apart(survey, tmp_path / "etc" / "butler" / "survey.yaml")
    home = tmp_path / "home"
    template = "{run:/}/custom/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}_{detector}"
    command = run_command(
        home, survey, "t/apart", "--workers", "2", "--file-template", f"calexp={template}"
    )
    command[command.index("--repo") + 1] = str(config)
    done = _run(command)
    assert done.returncode == 0, done.stderr
    _check_succeeded(home, config, survey, "t/apart")
    calexps = list((survey.repo / "t" / "apart" / "custom" / "calexp").rglob("*.fits"))
    assert calexps, "the run's file template named its calexps, in the datastore root"
    assert not (survey.repo / "butler.yaml").exists()  # nothing written in its place


def test_a_repository_index_label_runs_the_repository_it_names(
    survey: Survey, tmp_path: Path
) -> None:
    config = _config_apart(survey, tmp_path / "etc" / "main.yaml")
    index = tmp_path / "index.yaml"
    index.write_text(f"survey: {config.as_uri()}\n")
    home = tmp_path / "home"
    command = run_command(home, survey, "t/label", "--workers", "2")
    command[command.index("--repo") + 1] = "survey"
    done = _run(command, DAF_BUTLER_REPOSITORY_INDEX=str(index))
    assert done.returncode == 0, done.stderr
    _check_succeeded(home, config, survey, "t/label")


def test_what_names_no_repository_is_refused_naming_repo(survey: Survey, tmp_path: Path) -> None:
    index = tmp_path / "index.yaml"
    index.write_text(f"survey: {survey.repo}\n")
    home = tmp_path / "home"
    command = run_command(home, survey, "t/none")
    command[command.index("--repo") + 1] = "pgdemo"
    done = _run(command, DAF_BUTLER_REPOSITORY_INDEX=str(index))
    assert done.returncode == 2
    assert "--repo" in done.stderr and "pgdemo" in done.stderr
    assert "repository index labels: survey" in done.stderr
    assert not home.exists()  # nothing written
