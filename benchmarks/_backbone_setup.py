"""Shared set-up of the backbone benchmarks: a temporary home with archive and site."""

from __future__ import annotations

import os
from pathlib import Path

from skybatch.backbone.maintenance import register_paths
from skybatch.backbone.models import FileRow
from skybatch.backbone.service import Backbone
from skybatch.settings import load_settings


def make_backbone(root: Path, workers: int = 2) -> Backbone:
    backbone = Backbone.from_settings(load_settings(home=root / "home"), workers=workers)
    backbone.add_endpoint("archive", "archive", str(root / "archive"), {})
    return backbone


def write_files(root: Path, run: str, count: int, size: int) -> list[str]:
    paths = []
    for i in range(count):
        path = f"{run}/data/{i // 100:03d}/file_{i:06d}.dat"
        target = root / "archive" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def make_registered(
    backbone: Backbone, root: Path, run: str, count: int, size: int
) -> list[FileRow]:
    paths = write_files(root, run, count, size)
    register_paths(backbone, "archive", paths, run=run)
    return backbone.select_files(run=run)
