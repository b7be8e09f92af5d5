"""Command-line values are refused when the command line is read: exit 2, the option
named, and nothing written (not even the skybatch home)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skybatch import limits
from skybatch.cli.main import main
from skybatch.cli.values import check_run_name

TOO_BIG = str(limits.MAX_DATABASE_INTEGER + 1)


def _run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--home", str(home), *args])
    return code, capsys.readouterr().err


@pytest.fixture
def run_args(tmp_path: Path) -> list[str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    # A repository's configuration: --repo is resolved (skybatch.repository) first.
    (repo / "butler.yaml").write_text("datastore:\n  root: <butlerRoot>\n")
    return ["run", "--repo", str(repo), "--pipeline", "p.yaml", "--input", "in"]


@pytest.mark.parametrize(
    ("option", "value", "expect"),
    [
        ("--output-run", "..", "'..' component"),
        ("--output-run", ".", "'.' component"),
        ("--output-run", "/abs", "absolute path"),
        ("--output-run", "a/../../b", "'..' component"),
        ("--output-run", "", "empty"),
        ("--output-run", "a//b", "empty component"),
        ("--output-run", "u/me/run 1", "characters a run name cannot have: ' '"),
        ("--output-run", "u/me/*", "characters a run name cannot have: '*'"),
        ("--output-run", "u/" + "x" * 300, "more than 255"),
        ("--retries", "-1", "not in the range 1<="),
        ("--retries", "0", "not in the range 1<="),
        ("--infrastructure-retries", "-1", "not in the range 0<="),
        ("--memory-factor", "-3", "not in the range 1.0<="),
        ("--memory-factor", "0.5", "not in the range 1.0<="),
        ("--memory-factor", "nan", "not a finite number"),
        ("--memory-cap-mb", "-5", "not in the range 1<="),
        ("--memory-mb", "-100", "not in the range 1<="),
        ("--memory-mb", TOO_BIG, "not in the range 1<="),
        ("--workers", "0", "not in the range 1<="),
        ("--resources", "calibrate=memory_mb:-1", "memory_mb: input should be greater than 0"),
    ],
)
def test_a_bad_run_option_is_refused_before_anything_is_written(
    option: str,
    value: str,
    expect: str,
    run_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    code, err = _run(home, capsys, *run_args, option, value)
    assert code == 2, err
    assert f"Invalid value for '{option}'" in err or f"(at {option})" in err
    assert expect in err
    assert "Traceback" not in err and "validation error" not in err
    assert not home.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["campaign", "status", TOO_BIG],
        ["campaign", "report", TOO_BIG],
        ["campaign", "history", TOO_BIG],
        ["campaign", "pause", TOO_BIG],
        ["campaign", "cancel", TOO_BIG],
        ["campaign", "retry", TOO_BIG],
        ["campaign", "status", "0"],
        ["campaign", "retry", "1", "--memory-mb", "0"],
        ["campaign", "retry", "1", "--retries", "0"],
        ["campaign", "retry", "1", "--memory-mb", TOO_BIG],
        ["campaign", "history", "1", "--limit", TOO_BIG],
        ["backbone", "--workers", "0", "usage"],
        ["backbone", "recall", "--endpoint", "tape", "--priority", TOO_BIG, "x"],
        ["backbone", "pin", "--endpoint", "site", "--hours", "inf", "x"],
        ["backbone", "pin", "--endpoint", "site", "--hours", "1e300", "x"],
        ["manager", "run", "--poll-s", "nan"],
        ["pilot", "--walltime-s", "inf"],
        ["run", "--resume", "../.."],
    ],
    ids=lambda a: " ".join(a)[:60],
)
def test_ids_and_counts_the_database_cannot_hold_are_refused(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, err = _run(home, capsys, *args)
    assert code == 2, err
    assert "Invalid value for" in err
    assert "OverflowError" not in err
    assert not home.exists()


@pytest.mark.parametrize(
    "name", ["u/me/demo_drp/20261206T010203Z", "demo-drp/1/step1/visit_12", "a", "x.y+z=1@h:2-3"]
)
def test_usual_run_names_are_accepted(name: str) -> None:
    assert check_run_name(name) is None


@pytest.mark.parametrize(
    ("template", "expect"),
    [
        (
            "visitSumary={run}/{datasetType}/{visit}/{datasetType}_{instrument}_{visit}",
            "the pipeline writes no dataset type 'visitSumary'",
        ),
        (
            "raw={run}/{datasetType}/{exposure}/{datasetType}_{instrument}_{exposure}_{detector}",
            "the pipeline writes no dataset type 'raw'",
        ),
        ("calexp=/data/{run}/{datasetType}/{id}", "is absolute"),
    ],
)
def test_a_file_template_that_would_name_nothing_or_escape_is_refused(
    template: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lsst.daf.butler import Butler

    import skybatch.demo

    repo = tmp_path / "repo"
    Butler.makeRepo(str(repo))
    pipeline = Path(skybatch.demo.__file__).parent / "pipelines" / "demo_drp.yaml"
    home = tmp_path / "home"
    args = ["run", "--repo", str(repo), "--pipeline", f"{pipeline}#step1", "--input", "in"]
    code, err = _run(home, capsys, *args, "--file-template", template)
    assert code == 2, err
    assert err.startswith("error: ") and expect in err
    assert "(at --file-template" in err
    assert not home.exists()
