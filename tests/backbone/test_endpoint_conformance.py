"""The contract every endpoint kind keeps (run against each kind the registry knows).

A new kind joins by adding its name (and settings) to ``KIND_SETTINGS``; everything the
managed layer relies on, two-phase writes above all, is checked here once for all.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from skybatch.backbone.endpoints import EndpointRegistry
from skybatch.backbone.endpoints.base import Endpoint, FileState, TapeBackedEndpoint
from skybatch.backbone.endpoints.posix import PosixEndpoint
from skybatch.backbone.errors import FileMissingError
from skybatch.errors import ConfigError, InputError

KIND_SETTINGS: dict[str, dict[str, Any]] = {
    "archive": {"tape": {"volume_capacity_bytes": 1 << 20}},
    "site": {"quota_bytes": 10 << 20},
}

INVALID_PATHS = [
    "",
    "/abs/file.fits",
    "../escape.fits",
    "run/../../escape.fits",
    "run\\file.fits",
    "run//file.fits",
    "./file.fits",
    "run/",
    "run/.file.fits.skybatch-part",
]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def write(endpoint: Endpoint, path: str, data: bytes) -> None:
    """What the managed layer does: write the temp file, then commit."""
    endpoint.temp_path(path).write_bytes(data)
    endpoint.commit(path)


def read(endpoint: Endpoint, path: str) -> bytes:
    with endpoint.open_read(path) as stream:
        return stream.read()


@pytest.fixture(params=sorted(KIND_SETTINGS))
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Endpoint:
    kind: str = request.param
    name = "archive" if kind == "archive" else f"site:{kind}-test"
    return EndpointRegistry.default().create(name, kind, tmp_path / "endpoint", KIND_SETTINGS[kind])


class TestEndpointConformance:
    def test_temp_data_is_invisible_until_commit(self, endpoint: Endpoint) -> None:
        path = "run/calexp/file.fits"
        temp = endpoint.temp_path(path)
        temp.write_bytes(b"partial")
        assert temp != endpoint.local_path(path)
        assert temp.parent == endpoint.local_path(path).parent
        assert not endpoint.local_path(path).exists()
        assert endpoint.state(path) is FileState.MISSING
        assert list(endpoint.iter_files()) == []
        with pytest.raises(FileMissingError):
            endpoint.open_read(path)
        with pytest.raises(FileMissingError):
            endpoint.size(path)

        endpoint.commit(path)
        assert not temp.exists()
        assert endpoint.state(path) is FileState.ONLINE
        assert read(endpoint, path) == b"partial"
        assert list(endpoint.iter_files()) == [path]

    def test_temp_path_is_deterministic_and_creates_parents(self, endpoint: Endpoint) -> None:
        first = endpoint.temp_path("a/b/c.fits")
        assert first == endpoint.temp_path("a/b/c.fits")
        assert first.parent.is_dir()
        assert first.name != "c.fits"

    def test_commit_replaces_and_final_name_never_holds_partial_data(
        self, endpoint: Endpoint
    ) -> None:
        path = "run/file.fits"
        write(endpoint, path, b"version one")
        endpoint.temp_path(path).write_bytes(b"version two, half writ")
        assert read(endpoint, path) == b"version one"
        endpoint.temp_path(path).write_bytes(b"version two")
        endpoint.commit(path)
        assert read(endpoint, path) == b"version two"
        assert endpoint.size(path) == len(b"version two")
        assert list(endpoint.iter_files()) == [path]

    def test_commit_without_temp_file_fails(self, endpoint: Endpoint) -> None:
        with pytest.raises(FileMissingError, match="no partial copy"):
            endpoint.commit("run/never-written.fits")

    def test_discard_is_idempotent(self, endpoint: Endpoint) -> None:
        path = "run/file.fits"
        endpoint.discard(path)
        temp = endpoint.temp_path(path)
        temp.write_bytes(b"junk")
        endpoint.discard(path)
        endpoint.discard(path)
        assert not temp.exists()
        assert endpoint.state(path) is FileState.MISSING

    def test_remove_is_idempotent(self, endpoint: Endpoint) -> None:
        path = "run/file.fits"
        endpoint.remove(path)
        write(endpoint, path, b"data")
        endpoint.remove(path)
        endpoint.remove(path)
        assert endpoint.state(path) is FileState.MISSING
        assert list(endpoint.iter_files()) == []

    @pytest.mark.parametrize("size", [0, 1, 3 * 1024 * 1024])
    def test_round_trip_of_binary_content(self, endpoint: Endpoint, size: int) -> None:
        data = payload(size, seed=size)
        write(endpoint, "run/raw/data.bin", data)
        assert endpoint.size("run/raw/data.bin") == size
        assert read(endpoint, "run/raw/data.bin") == data

    def test_nested_directories_and_prefixes(self, endpoint: Endpoint) -> None:
        paths = ["a/b/c/d.fits", "a/b/e.fits", "a/bc/f.fits", "g.fits"]
        for index, path in enumerate(paths):
            write(endpoint, path, payload(10, seed=index))
        assert sorted(endpoint.iter_files()) == sorted(paths)
        assert sorted(endpoint.iter_files("a/b/")) == ["a/b/c/d.fits", "a/b/e.fits"]
        assert sorted(endpoint.iter_files("a/b")) == ["a/b/c/d.fits", "a/b/e.fits", "a/bc/f.fits"]
        assert sorted(endpoint.iter_files("a/b/c")) == ["a/b/c/d.fits"]
        assert list(endpoint.iter_files("nowhere/")) == []

    def test_state_transitions(self, endpoint: Endpoint) -> None:
        path = "run/file.fits"
        assert endpoint.state(path) is FileState.MISSING
        endpoint.temp_path(path).write_bytes(b"x")
        assert endpoint.state(path) is FileState.MISSING
        endpoint.commit(path)
        assert endpoint.state(path) is FileState.ONLINE
        endpoint.remove(path)
        assert endpoint.state(path) is FileState.MISSING

    def test_iter_files_lists_committed_files_only(self, endpoint: Endpoint) -> None:
        write(endpoint, "run/kept.fits", b"kept")
        endpoint.temp_path("run/partial.fits").write_bytes(b"partial")
        if isinstance(endpoint, TapeBackedEndpoint):
            endpoint.migrate(["run/kept.fits"])  # fills the internal tape directory
        (endpoint.local_path("run") / "subdir").mkdir()
        assert list(endpoint.iter_files()) == ["run/kept.fits"]

    @pytest.mark.parametrize("bad", INVALID_PATHS)
    def test_invalid_logical_paths_are_rejected(self, endpoint: Endpoint, bad: str) -> None:
        for operation in (
            endpoint.local_path,
            endpoint.temp_path,
            endpoint.state,
            endpoint.size,
            endpoint.open_read,
            endpoint.commit,
            endpoint.discard,
            endpoint.remove,
        ):
            with pytest.raises(InputError) as info:
                operation(bad)
            assert repr(bad) in str(info.value)

    def test_invalid_prefix_is_rejected(self, endpoint: Endpoint) -> None:
        with pytest.raises(InputError, match="prefix"):
            list(endpoint.iter_files("../"))

    def test_missing_files_raise_file_missing(self, endpoint: Endpoint) -> None:
        with pytest.raises(FileMissingError, match="not on endpoint"):
            endpoint.size("run/missing.fits")
        with pytest.raises(FileMissingError):
            endpoint.open_read("run/missing.fits")
        (endpoint.root / "run" / "dir.fits").mkdir(parents=True)
        with pytest.raises(FileMissingError):
            endpoint.size("run/dir.fits")
        with pytest.raises(FileMissingError):
            endpoint.open_read("run/dir.fits")

    @pytest.mark.parametrize("mode", ["hardlink", "symlink"])
    def test_link_from(self, endpoint: Endpoint, tmp_path: Path, mode: str) -> None:
        if not endpoint.capabilities.links:
            pytest.skip(f"{endpoint.kind} does not support links")
        source = tmp_path / "source.bin"
        data = payload(4096, seed=7)
        source.write_bytes(data)
        path = "linked/file.bin"
        endpoint.link_from(source, path, mode)
        assert endpoint.state(path) is FileState.MISSING  # written under the temp name
        endpoint.commit(path)
        assert read(endpoint, path) == data
        assert endpoint.size(path) == len(data)
        final = endpoint.local_path(path)
        if mode == "hardlink":
            assert os.stat(final).st_ino == os.stat(source).st_ino
        else:
            assert final.is_symlink()
        assert list(endpoint.iter_files()) == [path]

    def test_link_from_rejects_bad_mode_and_missing_source(
        self, endpoint: Endpoint, tmp_path: Path
    ) -> None:
        if not endpoint.capabilities.links:
            pytest.skip(f"{endpoint.kind} does not support links")
        source = tmp_path / "source.bin"
        source.write_bytes(b"x")
        with pytest.raises(InputError, match="link mode"):
            endpoint.link_from(source, "run/file.bin", "reflink")
        with pytest.raises(FileMissingError):
            endpoint.link_from(tmp_path / "absent.bin", "run/file.bin", "hardlink")

    def test_sweep_temp_files_removes_stale_partial_files(self, endpoint: Endpoint) -> None:
        assert isinstance(endpoint, PosixEndpoint)
        write(endpoint, "a/committed.fits", b"keep")
        for path in ("a/x.fits", "a/deep/y.fits", "b/z.fits"):
            endpoint.temp_path(path).write_bytes(b"crashed")
        assert endpoint.sweep_temp_files("a/", min_age_s=3600) == []
        assert endpoint.sweep_temp_files("a/") == ["a/deep/y.fits", "a/x.fits"]
        assert endpoint.temp_path("b/z.fits").exists()
        assert endpoint.sweep_temp_files() == ["b/z.fits"]
        assert endpoint.sweep_temp_files() == []
        assert read(endpoint, "a/committed.fits") == b"keep"

    def test_describe_names_the_endpoint(self, endpoint: Endpoint) -> None:
        info = endpoint.describe()
        assert info["name"] == endpoint.name
        assert info["kind"] == endpoint.kind
        assert info["root"] == str(endpoint.root)


# -- the registry ------------------------------------------------------------------------


def test_default_registry_knows_the_built_in_kinds() -> None:
    registry = EndpointRegistry.default()
    assert {"archive", "site"} <= set(registry.kinds())
    assert registry.get("archive").kind == "archive"


def test_unknown_kind_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown endpoint kind 'ftp'") as info:
        EndpointRegistry.default().create("x", "ftp", tmp_path, {})
    assert info.value.hint is not None and "archive" in info.value.hint


def test_bad_settings_name_endpoint_and_field(tmp_path: Path) -> None:
    registry = EndpointRegistry.default()
    with pytest.raises(ConfigError) as info:
        registry.create("site:ncsa", "site", tmp_path, {"quota_bytes": "lots"})
    assert "site:ncsa" in str(info.value)
    assert info.value.where == "endpoint 'site:ncsa' settings.quota_bytes"
    with pytest.raises(ConfigError, match=r"tape\.mount_time"):
        registry.create("archive", "archive", tmp_path, {"tape": {"mount_time": 1}})


def test_registry_refuses_classes_that_do_not_fit(tmp_path: Path) -> None:
    site_class = EndpointRegistry.default().get("site")
    with pytest.raises(ConfigError, match="declares kind 'site'"):
        EndpointRegistry({"cache": site_class})
    with pytest.raises(ConfigError, match="not an Endpoint subclass"):
        EndpointRegistry({"site": dict})  # type: ignore[dict-item]
    assert EndpointRegistry({"site": site_class}).kinds() == ["site"]
