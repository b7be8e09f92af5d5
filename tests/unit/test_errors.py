"""The exception root: structured fields, rendering, and the one exit-code mapping."""

from __future__ import annotations

import pickle

import click
import pytest

from skybatch.errors import (
    ConfigError,
    DatabaseError,
    ExternalToolError,
    InputError,
    SkybatchError,
    exit_code_for,
)


def test_fields_and_rendering() -> None:
    exc = ConfigError(
        "unknown pipeline 'isr2'",
        where="campaign.yaml:12 steps[0].pipeline",
        hint="Use one of: isr, calibrate",
    )
    assert exc.message == "unknown pipeline 'isr2'"
    assert exc.where == "campaign.yaml:12 steps[0].pipeline"
    assert exc.hint == "Use one of: isr, calibrate"
    assert exc.args == ("unknown pipeline 'isr2'",)
    assert str(exc) == (
        "unknown pipeline 'isr2' (at campaign.yaml:12 steps[0].pipeline). "
        "Use one of: isr, calibrate"
    )


def test_rendering_without_optional_fields() -> None:
    assert str(SkybatchError("plain")) == "plain"
    assert str(SkybatchError("m", where="SKYBATCH_DB__URL")) == "m (at SKYBATCH_DB__URL)"
    assert str(SkybatchError("m", hint="Do this")) == "m. Do this"


def test_external_tool_error_keeps_its_arguments() -> None:
    exc = ExternalToolError(
        "sbatch rejected the job",
        command=["sbatch", "--parsable", "job.sh"],
        returncode=1,
        stderr="sbatch: error: invalid partition\n",
        hint="Check the partition name",
    )
    assert exc.command == ("sbatch", "--parsable", "job.sh")
    assert exc.returncode == 1
    assert exc.stderr.startswith("sbatch: error")
    assert exc.args == ("sbatch rejected the job",)
    text = str(exc)
    assert "sbatch --parsable job.sh" in text
    assert "exit 1" in text
    assert "invalid partition" in text
    assert "could not start" in str(ExternalToolError("x", command="missing-tool"))


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("bad", where="f.yaml:1", hint="fix"),
        ExternalToolError("failed", command=["a", "b"], returncode=3, stderr="err"),
    ],
)
def test_pickle_round_trip_keeps_fields(exc: SkybatchError) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert copy.__dict__ == exc.__dict__
    assert str(copy) == str(exc)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 2),
        (InputError("x"), 2),
        (DatabaseError("x"), 3),
        (ExternalToolError("x", command="t"), 4),
        (SkybatchError("x"), 1),
        (ValueError("x"), 1),
        (KeyboardInterrupt(), 130),
        (click.UsageError("x"), 2),
        (click.BadParameter("x"), 2),
        (click.exceptions.Abort(), 130),
        (click.exceptions.Exit(5), 5),
        (SystemExit(None), 0),
        (SystemExit(7), 7),
    ],
)
def test_exit_code_for(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_subclass_of_a_subpackage_inherits_its_code() -> None:
    class CampaignFileError(ConfigError):
        pass

    assert exit_code_for(CampaignFileError("x")) == 2
    assert isinstance(CampaignFileError("x"), SkybatchError)
