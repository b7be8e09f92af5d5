"""The archive endpoint in an S3 object store, against the real local S3 server.

A Butler datastore in a bucket is archived as objects under its root URI; the backbone's
guarantees hold there as on disk: a partial copy never has the final name, copies are
verified (size + md5) before the catalog says they exist, the archive is written once,
and `verify` finds an object whose bytes changed behind the catalog's back.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from skybatch.backbone.endpoints.archive import ObjectStoreArchiveEndpoint
from skybatch.backbone.endpoints.base import FileState
from skybatch.backbone.endpoints.objectstore import SINGLE_PUT_BYTES
from skybatch.backbone.errors import FileOverwriteError
from skybatch.backbone.maintenance import delete, recover, register_paths, verify
from skybatch.backbone.models import ReplicaState
from skybatch.backbone.removal import remove_replicas
from skybatch.backbone.replication import replicate, stage_back
from skybatch.backbone.roots import OverlappingRootError
from skybatch.backbone.service import Backbone
from skybatch.backbone.transfer import write_verified
from skybatch.errors import ConfigError
from skybatch.settings import load_settings


@pytest.fixture
def backbone(tmp_path: Path) -> Backbone:
    return Backbone.from_settings(load_settings(home=tmp_path / "home"))


def _objects(s3_server: Any, bucket: str) -> dict[str, bytes]:
    listed = s3_server.client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        o["Key"]: s3_server.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


def _states(backbone: Backbone, paths: list[str]) -> dict[tuple[str, str], str]:
    files = backbone.select_files(paths=paths)
    return {
        (p.file.path, p.endpoint): p.replica.state
        for p in backbone.catalog.placements([f.id for f in files])
    }


def test_copies_between_a_site_cache_and_an_s3_archive_are_verified_and_catalogued(
    backbone: Backbone, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    archive = backbone.add_endpoint("archive", "archive", f"s3://{s3_bucket}/repo", {})
    assert isinstance(archive, ObjectStoreArchiveEndpoint)
    assert archive.location == f"s3://{s3_bucket}/repo/"
    site = backbone.add_endpoint("site:local", "site", str(tmp_path / "site"), {})
    data = {f"run/out/file_{i}.fits": os.urandom(10_000 + i) for i in range(2)}
    data["run/out/large.fits"] = os.urandom(SINGLE_PUT_BYTES + 1)  # a multipart upload
    for path, payload in data.items():
        (site.temp_path(path)).write_bytes(payload)
        site.commit(path)
    register_paths(backbone, "site:local", list(data), run="run/out", dataset_type="calexp")

    # Stage-back: site cache -> bucket, each object checked and catalogued online.
    report = stage_back(backbone, "site:local", "run/out")
    assert report.files == 3 and not report.failed
    assert _objects(s3_server, s3_bucket) == {f"repo/{p}": b for p, b in data.items()}
    assert set(_states(backbone, list(data)).values()) == {ReplicaState.ONLINE}
    assert sorted(archive.iter_files("run/")) == sorted(data)

    # Stage-in: the site copies go, then come back from the bucket, verified.
    files = backbone.select_files(paths=list(data))
    remove_replicas(backbone, "site:local", files)
    assert not any((tmp_path / "site" / p).exists() for p in data)
    replicate(backbone, files, "site:local")
    assert {p: (tmp_path / "site" / p).read_bytes() for p in data} == data

    # Cleanup: deleting the files removes the objects and the catalog rows.
    assert delete(backbone, files) == 3
    assert _objects(s3_server, s3_bucket) == {}
    assert backbone.catalog.files_by_paths(list(data)) == {}


def test_a_partial_copy_is_never_an_object_and_the_archive_is_written_once(
    backbone: Backbone, s3_server: Any, s3_bucket: str
) -> None:
    archive = backbone.add_endpoint("archive", "archive", f"s3://{s3_bucket}/repo/", {})
    path = "run/raw/raw_1.fits"
    archive.temp_path(path).write_bytes(b"partial")
    assert archive.state(path) is FileState.MISSING
    assert list(archive.iter_files()) == []
    assert _objects(s3_server, s3_bucket) == {}
    # What a crashed transfer left in the spool is swept by `backbone recover`.
    assert recover(backbone, "archive").temp_files_removed == 1
    assert not archive.temp_path(path).exists()

    got = write_verified(_stream(b"first"), archive, path, None)
    assert got == (5, "8b04d5e3775d298e78455efc5ca404d5")
    # The same bytes again are a no-op; other bytes are refused, the object unchanged.
    write_verified(_stream(b"first"), archive, path, got)
    with pytest.raises(FileOverwriteError, match="written once"):
        write_verified(_stream(b"second"), archive, path, None)
    assert _objects(s3_server, s3_bucket) == {f"repo/{path}": b"first"}
    assert not archive.temp_path(path).exists()
    # Another writer got there first: the conditional commit refuses, nothing replaced.
    other = "run/raw/raw_2.fits"
    archive.temp_path(other).write_bytes(b"mine")
    s3_server.client.put_object(Bucket=s3_bucket, Key=f"repo/{other}", Body=b"theirs")
    with pytest.raises(FileExistsError):
        archive.commit_new(other)
    assert _objects(s3_server, s3_bucket)[f"repo/{other}"] == b"theirs"
    assert archive.temp_path(other).read_bytes() == b"mine"  # kept for the caller


def test_verify_finds_an_object_overwritten_in_the_bucket_and_repairs_it(
    backbone: Backbone, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    archive = backbone.add_endpoint("archive", "archive", f"s3://{s3_bucket}/repo", {})
    backbone.add_endpoint("site:local", "site", str(tmp_path / "site"), {})
    path = "run/out/calexp.fits"
    write_verified(_stream(b"good bytes"), archive, path, None)
    register_paths(backbone, "archive", [path], run="run/out", dataset_type="calexp")
    replicate(backbone, backbone.select_files(paths=[path]), "site:local")
    assert verify(backbone, "archive").corrupt == []

    s3_server.client.put_object(Bucket=s3_bucket, Key=f"repo/{path}", Body=b"bad  bytes")
    report = verify(backbone, "archive", repair=False)
    assert report.corrupt == [path]
    assert _states(backbone, [path])[(path, "archive")] == ReplicaState.CORRUPT

    repaired = verify(backbone, "archive")
    assert repaired.repaired == [path]
    assert _objects(s3_server, s3_bucket)[f"repo/{path}"] == b"good bytes"
    assert _states(backbone, [path])[(path, "archive")] == ReplicaState.ONLINE


def test_overlapping_object_store_roots_and_a_tape_library_in_a_bucket_are_refused(
    backbone: Backbone, s3_bucket: str, tmp_path: Path
) -> None:
    backbone.add_endpoint("archive", "archive", f"s3://{s3_bucket}/repo", {})
    with pytest.raises(OverlappingRootError, match="lies inside"):
        backbone.add_endpoint("other", "archive", f"s3://{s3_bucket}/repo/sub", {})
    with pytest.raises(ConfigError, match="tape"):
        backbone.add_endpoint(
            "taped", "archive", f"s3://{s3_bucket}/elsewhere", {"tape_root": str(tmp_path)}
        )
    assert [e.name for e in backbone.catalog.endpoints()] == ["archive"]


def _stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def test_the_cli_adds_an_archive_in_a_bucket_and_refuses_a_site_cache_there(
    s3_server: Any, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skybatch.cli.main import main

    home = ["--home", str(tmp_path / "home"), "backbone", "endpoint"]
    root = f"s3://{s3_bucket}/repo"
    assert main([*home, "add", "archive", "--kind", "archive", "--root", root]) == 0
    assert f"endpoint archive: archive at {root}/" in capsys.readouterr().out
    code = main([*home, "add", "site:x", "--kind", "site", "--root", f"s3://{s3_bucket}/c"])
    assert code != 0
    assert "cannot be rooted in an object store" in capsys.readouterr().err
    assert main([*home, "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert root + "/" in listed and "site:x" not in listed
    assert not (Path.cwd() / "s3:").exists()
    # Objects are registered by logical path or by their URI under the root.
    for key in ("run/a.dat", "run/b.dat"):
        s3_server.client.put_object(Bucket=s3_bucket, Key=f"repo/{key}", Body=key.encode())
    backbone = [*home[:-1]]
    register = [*backbone, "register", "--endpoint", "archive"]
    assert main([*register, "run/a.dat", f"{root}/run/b.dat"]) == 0, capsys.readouterr().err
    catalog = Backbone.from_settings(load_settings(home=tmp_path / "home")).catalog
    found = catalog.files_by_paths(["run/a.dat", "run/b.dat"])
    assert {p: f.size_bytes for p, f in found.items()} == {"run/a.dat": 9, "run/b.dat": 9}
