"""Errors of the job wrapper.

A :class:`JobSpecError` means the job could not even start (exit code 2: the spec is
wrong, fix it and resubmit); every other :class:`JobError` is a failure of this
attempt (exit code 1: the scheduler may retry it).
"""

from __future__ import annotations

from skybatch.errors import DataError, InputError

__all__ = ["JobError", "JobSpecError", "StageInError", "StageOutError", "SupersededError"]


class JobSpecError(InputError):
    """The job spec is unreadable, inconsistent, or names things that do not exist."""


class JobError(DataError):
    """Root of failures while a job runs (staging, execution, registration)."""


class StageInError(JobError):
    """An input file could not be put into the job's datastore."""


class StageOutError(JobError):
    """An output file could not be copied to its endpoint or registered."""


class SupersededError(StageOutError):
    """This attempt is no longer the job's current one (its driver was killed and a
    restart retried the job, or the job was cancelled): its outputs must not replace
    or register over what the current attempt writes."""
