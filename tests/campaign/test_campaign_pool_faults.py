"""Faults of one run in the execution pool stay that run's: an engine that refuses one
run's jobs fails that group only, and a bookkeeping process that dies under a set-up
is replaced and the set-up done again; the other groups in flight go on."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from lsst.daf.butler import Butler
from sqlalchemy import select
from test_campaign_standins import _groups_of, _submit_pooled

from skybatch.campaign.manager import Manager
from skybatch.campaign.models import CampaignGroupRow
from skybatch.db.state import open_state_db
from skybatch.engines.base import Engine
from skybatch.engines.errors import EngineError
from skybatch.engines.testing import InstantEngine
from skybatch.graph.workflow import Workflow
from skybatch.job.spec import JobSpec
from skybatch.run.context import RunOptions
from skybatch.run.pool import ExecutionPool
from skybatch.run.testing import IndependentJobs, SyntheticBookkeeping
from skybatch.settings import Settings, load_settings


class _RefusesG2(InstantEngine):
    """Refuses every submission of group g2's run (a batch system saying no)."""

    def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        if any(spec.run.endswith("/g2") for spec in specs):
            raise EngineError("sbatch: error: Batch job submission failed: invalid account")
        return super().submit(specs)


class _DiesOnceInG1:
    """A workflow maker whose process dies (as under the OOM killer) the first time it
    sets group g1's run up; ``marker`` remembers it died."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.inner = IndependentJobs(3)

    def __call__(self, options: RunOptions) -> Workflow:
        assert options.output_run is not None
        if options.output_run.endswith("/g1") and not self.marker.exists():
            self.marker.write_text("died")
            os._exit(137)
        return self.inner(options)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Butler repository (the stand-in runs read nothing from it)."""
    path = tmp_path_factory.mktemp("repo")
    Butler.makeRepo(str(path))
    return path


def _run(settings: Settings, bookkeeping: SyntheticBookkeeping, engine: Any) -> Manager:
    def pool(settings: Settings) -> ExecutionPool:
        return ExecutionPool(settings, bookkeeping=bookkeeping, engine_factory=engine)

    return Manager(settings, say=lambda text: None, expander=_groups_of(4), pool=pool)


def _groups(settings: Settings) -> dict[str, tuple[str, str | None]]:
    with open_state_db(settings)() as session:
        rows = session.scalars(select(CampaignGroupRow)).all()
        return {r.name: (r.state, r.message) for r in rows}


def test_an_engine_refusing_one_runs_jobs_fails_that_group_only(tmp_path: Path, repo: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    _submit_pooled(settings, repo, "refused", steps=1)

    def engine(name: str, engine_settings: dict[str, Any]) -> Engine:
        return _RefusesG2(max_parallel_jobs=4)

    with _run(settings, SyntheticBookkeeping(IndependentJobs(3)), engine) as manager:
        report = manager.run_pass()
    groups = _groups(settings)
    assert {name: state for name, (state, _) in groups.items()} == {
        "g0": "succeeded",
        "g1": "succeeded",
        "g2": "failed",
        "g3": "succeeded",
    }
    message = groups["g2"][1] or ""
    assert "could not run" in message and "invalid account" in message
    assert len(report.failed) == 1


def test_a_dead_bookkeeping_process_is_replaced_and_the_set_up_done_again(
    tmp_path: Path, repo: Path
) -> None:
    settings = load_settings(home=tmp_path / "home")
    _submit_pooled(settings, repo, "dies", steps=1)
    marker = tmp_path / "died"
    bookkeeping = SyntheticBookkeeping(_DiesOnceInG1(marker), process=True)

    def engine(name: str, engine_settings: dict[str, Any]) -> Engine:
        return InstantEngine(max_parallel_jobs=4)

    with _run(settings, bookkeeping, engine) as manager:
        report = manager.run_pass()
    assert marker.exists()  # it did die
    assert {state for state, _ in _groups(settings).values()} == {"succeeded"}
    assert not report.failed
