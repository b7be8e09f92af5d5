"""Catalog calls join a caller's transaction (``session=``): registration, provenance
and pins commit or roll back together with the caller's own writes, on SQLite and
PostgreSQL; on SQLite a caller holding the write lock is not blocked by its own calls."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from skybatch.backbone.catalog import Catalog, FileRecord
from skybatch.backbone.models import Activity, EdgeRelation, ProvenanceEdge, ReplicaState
from skybatch.db.engine import make_engine, session_factory, upgrade
from skybatch.db.models import Meta, utcnow
from skybatch.errors import InputError


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url, busy_timeout_s=2.0)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


def _records(n: int) -> list[FileRecord]:
    return [
        FileRecord(path=f"run/x/f{i}.fits", size_bytes=10 + i, md5=f"{i:032x}", run="run/x")
        for i in range(n)
    ]


def _write_together(catalog: Catalog, session: Session) -> None:
    """A caller's unit of work: its own row, then files, an activity, edges and a pin."""
    session.add(Meta(key="caller", value="wrote"))
    session.flush()  # the caller now holds the write lock (SQLite)
    catalog.add_endpoint("archive", "archive", "/archive", session=session)
    ids = catalog.register(_records(3), "archive", session=session)
    activity = catalog.add_activity("quantum", "q1", {"task_label": "t"}, session=session)
    catalog.add_edges(
        EdgeRelation.WAS_GENERATED_BY, list(ids.values()), activity_id=activity, session=session
    )
    catalog.pin(list(ids.values()), "archive", utcnow(), session=session)
    # Reads in the same transaction see what it wrote.
    assert len(catalog.files(run="run/x", session=session)) == 3
    placements = catalog.placements(list(ids.values()), "archive", session=session)
    assert all(p.replica.pinned_until is not None for p in placements)


def _counts(sessions: sessionmaker[Session]) -> tuple[int, int, int, int]:
    with sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Meta).where(Meta.key == "caller")) or 0,
            len(Catalog(sessions).files()),
            s.scalar(select(func.count()).select_from(Activity)) or 0,
            s.scalar(select(func.count()).select_from(ProvenanceEdge)) or 0,
        )


def test_a_rolled_back_caller_leaves_nothing(sessions: sessionmaker[Session]) -> None:
    catalog = Catalog(sessions)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="caller failed"), sessions.begin() as session:
        _write_together(catalog, session)
        raise RuntimeError("caller failed")
    assert time.monotonic() - started < 2.0  # no call waited for the caller's lock
    assert _counts(sessions) == (0, 0, 0, 0)
    with pytest.raises(InputError, match="no endpoint named 'archive'"):
        catalog.endpoint_row("archive")


def test_a_committed_caller_writes_everything_at_once(sessions: sessionmaker[Session]) -> None:
    catalog = Catalog(sessions)
    with sessions.begin() as session:
        _write_together(catalog, session)
        assert _counts(sessions) == (0, 0, 0, 0)  # not visible to others before the commit
    assert _counts(sessions) == (1, 3, 1, 3)
    # Without a session each call is its own transaction, as before.
    catalog.set_replicas(
        [f.id for f in catalog.files()], "archive", ReplicaState.NEARLINE, on_tape=True
    )
    assert {p.replica.state for p in catalog.replicas_on("archive")} == {"nearline"}


def test_a_job_s_input_lookup_gets_each_file_with_its_site_replica_or_none(
    sessions: sessionmaker[Session],
) -> None:
    # What stage-in asks in one query (skybatch.job.replicas.known_inputs): every
    # registered path with its replica on the site endpoint, None where it has none
    # there (a replica elsewhere does not count), unregistered paths left out.
    catalog = Catalog(sessions)
    catalog.add_endpoint("archive", "archive", "/archive")
    catalog.add_endpoint("site:a", "site", "/site")
    catalog.add_endpoint("site:b", "site", "/other")
    ids = catalog.register(_records(3), "archive")
    paths = sorted(ids)
    catalog.set_replicas([ids[paths[0]]], "site:a", ReplicaState.ONLINE)
    catalog.set_verified("site:a", [(ids[paths[0]], 123, 10)])
    catalog.set_replicas([ids[paths[1]]], "site:b", ReplicaState.ONLINE)
    found = catalog.files_with_replica([*paths, "run/x/unknown.fits"], "site:a")
    assert set(found) == set(paths)
    first, replica = found[paths[0]]
    assert first.id == ids[paths[0]] and replica is not None
    assert replica.verified_as(123, 10) and replica.state == "online"
    assert found[paths[1]][1] is None and found[paths[2]][1] is None
