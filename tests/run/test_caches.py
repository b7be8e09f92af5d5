"""The per-process caches of a run's set-up and finish (skybatch.run.caches) never give
a run another repository's, or an older, view: one Butler per repository per process,
a refreshed clone per use, made again when the repository is another one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from lsst.daf.butler import Butler, CollectionType
from runworld import run_outputs

from skybatch.demo.survey import DEFAULTS, Survey
from skybatch.run import caches
from skybatch.run.driver import RunOptions, submit_run
from skybatch.settings import load_settings


def _make_repo(root: Path, collection: str) -> Path:
    Butler.makeRepo(str(root))
    with Butler.from_config(str(root), writeable=True) as butler:
        butler.collections.register(collection, CollectionType.RUN)
    return root


def _collections(repo: Path, writeable: bool = False) -> set[str]:
    with caches.repository_butler(repo, writeable=writeable) as butler:
        return set(butler.collections.query("*"))


def _instrument(name: str) -> dict[str, object]:
    return {"name": name, "detector_max": 4, "visit_max": 10, "exposure_max": 10}


def _instrument_record(repo: Path, name: str = "A") -> object:
    with caches.repository_butler(repo) as butler:
        return butler.registry.expandDataId(instrument=name).records["instrument"]


def test_one_butler_per_repository_sees_what_others_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _make_repo(tmp_path / "repo", "first")
    with Butler.from_config(str(repo), writeable=True) as other:
        other.registry.insertDimensionData("instrument", _instrument("A"))
    made: list[object] = []
    from_config = Butler.from_config

    def counting(*args: object, **kwargs: object) -> Butler:
        made.append(args)
        return from_config(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Butler, "from_config", counting)
    assert _instrument_record(repo) is not None  # the process's Butler caches instruments
    # Another process (here: another Butler) adds an instrument and a collection: the
    # next use sees them, as a new Butler would.
    with from_config(str(repo), writeable=True) as other:
        other.registry.insertDimensionData("instrument", _instrument("B"))
        other.collections.register("second", CollectionType.RUN)
    assert _instrument_record(repo) is not None
    assert _instrument_record(repo / "butler.yaml") is not None  # the same repository
    assert _instrument_record(repo, "B") is not None
    assert _collections(repo) == {"first", "second"}
    assert len(made) == 1
    assert _collections(repo, writeable=True) == {"first", "second"}
    assert len(made) == 2  # a writeable Butler is another one


def test_two_repositories_in_one_process_each_get_their_own(tmp_path: Path) -> None:
    one = _make_repo(tmp_path / "one", "in-one")
    two = _make_repo(tmp_path / "two", "in-two")
    for _ in range(2):
        assert _collections(one, writeable=True) == {"in-one"}
        assert _collections(two, writeable=True) == {"in-two"}


def test_a_repository_made_again_at_the_same_path_is_a_new_one(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path / "repo", "old")
    assert _collections(repo) == {"old"}
    shutil.rmtree(repo)
    _make_repo(repo, "new")
    assert _collections(repo) == {"new"}


def test_a_forked_child_makes_its_own_butler(tmp_path: Path) -> None:
    """A child forked by a process that holds Butlers must not use their database
    connections: it starts without them and makes its own."""
    repo = _make_repo(tmp_path / "repo", "c")
    assert _collections(repo, writeable=True) == {"c"}
    assert caches._BUTLERS  # the parent keeps its Butler
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when all holds
        ok = not caches._BUTLERS and _collections(repo, writeable=True) == {"c"}
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert caches._BUTLERS and _collections(repo, writeable=True) == {"c"}


def test_a_rewritten_butler_yaml_is_read_again(tmp_path: Path) -> None:
    repo = _make_repo(tmp_path / "repo", "c")
    first = caches.butler_config(repo)
    assert caches.butler_config(repo / "butler.yaml") is first
    config = repo / "butler.yaml"
    config.write_text(config.read_text() + "\n# rewritten\n")
    assert caches.butler_config(repo) is not first


def _pipeline(path: Path, threshold: float) -> str:
    path.write_text(
        f"""description: step 1 of the demo pipeline with a calibrate override
tasks:
  isr: skybatch.demo.tasks.isr.IsrTask
  calibrate:
    class: skybatch.demo.tasks.calibrate.CalibrateTask
    config:
      detection_threshold: {threshold}
  visitSummary: skybatch.demo.tasks.visit_summary.VisitSummaryTask
"""
    )
    return str(path)


@pytest.mark.slow
def test_runs_over_two_repositories_and_an_edited_pipeline_in_one_process(
    survey: Survey, tmp_path: Path
) -> None:
    """Two runs of one process, as a campaign manager makes them: the second over
    another repository (another home) with the pipeline file edited in between. Each
    repository gets exactly its own run's outputs, configs and provenance."""
    other = Survey(tmp_path / "other")
    shutil.copytree(survey.root, other.root, symlinks=True)
    pipeline = tmp_path / "step1.yaml"
    runs = []
    for home, repo, threshold in ((1, survey.repo, 5.5), (2, other.repo, 6.5)):
        options = RunOptions(
            repo=repo,
            pipeline=_pipeline(pipeline, threshold),
            inputs=[DEFAULTS],
            query="visit = 1000",
            output_run="t/cached",
            workers=2,
            intermediates=["postISRCCD"],
        )
        summary = submit_run(load_settings(home=tmp_path / f"home{home}"), options)
        assert summary.state == "succeeded"
        runs.append(summary)
    first, second = run_outputs(survey.repo, "t/cached"), run_outputs(other.repo, "t/cached")
    assert first == second
    names = {name for name, _ in first}
    assert {"calexp", "visitSummary", "calibrate_config", "packages"} <= names
    assert "postISRCCD" not in names  # removed by each run's own clean-up
    for repo, threshold, summary in ((survey.repo, 5.5, runs[0]), (other.repo, 6.5, runs[1])):
        with Butler.from_config(str(repo)) as butler:
            config = butler.get("calibrate_config", collections="t/cached")
        assert config.detection_threshold == threshold
        expanded = (summary.workdir / "provenance" / "pipeline-expanded.yaml").read_text()
        assert f"detection_threshold={threshold}" in expanded
