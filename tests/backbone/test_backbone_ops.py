"""Managed operations of the Data Backbone: recall order, replication, verify, quotas."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from skybatch.backbone.errors import ChecksumMismatchError, QuotaExceededError
from skybatch.backbone.maintenance import evict, verify
from skybatch.backbone.models import ReplicaState
from skybatch.backbone.replication import replicate, stage_back
from skybatch.backbone.service import Backbone
from skybatch.backbone.staging import recall, release_to_tape
from skybatch.backbone.transfer import TransferMode


def _states(backbone: Backbone, files: list, endpoint: str) -> dict[str, str]:  # type: ignore[type-arg]
    return {
        p.file.path: p.replica.state
        for p in backbone.catalog.placements([f.id for f in files], endpoint)
    }


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_recall_of_1000_files_on_20_volumes_in_random_order_mounts_each_volume_once(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    files = make_files(1000, 1310, "run/tape")  # 50 files of 1310 B fill a 64 KiB volume
    assert release_to_tape(backbone, files) == 1000
    archive = backbone.tape_endpoint("archive")
    volumes = {loc.volume for loc in archive.tape_locations([f.path for f in files]).values()}
    assert len(volumes) == 20
    assert set(_states(backbone, files, "archive").values()) == {"nearline"}
    assert not (tmp_path / "archive" / files[0].path).exists()

    shuffled = list(files)
    random.Random(1).shuffle(shuffled)
    report = recall(backbone, shuffled)

    assert report.files == 1000
    assert report.volumes == 20
    assert report.mounts == 20
    assert report.seeks == 0
    assert set(_states(backbone, files, "archive").values()) == {"online"}
    for f in random.Random(2).sample(files, 25):
        assert _md5(tmp_path / "archive" / f.path) == f.md5


def test_recall_of_online_files_is_a_no_op(backbone: Backbone, make_files) -> None:  # type: ignore[no-untyped-def]
    files = make_files(5, 100, "run/x")
    report = recall(backbone, files)
    assert report.files == 0 and report.already_online == 5 and report.mounts == 0


def test_replicate_recalls_from_tape_then_copies_verified(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:a", "site", str(tmp_path / "site"), {})
    files = make_files(12, 10_000, "run/r")
    release_to_tape(backbone, files[:6])
    until = datetime.now(UTC) + timedelta(hours=1)
    report = replicate(backbone, files, "site:a", pin_until=until)
    assert report.files == 12 and report.recalled == 6 and report.failed == {}
    for f in files:
        assert _md5(tmp_path / "site" / f.path) == f.md5
    placements = backbone.catalog.placements([f.id for f in files], "site:a")
    assert {p.replica.state for p in placements} == {"online"}
    assert all(p.replica.pinned_until is not None for p in placements)
    # Running it again moves nothing.
    again = replicate(backbone, files, "site:a")
    assert again.files == 0 and again.already_there == 12


def test_hardlink_mode_links_instead_of_copying(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:a", "site", str(tmp_path / "site"), {})
    files = make_files(3, 1000, "run/l")
    report = replicate(backbone, files, "site:a", mode=TransferMode.HARDLINK)
    assert report.linked == 3
    for f in files:
        assert (tmp_path / "site" / f.path).stat().st_ino == (
            tmp_path / "archive" / f.path
        ).stat().st_ino


def test_verify_detects_a_corrupt_replica_and_repairs_it_from_another(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:a", "site", str(tmp_path / "site"), {})
    files = make_files(4, 5000, "run/v")
    replicate(backbone, files, "site:a")
    bad = tmp_path / "site" / files[1].path
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    bad.write_bytes(bytes(data))

    report = verify(backbone, "site:a")

    assert report.checked == 4
    assert report.corrupt == [files[1].path]
    assert report.repaired == [files[1].path]
    assert _md5(bad) == files[1].md5
    assert set(_states(backbone, files, "site:a").values()) == {"online"}


def test_verify_repairs_the_archive_disk_copy_from_tape(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    files = make_files(2, 5000, "run/t")
    release_to_tape(backbone, files)
    recall(backbone, files)  # online again, with a tape copy
    victim = tmp_path / "archive" / files[0].path
    victim.write_bytes(b"truncated")
    report = verify(backbone, "archive")
    assert report.corrupt == [files[0].path]
    assert report.repaired == [files[0].path]
    assert _md5(victim) == files[0].md5


def test_verify_without_a_good_copy_leaves_the_replica_marked_corrupt(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    files = make_files(1, 100, "run/c")
    (tmp_path / "archive" / files[0].path).write_bytes(b"x" * 100)
    report = verify(backbone, "archive")
    assert list(report.unrepaired) == [files[0].path]
    assert _states(backbone, files, "archive") == {files[0].path: "corrupt"}


def test_a_full_quota_is_a_clear_error_and_copies_nothing(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    site_root = tmp_path / "site"
    backbone.add_endpoint("site:small", "site", str(site_root), {"quota_bytes": 25_000})
    files = make_files(3, 10_000, "run/q")
    with pytest.raises(QuotaExceededError) as info:
        replicate(backbone, files, "site:small")
    message = str(info.value)
    assert "site:small" in message and "30,000" in message
    assert info.value.needed_bytes == 30_000
    assert not site_root.exists() or not any(p.is_file() for p in site_root.rglob("*"))
    assert backbone.catalog.placements([f.id for f in files], "site:small") == []


def test_lru_eviction_makes_room_but_never_evicts_pinned_files(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:s", "site", str(tmp_path / "site"), {"quota_bytes": 30_000})
    old = make_files(3, 10_000, "run/old")
    new = make_files(2, 10_000, "run/new")
    replicate(backbone, old, "site:s")
    backbone.catalog.touch([old[2].id], "site:s")  # most recently used of the old ones

    report = replicate(backbone, new, "site:s")

    assert report.evicted == 2
    on_site = {p.file.path for p in backbone.catalog.replicas_on("site:s")}
    assert on_site == {old[2].path, *(f.path for f in new)}
    assert not (tmp_path / "site" / old[0].path).exists()

    backbone.catalog.pin([f.id for f in new], "site:s", datetime.now(UTC) + timedelta(hours=1))
    backbone.catalog.pin([old[2].id], "site:s", datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(QuotaExceededError):
        replicate(backbone, old[:1], "site:s")


def test_evict_keeps_pinned_and_last_copies(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:e", "site", str(tmp_path / "site"), {})
    files = make_files(3, 1000, "run/e")
    replicate(backbone, files, "site:e")
    backbone.catalog.pin([files[0].id], "site:e", datetime.now(UTC) + timedelta(hours=1))
    report = evict(backbone, "site:e", files)
    assert report.evicted == 2 and report.skipped_pinned == 1
    # The archive copy is the last one: evicting it from disk needs a tape copy.
    archive_report = evict(backbone, "archive", files)
    assert archive_report.evicted == 0 and archive_report.skipped_last_copy == 3


def test_stage_back_copies_a_runs_outputs_from_the_site_to_the_archive(
    backbone: Backbone, archive: str, tmp_path: Path
) -> None:
    from skybatch.backbone.maintenance import register_paths

    site_root = tmp_path / "site"
    backbone.add_endpoint("site:b", "site", str(site_root), {})
    paths = [f"out/run1/calexp/c_{i}.fits" for i in range(5)]
    for p in paths:
        (site_root / p).parent.mkdir(parents=True, exist_ok=True)
        (site_root / p).write_bytes(p.encode() * 100)
    register_paths(backbone, "site:b", paths, run="out/run1")
    report = stage_back(backbone, "site:b", "out/run1")
    assert report.files == 5
    files = backbone.select_files(run="out/run1")
    assert set(_states(backbone, files, "archive").values()) == {"online"}
    for f in files:
        assert _md5(tmp_path / "archive" / f.path) == f.md5


def test_replicating_from_a_corrupt_source_fails_that_file_and_keeps_the_others(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:c", "site", str(tmp_path / "site"), {})
    files = make_files(3, 1000, "run/bad")
    (tmp_path / "archive" / files[1].path).write_bytes(b"y" * 1000)
    with pytest.raises(Exception) as info:
        replicate(backbone, files, "site:c")
    assert files[1].path in str(info.value)
    states = _states(backbone, files, "site:c")
    assert states == {files[0].path: "online", files[2].path: "online"}
    assert not (tmp_path / "site" / files[1].path).exists()
    assert ChecksumMismatchError.__name__  # the failure is a verification failure
    assert list((tmp_path / "site").rglob("*.skybatch-part")) == []


def test_release_makes_files_unreadable_until_recalled(backbone: Backbone, make_files) -> None:  # type: ignore[no-untyped-def]
    from skybatch.backbone.errors import NearlineError

    files = make_files(2, 100, "run/n")
    release_to_tape(backbone, files)
    with pytest.raises(NearlineError):
        backbone.endpoint("archive").open_read(files[0].path)
    assert _states(backbone, files, "archive") == {f.path: ReplicaState.NEARLINE for f in files}


def test_a_refused_replicate_does_not_recall_from_tape_first(
    backbone: Backbone,
    make_files,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    backbone.add_endpoint("site:tiny", "site", str(tmp_path / "site"), {"quota_bytes": 1000})
    files = make_files(3, 10_000, "run/nl")
    release_to_tape(backbone, files)
    mounts_before = backbone.tape_endpoint("archive").tape_stats().mounts
    with pytest.raises(QuotaExceededError):
        replicate(backbone, files, "site:tiny")
    assert backbone.tape_endpoint("archive").tape_stats().mounts == mounts_before
    assert set(_states(backbone, files, "archive").values()) == {"nearline"}
