"""``skybatch backbone`` end to end, through the command line only, on real files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from skybatch.cli.backbone import backbone as backbone_group
from skybatch.cli.backbone_files import ByteSize, format_bytes
from skybatch.cli.main import main

TEMP_SUFFIX = ".skybatch-part"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs ``skybatch --home HOME backbone ...`` in-process and captures its output."""

    home: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str | Path) -> Result:
        self.capsys.readouterr()
        code = main(["--home", str(self.home), "backbone", *map(str, args)])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    def ok(self, *args: str | Path) -> str:
        result = self(*args)
        assert result.code == 0, result.err
        return result.out

    def json(self, *args: str | Path) -> Any:
        document = json.loads(self.ok(*args, "--json"))
        assert document["schema_version"] == 1
        return document


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "home", capsys)


def _write_files(root: Path, paths: list[str], rng: random.Random) -> dict[str, bytes]:
    contents = {}
    for path in paths:
        data = rng.randbytes(rng.randint(1024, 6 * 1024))
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        contents[path] = data
    return contents


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _usage(cli: Cli, by: str) -> dict[tuple[str, ...], tuple[int, int]]:
    rows = cli.json("usage", "--by", by)["rows"]
    keys = ["endpoint", *(["key"] if by != "endpoint" else []), "state"]
    return {tuple(row[k] for k in keys): (row["files"], row["bytes"]) for row in rows}


