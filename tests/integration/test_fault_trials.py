"""The fault trials in short (``benchmarks/fault_trials.py`` runs 20): the campaign
manager and its workers killed during the campaign, ``skybatch run`` killed at a moment
and at a kill point of its finish, a worker killed under a running job. Each ends,
after the operator's restart, with the outputs of an uninterrupted reference: nothing
lost or duplicated, every catalog md5 true to its file, no temporary file left."""

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
        # Moments are fractions of the reference's wall time.
        Trial("manager_kill", at_s=0.6),
        Trial("run_kill", at_s=0.3),
        Trial("run_kill", point="finish:empty_trash"),
        Trial("worker_kill"),
    ],
    ids=lambda t: f"{t.kind}-{t.point or t.at_s}",
)
def test_a_kill_ends_with_the_outputs_of_an_uninterrupted_run(
    world: TrialWorld, trial: Trial
) -> None:
    if trial.at_s is not None:
        whole = world.campaign_seconds if trial.kind == "manager_kill" else world.run_seconds
        trial = Trial(trial.kind, at_s=round(trial.at_s * whole, 1))
    result = trial.run(world)
    assert result.ok, (result.name, result.detail, result.problems)
    assert (result.lost, result.duplicated) == (0, 0)
