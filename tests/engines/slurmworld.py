"""Helpers for tests against a real Slurm: skip with the reason when none answers.

``scripts/slurm/up.sh`` starts a single-node Slurm on this machine (``.ci/run`` runs
it before the tests); ``SKYBATCH_TEST_SLURM=require`` turns the skip into a failure,
so CI cannot pass by silently skipping the Slurm tests.
"""

from __future__ import annotations

import functools
import os

import pytest

from skybatch.engines.slurm.commands import SlurmCommands


@functools.cache
def slurm_answers() -> str | None:
    """None if a Slurm controller answers, else why not."""
    if not SlurmCommands.installed():
        return "Slurm's commands are not installed (scripts/slurm/up.sh installs and starts one)"
    if not SlurmCommands().ping():
        return "no Slurm controller answers `scontrol ping` (start one: scripts/slurm/up.sh)"
    return None


def require_slurm() -> None:
    reason = slurm_answers()
    if reason is None:
        return
    if os.environ.get("SKYBATCH_TEST_SLURM") == "require":
        pytest.fail(f"SKYBATCH_TEST_SLURM=require but {reason}")
    pytest.skip(reason)