def test_end_to_end(cli: Cli, tmp_path: Path) -> None:
    archive, site, small = tmp_path / "archive", tmp_path / "site", tmp_path / "small"
    cli.ok("endpoint", "add", "archive", "--kind", "archive", "--root", archive,
           "--tape-volume-capacity", "16KiB")  # fmt: skip
    out = cli.ok("endpoint", "add", "site:x", "--kind", "site", "--root", site, "--quota", "10MiB")
    assert "quota_bytes=10.0 MiB" in out
    cli.ok("endpoint", "add", "site:small", "--kind", "site", "--root", small, "--quota", "2KiB")
    endpoints = {e["name"]: e for e in cli.json("endpoint", "list")["endpoints"]}
    assert endpoints["archive"]["settings"] == {"tape": {"volume_capacity_bytes": 16384}}
    assert endpoints["site:x"]["settings"] == {"quota_bytes": 10 * 2**20}
    assert endpoints["site:x"]["root"] == str(site.resolve())

    # register 30 files of random content under the archive, in two runs
    rng = random.Random(20250101)
    runs = {run: [f"raw/{run}/f{i:02d}.dat" for i in range(15)] for run in ("r1", "r2")}
    contents = _write_files(archive, runs["r1"] + runs["r2"], rng)
    run_bytes = {run: sum(len(contents[p]) for p in paths) for run, paths in runs.items()}
    total = sum(run_bytes.values())
    out = cli.ok("register", "--endpoint", "archive", "--run", "r1", "--dataset-type", "raw",
                 "--from-dir", "raw/r1")  # fmt: skip
    assert "registered 15 file(s)" in out
    absolute = str(archive / runs["r2"][0])  # an absolute local path under the root works too
    out = cli.ok("register", "--endpoint", "archive", "--run", "r2", absolute, *runs["r2"][1:])
    assert "registered 15 file(s)" in out and "15 new" in out

    located = cli.json("locate", "--run", "r1")["files"]
    assert [f["path"] for f in located] == runs["r1"]
    for f in located:
        assert f["md5"] == hashlib.md5(contents[f["path"]]).hexdigest()
        assert f["size_bytes"] == len(contents[f["path"]])
        assert f["dataset_type"] == "raw"
        assert [(r["endpoint"], r["state"]) for r in f["replicas"]] == [("archive", "online")]
    assert "raw/r1/f00.dat" in cli.ok("locate", "raw/r1/f00.dat", "raw/r2/f14.dat")

    # release to tape: nearline, disk copies gone
    assert "released 30 of 30 file(s)" in cli.ok("release", "--prefix", "raw/")
    for f in cli.json("locate", "--prefix", "raw/")["files"]:
        assert [(r["endpoint"], r["state"], r["on_tape"]) for r in f["replicas"]] == [
            ("archive", "nearline", True)
        ]
        assert not (archive / f["path"]).exists()

    # recall one run: files span several volumes, one mount each, read front to back
    report = cli.json("recall", "--run", "r1")
    assert report["files"] == 15 and report["bytes"] == run_bytes["r1"]
    assert report["volumes"] > 1 and report["mounts"] == report["volumes"]
    assert report["seeks"] == 0

    # replicate both runs to the site (r2 is recalled from tape on the way)
    report = cli.json("replicate", "--to", "site:x", "--prefix", "raw/")
    assert (report["files"], report["bytes"], report["recalled"]) == (30, total, 15)
    for path, data in contents.items():
        assert (site / path).read_bytes() == data
        assert (archive / path).read_bytes() == data

    assert _usage(cli, "endpoint") == {
        ("archive", "online"): (30, total),
        ("site:x", "online"): (30, total),
    }
    by_run = _usage(cli, "run")
    for endpoint in ("archive", "site:x"):
        for run in ("r1", "r2"):
            assert by_run[(endpoint, run, "online")] == (15, run_bytes[run])
    assert "site:x" in cli.ok("usage", "--by", "dataset_type")

    # corrupt one site file on disk: verify finds and repairs it
    victim = runs["r2"][3]
    (site / victim).write_bytes(b"bit rot")
    report = cli.json("verify", "--endpoint", "site:x")
    assert report["checked"] == 30
    assert report["corrupt"] == [victim] and report["repaired"] == [victim]
    assert (site / victim).read_bytes() == contents[victim]

    # evict run r1 from the site (the archive keeps its copies)
    report = cli.json("evict", "--endpoint", "site:x", "--run", "r1")
    assert (report["evicted"], report["bytes"]) == (15, run_bytes["r1"])
    assert _files_under(site) == set(runs["r2"])

    # stage back a run produced on the site
    outputs = _write_files(site, [f"out/r3/calexp_{i}.fits" for i in range(4)], rng)
    out = cli.ok("register", "--endpoint", "site:x", "--run", "r3", "--from-dir", "out/r3")
    assert "registered 4 file(s)" in out
    report = cli.json("stage-back", "--site", "site:x", "--run", "r3")
    assert (report["target"], report["files"]) == ("archive", 4)
    for path, data in outputs.items():
        assert (archive / path).read_bytes() == data
    for f in cli.json("locate", "--run", "r3")["files"]:
        assert {r["endpoint"]: r["state"] for r in f["replicas"]} == {
            "archive": "online",
            "site:x": "online",
        }

    # a quota too small: exit 5 naming the site, nothing copied, nothing half-copied
    result = cli("replicate", "--to", "site:small", "--run", "r2")
    assert result.code == 5, result.err
    assert "site:small" in result.err and "nothing was copied" in result.err
    assert _files_under(small) == set()
    assert not [p for p in tmp_path.rglob(f"*{TEMP_SUFFIX}")]
    for f in cli.json("locate", "--run", "r2")["files"]:
        assert "site:small" not in {r["endpoint"] for r in f["replicas"]}

    # selecting nothing is an input error that says how to select
    for args in (("replicate", "--to", "site:x"), ("locate",), ("release",)):
        result = cli(*args)
        assert result.code == 2, args
        assert "no files selected" in result.err and "--run" in result.err
    result = cli("locate", "--run", "no-such-run")
    assert result.code == 2 and "no catalog files match --run 'no-such-run'" in result.err
    result = cli("locate", "raw/r9/nope.dat")
    assert result.code == 2 and "not in the catalog" in result.err

    # an unknown endpoint is an input error listing the known ones
    result = cli("replicate", "--to", "site:nope", "--run", "r1")
    assert result.code == 2
    assert "site:nope" in result.err
    assert "known endpoints: archive, site:small, site:x" in result.err


