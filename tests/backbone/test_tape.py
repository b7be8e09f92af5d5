"""The archive's tape tier: nearline files, recall streams, mounts, seeks, volumes."""

from __future__ import annotations

import itertools
import multiprocessing
import random
from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

import pytest

from skybatch.backbone.endpoints import tape as tape_module
from skybatch.backbone.endpoints.archive import ArchiveEndpoint
from skybatch.backbone.endpoints.base import FileState, TapeLocation
from skybatch.backbone.endpoints.tape import EmulatedTapeLibrary, TapeSettings
from skybatch.backbone.errors import BackboneError, FileMissingError, NearlineError


def make_archive(root: Path, **tape: object) -> ArchiveEndpoint:
    return ArchiveEndpoint("archive", root, tape=tape)


def put(archive: ArchiveEndpoint, path: str, data: bytes) -> None:
    archive.temp_path(path).write_bytes(data)
    archive.commit(path)


def content(index: int, size: int = 100) -> bytes:
    return random.Random(index).randbytes(size)


class Collect:
    """A recall sink that keeps what it was given (reading in two parts)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def __call__(self, path: str, stream: BinaryIO) -> None:
        head = stream.read(7)
        self.files[path] = head + stream.read()
        assert stream.read(1) == b""


@pytest.fixture
def archive(tmp_path: Path) -> ArchiveEndpoint:
    return make_archive(tmp_path / "archive", volume_capacity_bytes=1000)


def test_migrate_and_release_make_files_nearline(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"a" * 10)
    put(archive, "run/b.fits", b"b" * 20)
    locations = archive.migrate(["run/a.fits", "run/b.fits"])
    assert [loc.path for loc in locations] == ["run/a.fits", "run/b.fits"]
    assert archive.state("run/a.fits") is FileState.ONLINE  # migrate keeps the disk copy

    archive.release(["run/a.fits"])
    assert archive.state("run/a.fits") is FileState.NEARLINE
    assert archive.state("run/b.fits") is FileState.ONLINE
    with pytest.raises(NearlineError, match="nearline") as info:
        archive.open_read("run/a.fits")
    assert info.value.hint is not None and "Recall" in info.value.hint
    with pytest.raises(NearlineError):
        archive.size("run/a.fits")
    assert list(archive.iter_files()) == ["run/b.fits"]
    archive.release(["run/a.fits"])  # already nearline: nothing to do


def test_migrate_skips_files_already_on_tape(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"a" * 10)
    first = archive.migrate(["run/a.fits"])
    written = archive.tape_stats().bytes_written
    assert archive.migrate(["run/a.fits", "run/a.fits"]) == first
    assert archive.tape_stats().bytes_written == written


def test_migrate_refuses_files_that_are_not_online(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"a")
    with pytest.raises(FileMissingError, match=r"run/missing\.fits"):
        archive.migrate(["run/a.fits", "run/missing.fits"])
    assert archive.tape_locations(["run/a.fits"]) == {}


def test_release_is_all_or_nothing(archive: ArchiveEndpoint) -> None:
    put(archive, "run/taped.fits", b"t")
    put(archive, "run/untaped.fits", b"u")
    archive.migrate(["run/taped.fits"])
    with pytest.raises(BackboneError, match=r"untaped\.fits"):
        archive.release(["run/taped.fits", "run/untaped.fits"])
    assert archive.state("run/taped.fits") is FileState.ONLINE
    assert archive.state("run/untaped.fits") is FileState.ONLINE


def test_read_volume_streams_exact_bytes(archive: ArchiveEndpoint) -> None:
    files = {f"run/f{i}.fits": content(i, size=50 + i) for i in range(5)}
    for path, data in files.items():
        put(archive, path, data)
    archive.migrate(list(files))
    archive.release(list(files))
    locations = archive.tape_locations(list(files))
    assert {loc.volume for loc in locations.values()} == {"VOL000001"}
    sink = Collect()
    ordered = sorted(files, key=lambda p: locations[p].position)
    archive.read_volume("VOL000001", ordered, sink)
    assert sink.files == files
    assert archive.tape_stats().bytes_read == sum(len(d) for d in files.values())


def test_streams_are_bounded_to_their_file(archive: ArchiveEndpoint) -> None:
    put(archive, "run/one.fits", b"1" * 30)
    put(archive, "run/two.fits", b"2" * 30)
    archive.migrate(["run/one.fits", "run/two.fits"])
    seen: list[bytes] = []
    archive.read_volume(
        "VOL000001", ["run/one.fits"], lambda path, stream: seen.append(stream.read(10**6))
    )
    assert seen == [b"1" * 30]


def test_recall_commits_keep_the_tape_copy(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"payload")
    archive.migrate(["run/a.fits"])
    archive.release(["run/a.fits"])

    def sink(path: str, stream: BinaryIO) -> None:
        archive.temp_path(path).write_bytes(stream.read())
        archive.commit(path)

    archive.read_volume("VOL000001", ["run/a.fits"], sink)
    assert archive.state("run/a.fits") is FileState.ONLINE
    assert "run/a.fits" in archive.tape_locations(["run/a.fits"])
    archive.release(["run/a.fits"])
    assert archive.state("run/a.fits") is FileState.NEARLINE


def test_new_content_forgets_the_stale_tape_copy(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"old data")
    archive.migrate(["run/a.fits"])
    put(archive, "run/a.fits", b"new data")  # same size, other bytes
    assert archive.tape_locations(["run/a.fits"]) == {}
    with pytest.raises(BackboneError, match="without a tape copy"):
        archive.release(["run/a.fits"])


def test_remove_forgets_the_tape_copy(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"data")
    archive.migrate(["run/a.fits"])
    archive.release(["run/a.fits"])
    archive.remove("run/a.fits")
    assert archive.state("run/a.fits") is FileState.MISSING
    assert archive.tape_locations(["run/a.fits"]) == {}


def test_read_volume_checks_paths_against_the_volume(archive: ArchiveEndpoint) -> None:
    put(archive, "run/big.fits", b"x" * 900)
    put(archive, "run/next.fits", b"y" * 900)
    archive.migrate(["run/big.fits", "run/next.fits"])
    with pytest.raises(BackboneError, match="is on VOL000002"):
        archive.read_volume("VOL000001", ["run/next.fits"], Collect())
    with pytest.raises(FileMissingError, match="no copy on tape"):
        archive.read_volume("VOL000001", ["run/other.fits"], Collect())
    with pytest.raises(BackboneError, match="does not exist"):
        archive.library.mount("VOL999999")


def test_mounts_are_counted_only_on_volume_change(archive: ArchiveEndpoint) -> None:
    put(archive, "run/v1.fits", b"1" * 600)
    put(archive, "run/v2.fits", b"2" * 600)
    archive.migrate(["run/v1.fits", "run/v2.fits"])
    assert archive.library.volumes() == ["VOL000001", "VOL000002"]
    assert archive.tape_stats().mounts == 0  # writing does not use the recall drive
    for volume, path, mounts in [
        ("VOL000001", "run/v1.fits", 1),
        ("VOL000001", "run/v1.fits", 1),
        ("VOL000002", "run/v2.fits", 2),
        ("VOL000001", "run/v1.fits", 3),
    ]:
        archive.read_volume(volume, [path], Collect())
        assert archive.tape_stats().mounts == mounts


def test_seeks_are_counted_when_reading_backwards(archive: ArchiveEndpoint) -> None:
    for name in "abc":
        put(archive, f"run/{name}.fits", name.encode() * 10)
    archive.migrate(["run/a.fits", "run/b.fits", "run/c.fits"])
    archive.read_volume("VOL000001", ["run/a.fits", "run/c.fits"], Collect())  # skip forward
    assert archive.tape_stats().seeks == 0
    archive.read_volume("VOL000001", ["run/b.fits", "run/a.fits"], Collect())
    assert archive.tape_stats().seeks == 2  # b is before the head (after c), then a


def test_costs_are_slept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(tape_module.time, "sleep", sleeps.append)
    archive = make_archive(
        tmp_path / "archive", mount_time_s=90.0, seek_time_s=5.0, read_bytes_per_s=100.0
    )
    put(archive, "run/a.fits", b"a" * 50)
    put(archive, "run/b.fits", b"b" * 50)
    archive.migrate(["run/a.fits", "run/b.fits"])
    archive.read_volume("VOL000001", ["run/b.fits", "run/a.fits"], Collect())
    assert sleeps == [90.0, 0.5, 5.0, 0.5]


def test_volumes_roll_over_at_capacity(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "archive", volume_capacity_bytes=100)
    sizes = [40, 40, 40, 250, 10]
    for index, size in enumerate(sizes):
        put(archive, f"run/{index}.fits", content(index, size))
    locations = archive.migrate([f"run/{index}.fits" for index in range(len(sizes))])
    assert [(loc.volume, loc.position) for loc in locations] == [
        ("VOL000001", 0),
        ("VOL000001", 40),
        ("VOL000002", 0),
        ("VOL000003", 0),  # larger than a volume: one of its own
        ("VOL000004", 0),
    ]
    assert archive.library.volume_path("VOL000001").stat().st_size == 80


def test_a_torn_append_is_wasted_space(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"a" * 10)
    archive.migrate(["run/a.fits"])
    with open(archive.library.volume_path("VOL000001"), "ab") as volume:
        volume.write(b"torn bytes of a crashed append")
    put(archive, "run/b.fits", b"b" * 10)
    (location,) = archive.migrate(["run/b.fits"])
    assert location.position == 10 + len(b"torn bytes of a crashed append")
    sink = Collect()
    archive.read_volume("VOL000001", ["run/a.fits", "run/b.fits"], sink)
    assert sink.files == {"run/a.fits": b"a" * 10, "run/b.fits": b"b" * 10}


def test_counters_persist_across_reopening(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "archive")
    put(archive, "run/a.fits", b"abc")
    archive.migrate(["run/a.fits"])
    archive.read_volume("VOL000001", ["run/a.fits"], Collect())
    archive.read_volume("VOL000001", ["run/a.fits"], Collect())
    before = archive.tape_stats()
    assert (before.mounts, before.seeks, before.bytes_read, before.bytes_written) == (1, 1, 6, 3)
    assert make_archive(tmp_path / "archive").tape_stats() == before
    library = EmulatedTapeLibrary(tmp_path / "archive" / ".skybatch-tape", TapeSettings())
    assert library.stats() == before
    library.reset_stats()
    assert archive.tape_stats() == tape_module.TapeStats(0, 0, 0, 0)


def test_counters_are_saved_when_the_sink_fails(archive: ArchiveEndpoint) -> None:
    put(archive, "run/a.fits", b"abcdef")
    archive.migrate(["run/a.fits"])

    def failing(path: str, stream: BinaryIO) -> None:
        stream.read(2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        archive.read_volume("VOL000001", ["run/a.fits"], failing)
    stats = archive.tape_stats()
    assert stats.mounts == 1
    assert 2 <= stats.bytes_read <= 6


def _write_many(library_root: str, worker: int, count: int) -> None:
    library = EmulatedTapeLibrary(Path(library_root), TapeSettings(volume_capacity_bytes=2000))
    scratch = Path(library_root).parent / f"worker{worker}"
    scratch.mkdir()
    for index in range(count):
        source = scratch / f"{index}.bin"
        source.write_bytes(content(worker * 1000 + index, size=100 + index * 7))
        library.write_files([(f"w{worker}/{index}.bin", source)])


def test_two_processes_writing_concurrently_keep_the_index_consistent(tmp_path: Path) -> None:
    root = tmp_path / "tape"
    EmulatedTapeLibrary(root)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(str(root), w, 25)) for w in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0

    library = EmulatedTapeLibrary(root, TapeSettings(volume_capacity_bytes=2000))
    expected = {
        f"w{w}/{i}.bin": content(w * 1000 + i, size=100 + i * 7) for w in (1, 2) for i in range(25)
    }
    locations = library.locations(list(expected))
    assert set(locations) == set(expected)
    by_volume: dict[str, list[TapeLocation]] = defaultdict(list)
    for location in locations.values():
        by_volume[location.volume].append(location)
    sink = Collect()
    for volume, on_volume in by_volume.items():
        on_volume.sort()
        for first, second in itertools.pairwise(on_volume):
            assert first.position + first.size <= second.position  # no overlaps
        library.read_volume(volume, [loc.path for loc in on_volume], sink)
    assert sink.files == expected
    assert library.stats().seeks == 0


def test_recall_ordered_by_volume_and_position_mounts_each_volume_once(tmp_path: Path) -> None:
    """1,000 files on 20 volumes, volumes in random order: 20 mounts, no seeks."""
    archive = make_archive(tmp_path / "archive", volume_capacity_bytes=50 * 100)
    files = {f"run/{i // 100:02d}/f{i:04d}.fits": content(i) for i in range(1000)}
    for path, data in files.items():  # fast set-up: files placed on the disk front directly
        local = archive.local_path(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    random_order = list(files)
    random.Random(1).shuffle(random_order)  # written in an order unrelated to the recall
    archive.migrate(random_order)
    archive.release(list(files))
    assert len(archive.library.volumes()) == 20

    by_volume: dict[str, list[TapeLocation]] = defaultdict(list)
    for location in archive.tape_locations(list(files)).values():
        by_volume[location.volume].append(location)
    volumes = list(by_volume)
    random.Random(2).shuffle(volumes)
    before = archive.tape_stats()
    sink = Collect()
    for volume in volumes:
        ordered = sorted(by_volume[volume], key=lambda loc: loc.position)
        archive.read_volume(volume, [loc.path for loc in ordered], sink)
    after = archive.tape_stats()
    assert after.mounts - before.mounts == 20
    assert after.seeks - before.seeks == 0
    assert after.bytes_read - before.bytes_read == 100 * 1000
    assert sink.files == files
