"""The fault trials in short (``benchmarks/fault_trials.py`` runs 20): the campaign
manager and its workers killed at a random moment, ``skybatch run`` killed at a kill
point of its finish, a worker killed mid-job and a corrupted cached input. Each ends
with the outputs of an uninterrupted reference: nothing lost or duplicated, every
catalog md5 true to its file, no temporary file left."""

from __future__ import annotations

import pytest

from skybatch.testing.trials import Trial, TrialWorld

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TrialWorld:
    world = TrialWorld(tmp_path_factory.mktemp("fault-trials"))
    world.build()
    return world


@pytest.mark.parametrize(
    "trial",
    [
        Trial("manager_kill", at_s=0.6),  # a fraction of the reference campaign's time
        Trial("run_kill", point="finish:empty_trash"),
        Trial("worker_kill"),
        Trial("corrupt_replica"),
    ],
    ids=lambda t: t.kind,
)
def test_a_fault_ends_with_the_outputs_of_an_uninterrupted_run(
    world: TrialWorld, trial: Trial
) -> None:
    if trial.kind == "manager_kill":
        assert trial.at_s is not None
        trial = Trial("manager_kill", at_s=round(trial.at_s * world.campaign_seconds, 1))
    result = trial.run(world)
    assert result.ok, (result.name, result.detail, result.problems)
    assert (result.lost, result.duplicated) == (0, 0)