def test_pins_repair_failures_recover_and_delete(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, site = tmp_path / "archive", tmp_path / "site"
    cli.ok("endpoint", "add", "archive", "--kind", "archive", "--root", archive)
    cli.ok("endpoint", "add", "site:x", "--kind", "site", "--root", site, "--no-shared-fs")
    contents = _write_files(archive, ["a/1.dat", "a/2.dat", "a/3.dat"], random.Random(1))
    cli.ok("register", "--endpoint", "archive", "--run", "r", "--from-dir", ".")

    report = cli.json("replicate", "--to", "site:x", "--run", "r", "--pin-hours", "1")
    assert report["files"] == 3 and report["pinned_until"]
    assert cli.json("evict", "--endpoint", "site:x", "--all")["skipped_pinned"] == 3
    assert "unpinned: 3 replica(s) on site:x" in cli.ok(
        "unpin", "--endpoint", "site:x", "--run", "r"
    )
    cli.ok("pin", "--endpoint", "site:x", "a/1.dat", "--hours", "2")
    report = cli.json("evict", "--endpoint", "site:x", "--all")
    assert (report["evicted"], report["skipped_pinned"]) == (2, 1)
    assert cli.json("evict", "--endpoint", "site:x", "a/1.dat", "--force")["evicted"] == 1
    result = cli("pin", "--endpoint", "site:x", "--run", "r", "--hours", "1")
    assert result.code == 2 and "replicate --to site:x" in result.err

    # a corrupt replica stays bad with --no-repair (exit 5); a later verify repairs it
    cli.ok("replicate", "--to", "site:x", "a/2.dat")
    (archive / "a/2.dat").write_bytes(b"oops")
    result = cli("verify", "--endpoint", "archive", "--no-repair")
    assert result.code == 5 and "a/2.dat" in result.err
    assert "a/2.dat: not repaired (--no-repair)" in result.out
    result = cli("verify", "--endpoint", "archive", "--run", "r")
    assert result.code == 0, result.err
    assert (archive / "a/2.dat").read_bytes() == contents["a/2.dat"]
    (archive / "a/2.dat").write_bytes(b"oops again")
    assert cli("verify", "--endpoint", "archive", "--no-repair").code == 5
    # the site copy is now the last good one: never evicted
    assert cli.json("evict", "--endpoint", "site:x", "a/2.dat")["skipped_last_copy"] == 1
    # the hint works: replicate rewrites the bad archive replica from the site
    assert cli.json("replicate", "--to", "archive", "a/2.dat")["files"] == 1
    assert (archive / "a/2.dat").read_bytes() == contents["a/2.dat"]
    assert cli.json("verify", "--endpoint", "archive")["still_bad"] == {}
    assert cli.json("evict", "--endpoint", "site:x", "--all")["evicted"] == 1

    # recover settles a crashed transfer's partial copy
    (site / "a").mkdir(parents=True, exist_ok=True)
    (site / "a" / f".9.dat{TEMP_SUFFIX}").write_bytes(b"partial")
    assert cli.json("recover", "--endpoint", "site:x")["temp_files_removed"] == 1
    assert _files_under(site) == set()

    # delete asks first; --yes deletes everywhere
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert cli("delete", "--run", "r").code == 130
    assert _files_under(archive).issuperset(contents)
    assert "deleted 3 file(s)" in cli.ok("delete", "--run", "r", "--yes")
    assert not any((archive / p).exists() for p in contents)
    assert cli("locate", "--run", "r").code == 2


def test_endpoint_add_errors(cli: Cli, tmp_path: Path) -> None:
    result = cli("endpoint", "add", "site:x", "--kind", "site", "--root", tmp_path,
                 "--tape-volume-capacity", "1GiB")  # fmt: skip
    assert result.code == 2 and "--tape-volume-capacity applies to archive" in result.err
    assert (
        cli("endpoint", "add", "s", "--kind", "site", "--root", tmp_path, "--quota", "x").code == 2
    )
    cli.ok("endpoint", "add", "site:x", "--kind", "site", "--root", tmp_path, "--quota", "1G")
    cli.ok("endpoint", "add", "site:x", "--kind", "site", "--root", tmp_path, "--quota", "1G")
    result = cli("endpoint", "add", "site:x", "--kind", "site", "--root", tmp_path)
    assert result.code == 2 and "different definition" in result.err
    result = cli("release", "--endpoint", "site:x", "--run", "r")
    assert result.code == 2 and "no tape tier" in result.err
    result = cli("register", "--endpoint", "site:x", "--from-dir", "nothing-here")
    assert result.code == 2 and "no files under" in result.err


def test_register_butler(cli: Cli, tmp_path: Path) -> None:
    from lsst.daf.butler import Butler, DatasetType

    repo = tmp_path / "repo"
    Butler.makeRepo(str(repo))
    with Butler.from_config(str(repo), writeable=True, run="test/run") as butler:
        notes = DatasetType("notes", (), "StructuredDataDict", universe=butler.dimensions)
        butler.registry.registerDatasetType(notes)
        ref = butler.put({"exposures": 3}, notes, {})
    cli.ok("endpoint", "add", "archive", "--kind", "archive", "--root", repo)
    report = cli.json("register-butler", repo, "--collections", "test/run")
    assert (report["datasets"], report["registered"], report["already_known"]) == (1, 1, 0)
    assert report["bytes"] > 0
    out = cli.ok("register-butler", repo, "--collections", "test/run")
    assert "already known:    1" in out
    (located,) = cli.json("locate", "--dataset-id", str(ref.id))["files"]
    assert (located["dataset_type"], located["run"]) == ("notes", "test/run")
    result = cli("register-butler", repo, "--collections", "no/such")
    assert result.code == 2 and "no/such" in result.err
    result = cli("register-butler", tmp_path / "missing", "--collections", "test/run")
    assert result.code == 2 and "no Butler repository" in result.err


def _backbone_commands(
    command: click.Command, path: tuple[str, ...] = ("backbone",)
) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _backbone_commands(sub, (*path, name))


@pytest.mark.parametrize("path", list(_backbone_commands(backbone_group)), ids=" ".join)
def test_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: skybatch {' '.join(path)}")
    if len(path) > 1 and path[-1] not in ("endpoint",):
        assert "skybatch backbone" in out  # an example


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", 2**20), ("64KiB", 65536), ("10GiB", 10 * 2**30), ("500MB", 500 * 10**6),
     ("1.5T", int(1.5 * 2**40)), ("2 k", 2048), ("7b", 7)],
)  # fmt: skip
def test_byte_size(text: str, expected: int) -> None:
    assert ByteSize().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["", "ten", "5 XB", "iB", "-1KiB"])
