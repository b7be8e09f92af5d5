"""Site cache endpoints: declared quota and the on-disk usage audits compare it with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skybatch.backbone.endpoints import EndpointRegistry
from skybatch.backbone.endpoints.site import SiteCacheEndpoint, SiteSettings
from skybatch.errors import ConfigError


def put(site: SiteCacheEndpoint, path: str, data: bytes) -> None:
    site.temp_path(path).write_bytes(data)
    site.commit(path)


def test_quota_and_shared_fs_settings_are_exposed(tmp_path: Path) -> None:
    site = EndpointRegistry.default().create(
        "site:ncsa", "site", tmp_path / "ncsa", {"quota_bytes": 5_000, "shared_fs": False}
    )
    assert isinstance(site, SiteCacheEndpoint)
    assert site.quota_bytes == 5_000
    assert site.shared_fs is False
    assert site.capabilities.quota and site.capabilities.links
    assert not site.capabilities.tape
    assert site.describe()["quota_bytes"] == 5_000


def test_quota_defaults_to_unlimited(tmp_path: Path) -> None:
    site = SiteCacheEndpoint("site:local", tmp_path / "local")
    assert site.quota_bytes is None
    assert site.shared_fs is True
    assert SiteSettings.model_fields["quota_bytes"].description


def test_negative_quota_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quota_bytes"):
        SiteCacheEndpoint("site:bad", tmp_path / "bad", quota_bytes=-1)


def test_disk_usage_counts_what_is_on_disk(tmp_path: Path) -> None:
    site = SiteCacheEndpoint("site:ncsa", tmp_path / "ncsa", quota_bytes=10_000)
    assert site.disk_usage_bytes() == 0
    put(site, "run/a.fits", b"a" * 100)
    put(site, "run/deep/b.fits", b"b" * 250)
    site.temp_path("run/partial.fits").write_bytes(b"p" * 30)  # partial copies use space too
    assert site.disk_usage_bytes() == 380

    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"o" * 1000)
    site.link_from(outside, "run/symlinked.fits", "symlink")
    site.commit("run/symlinked.fits")
    assert site.disk_usage_bytes() == 380  # a symlink holds no data here

    os.link(site.local_path("run/a.fits"), site.root / "run" / "a-again.fits")
    assert site.disk_usage_bytes() == 380  # one inode, counted once

    site.remove("run/deep/b.fits")
    site.discard("run/partial.fits")
    assert site.disk_usage_bytes() == 100
