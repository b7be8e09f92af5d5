"""Run options: engine settings, the site's filesystem, old stored options; the
``skybatch run`` flags that set them, checked before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from skybatch.cli.main import main
from skybatch.engines.errors import EngineConfigError, EngineSettingsError
from skybatch.engines.local import LocalEngine
from skybatch.graph.workflow import ResourceRequest
from skybatch.run.driver import RunOptions, engine_settings, make_engine, submit_run
from skybatch.settings import load_settings

#: ``RunOptions.to_json()`` as a skybatch without engine settings stored it.
OLD_OPTIONS = {
    "repo": "/data/repo",
    "pipeline": "p.yaml",
    "inputs": ["a"],
    "query": "",
    "output_run": "u/me/p/1",
    "site": None,
    "engine": "local",
    "workers": 2,
    "isolation": "warm",
    "max_attempts": 3,
    "memory_factor": 2.0,
    "memory_cap_mb": 16384,
    "resources": {"isr": {"memory_mb": 1024, "cores": 1, "walltime_s": 600}},
    "default_resources": {"memory_mb": 2048, "cores": 1, "walltime_s": 3600},
    "cluster": [],
    "intermediates": [],
    "catalog_tables": ["src"],
    "catalog_db_url": None,
    "junk_tarball": False,
}


def test_options_stored_before_engine_settings_still_load() -> None:
    options = RunOptions.from_json(OLD_OPTIONS)
    assert options.engine_settings == {}
    assert options.shared_filesystem is True
    assert options.site_root is None
    assert options.resources["isr"] == ResourceRequest(memory_mb=1024, walltime_s=600)


def test_new_options_round_trip_through_json() -> None:
    options = RunOptions(
        repo=Path("/data/repo"),
        pipeline="p.yaml",
        inputs=["a"],
        engine="slurm",
        engine_settings={"partition": "debug", "pilot": {"cores": 4}},
        shared_filesystem=False,
        site_root="/scratch/cache",
    )
    data = options.to_json()
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain data only
    assert RunOptions.from_json(data) == options


def test_local_engine_gets_workers_and_isolation_merged_other_engines_their_settings() -> None:
    local = RunOptions(
        repo=Path("r"), pipeline="p", inputs=["a"], workers=3, engine_settings={"worker_nice": 0}
    )
    assert engine_settings(local) == {"worker_nice": 0, "isolation": "warm", "max_workers": 3}
    kept = RunOptions(
        repo=Path("r"), pipeline="p", inputs=["a"], engine_settings={"isolation": "process"}
    )
    assert engine_settings(kept) == {"isolation": "process"}
    slurm = RunOptions(
        repo=Path("r"),
        pipeline="p",
        inputs=["a"],
        engine="slurm",
        workers=3,
        engine_settings={"max_jobs": 10},
    )
    assert engine_settings(slurm) == {"max_jobs": 10}

    engine = make_engine(local)
    try:
        assert isinstance(engine, LocalEngine)
        assert (engine.settings.max_workers, engine.settings.worker_nice) == (3, 0)
    finally:
        engine.close()


def test_submit_refuses_bad_engine_settings_before_writing_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(home=home)
    options = RunOptions(
        repo=tmp_path, pipeline="p.yaml", inputs=["a"], engine_settings={"max_workers": 0}
    )
    with pytest.raises(EngineSettingsError, match="max_workers"):
        submit_run(settings, options)
    options.engine, options.engine_settings = "nosuch", {}
    with pytest.raises(EngineConfigError, match="unknown engine 'nosuch'"):
        submit_run(settings, options)
    assert not home.exists()


def _run(home: Path, repo: Path, *args: str) -> int:
    config = repo / "butler.yaml"  # a repository's configuration (--repo is resolved)
    if not config.exists():
        config.write_text("datastore:\n  root: <butlerRoot>\n")
    base = ["--home", str(home), "run", "--repo", str(repo), "--pipeline", "p.yaml"]
    return main([*base, "--input", "a", *args])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--engine-setting", "max_workers=0"],
            "max_workers: Input should be greater than or equal to 1, got 0 "
            "(at --engine-setting max_workers)",
        ),
        (
            ["--engine-setting", "isolatoin=warm"],
            "isolatoin: unknown setting (at --engine-setting isolatoin). did you mean 'isolation'?",
        ),
        (["--engine-setting", "max_workers"], "bad --engine-setting value 'max_workers'"),
        (["--engine", "locl"], "unknown engine 'locl'"),
        (
            ["--engine", "slurm", "--engine-setting", "pilot.cores=x"],
            "pilot.cores: Input should be a valid integer",
        ),
        # Refused when the command line is read (cli/values.py), before the engine.
        (["--workers", "-1"], "Invalid value for '--workers': -1 is not in the range 1<=x"),
    ],
    ids=["out of range", "unknown", "no value", "unknown engine", "nested", "workers"],
)
def test_bad_engine_flags_exit_2_naming_the_field_and_write_nothing(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert _run(home, tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not home.exists(), "no database, run row or work directory before validation"


def test_engine_settings_file_and_flags_combine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skybatch.cli.run import _engine_settings

    file = tmp_path / "engine.yaml"
    file.write_text("partition: debug\nmax_jobs: 8\npilot: {cores: 2, max_pilots: 3}\n")
    got = _engine_settings(
        "slurm", ("max_jobs=16", "pilot.cores=4", "account=1234", "mode=pilot"), file
    )
    assert got == {
        "partition": "debug",
        "max_jobs": 16,
        "pilot": {"cores": 4, "max_pilots": 3},
        "account": "1234",  # a string setting: kept as written, not made a number
        "mode": "pilot",
    }
    file.write_text("max_jobs: 0\n")
    assert (
        _run(tmp_path / "home", tmp_path, "--engine", "slurm", "--engine-settings", str(file)) == 2
    )
    assert f"(at --engine-settings {file}: max_jobs)" in capsys.readouterr().err
    file.write_text("- a list\n")
    assert _run(tmp_path / "home", tmp_path, "--engine-settings", str(file)) == 2
    assert "engine settings file holds a list, not a mapping" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--catalog", "src", "--no-catalogs"], "--catalog and --no-catalogs contradict"),
        (["--catalog", "a b"], "--catalog 'a b' is not a dataset type name"),
    ],
    ids=["contradiction", "not a name"],
)
def test_bad_catalog_flags_exit_2_and_write_nothing(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert _run(home, tmp_path, *args) == 2
    assert expected in capsys.readouterr().err
    assert not home.exists()


def test_catalog_flags_choose_what_the_run_loads() -> None:
    from skybatch.cli.run import _catalogs

    assert _catalogs((), False) is None  # every output whose storage class is a table
    assert _catalogs(("src", "objectTable", "src"), False) == ["src", "objectTable"]
    assert _catalogs((), True) == []