def test_byte_size_rejects(text: str) -> None:
    with pytest.raises(click.BadParameter):
        ByteSize().convert(text, None, None)


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB")]
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.fixture
def east_of_utc() -> Iterator[None]:
    """Local time UTC+9 (a POSIX TZ string: needs no tz database)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "JST-9"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_pin_holds_east_of_utc(cli: Cli, tmp_path: Path, east_of_utc: None) -> None:
    assert time.localtime().tm_gmtoff == 9 * 3600
    cli.ok("endpoint", "add", "archive", "--kind", "archive", "--root", tmp_path / "archive")
    cli.ok("endpoint", "add", "site:x", "--kind", "site", "--root", tmp_path / "site")
    _write_files(tmp_path / "archive", ["a/1.dat"], random.Random(2))
    cli.ok("register", "--endpoint", "archive", "a/1.dat")
    cli.ok("replicate", "--to", "site:x", "a/1.dat", "--pin-hours", "1")
    assert cli.json("evict", "--endpoint", "site:x", "a/1.dat")["skipped_pinned"] == 1


def test_verify_repairs_what_no_repair_marked(cli: Cli, tmp_path: Path) -> None:
    archive, site = tmp_path / "archive", tmp_path / "site"
    cli.ok("endpoint", "add", "archive", "--kind", "archive", "--root", archive)
    cli.ok("endpoint", "add", "site:x", "--kind", "site", "--root", site)
    contents = _write_files(archive, ["a/1.dat"], random.Random(3))
    cli.ok("register", "--endpoint", "archive", "a/1.dat")
    cli.ok("replicate", "--to", "site:x", "a/1.dat")
    (site / "a/1.dat").write_bytes(b"bit rot")
    assert cli("verify", "--endpoint", "site:x", "--no-repair").code == 5
    result = cli("verify", "--endpoint", "site:x")
    assert (site / "a/1.dat").read_bytes() == contents["a/1.dat"]
    assert result.code == 0, result.err
