"""A compute site's shared-filesystem cache (endpoint names ``site:<name>``).

Inputs are pre-staged here so jobs on the site's nodes open them directly. The cache
has a quota, but the endpoint only *declares* it: which replicas count, which are
pinned and which are evicted (LRU) is decided by the managed layer from the catalog,
so every site behaves the same whatever its filesystem. :meth:`disk_usage_bytes` lets
an audit compare the catalog's view with what the disk really holds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from skybatch.backbone.endpoints import parse_settings
from skybatch.backbone.endpoints.base import Capabilities
from skybatch.backbone.endpoints.posix import PosixEndpoint

__all__ = ["SiteCacheEndpoint", "SiteSettings"]


class SiteSettings(BaseModel):
    """Settings of a site cache endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quota_bytes: int | None = Field(
        default=None,
        ge=0,
        description="bytes the cache may hold (kept by LRU eviction); unset = unlimited",
    )
    shared_fs: bool = Field(
        default=True,
        description="compute nodes see this directory at the same path (jobs open files in place)",
    )


class SiteCacheEndpoint(PosixEndpoint):
    """A directory on a site's shared filesystem that caches replicas for jobs there."""

    kind: ClassVar[str] = "site"
    capabilities: ClassVar[Capabilities] = Capabilities(quota=True, links=True)
    Settings: ClassVar[type[BaseModel]] = SiteSettings

    def __init__(self, name: str, root: Path, **settings: Any) -> None:
        super().__init__(name, root)
        self.settings = parse_settings(SiteSettings, name, settings)
        self.quota_bytes: int | None = self.settings.quota_bytes
        self.shared_fs: bool = self.settings.shared_fs

    def disk_usage_bytes(self) -> int:
        """Bytes of the regular files under the root, partial copies included.

        Symlinks hold no data here and are not counted; a file with several hard links
        in the cache is counted once. The managed layer accounts the quota from the
        catalog; this is the ground truth an audit compares it with.
        """
        seen: set[tuple[int, int]] = set()
        total = 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for filename in filenames:
                try:
                    info = os.lstat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue  # removed while we walked
                key = (info.st_dev, info.st_ino)
                if stat.S_ISREG(info.st_mode) and key not in seen:
                    seen.add(key)
                    total += info.st_size
        return total

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["quota_bytes"] = self.quota_bytes
        info["shared_fs"] = self.shared_fs
        return info
