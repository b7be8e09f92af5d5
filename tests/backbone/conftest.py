"""Fixtures for the Data Backbone: a catalog in a temporary home, archive and site endpoints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from skybatch.backbone.maintenance import register_paths
from skybatch.backbone.models import FileRow
from skybatch.backbone.service import Backbone
from skybatch.settings import load_settings

MakeFiles = Callable[[int, int, str], list[FileRow]]


@pytest.fixture
def backbone(tmp_path: Path) -> Backbone:
    """A backbone with an empty catalog in a temporary skybatch home (no endpoints yet)."""
    return Backbone.from_settings(load_settings(home=tmp_path / "home"))


@pytest.fixture
def archive(backbone: Backbone, tmp_path: Path) -> str:
    """An archive endpoint whose emulated tape volumes hold 64 KiB each."""
    backbone.add_endpoint(
        "archive", "archive", str(tmp_path / "archive"), {"tape": {"volume_capacity_bytes": 65536}}
    )
    return "archive"


@pytest.fixture
def make_files(backbone: Backbone, archive: str, tmp_path: Path) -> MakeFiles:
    """Write ``count`` random files of ``size`` bytes under the archive and register them."""

    def make(count: int, size: int, run: str = "run/a") -> list[FileRow]:
        root = tmp_path / "archive"
        paths = []
        for i in range(count):
            path = f"{run}/data/file_{i:05d}.dat"
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(os.urandom(size))
            paths.append(path)
        register_paths(backbone, archive, paths, run=run, dataset_type="data")
        return backbone.select_files(paths=paths)

    return make
