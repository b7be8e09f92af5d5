"""The file catalog: bulk registration and look-ups of files, replicas and provenance.

All methods work on batches (one transaction per call, chunked ``IN`` look-ups), since
campaigns register and query files by the hundred thousand. Each takes an optional
``session`` to join a caller's transaction instead (several catalog calls and the
caller's own writes then commit or roll back together).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Table,
    Text,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from skybatch.db.models import utcnow

from .errors import ChecksumMismatchError, UnknownEndpointError
from .models import (
    Activity,
    EdgeRelation,
    EndpointRow,
    FileRow,
    ProvenanceEdge,
    ReplicaRow,
    ReplicaState,
    RequestState,
    StageRequest,
    StageRequestFile,
)

__all__ = ["Catalog", "FileInfo", "FileRecord", "Placement", "ReplicaInfo", "data_id_key"]

#: Values per IN (...) look-up: below SQLite's (32766) and psycopg2's bound-parameter
#: limits, large enough that 100,000 look-ups take a few dozen round trips.
CHUNK = 5000


def data_id_key(data_id: Mapping[str, Any]) -> str:
    """A canonical text form of a data id (``band=g,visit=12``) for indexed equality."""
    return ",".join(f"{k}={data_id[k]}" for k in sorted(data_id))


#: The tables the hot paths write with Core statements (no ORM bulk layer).
_FILES: Table = FileRow.__table__  # type: ignore[assignment]
_REPLICAS: Table = ReplicaRow.__table__  # type: ignore[assignment]
_ACTIVITIES: Table = Activity.__table__  # type: ignore[assignment]
_EDGES: Table = ProvenanceEdge.__table__  # type: ignore[assignment]


_FILES_WHERE_IN: dict[tuple[str, bool], Any] = {}


def _files_where_in(column: Any, postgres: bool) -> Any:
    """``SELECT`` the file columns ``WHERE column IN :values``, built once per column
    (a statement built per call cost more than the query, for a job's few files).
    PostgreSQL takes the values as one array parameter (``= ANY(...)``), far cheaper
    than thousands of bound values; SQLite gets an expanding ``IN`` list."""
    key = (column.key, postgres)
    statement = _FILES_WHERE_IN.get(key)
    if statement is None:
        values = (
            any_(bindparam("values", type_=ARRAY(column.type)))
            if postgres
            else bindparam("values", expanding=True)
        )
        condition = column == values if postgres else column.in_(values)
        statement = _FILES_WHERE_IN[key] = select(*_FILE_COLUMNS).where(condition)
    return statement


_FILES_WITH_REPLICA: list[Any] = []


def _files_with_replica() -> Any:
    """Files by path, each with its replica on one endpoint (outer join), built once."""
    if not _FILES_WITH_REPLICA:
        replica = ReplicaRow.__table__
        on = (replica.c.file_id == FileRow.__table__.c.id) & (
            replica.c.endpoint_id == bindparam("e_id")
        )
        _FILES_WITH_REPLICA.append(
            select(*_FILE_COLUMNS, *_REPLICA_COLUMNS)
            .select_from(FileRow.__table__.outerjoin(replica, on))
            .where(FileRow.__table__.c.path.in_(bindparam("paths", expanding=True)))
        )
    return _FILES_WITH_REPLICA[0]


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class FileRecord:
    """What is known about a file when it is registered."""

    path: str
    size_bytes: int
    md5: str
    dataset_id: str | None = None
    dataset_type: str | None = None
    data_id: Mapping[str, Any] | None = None
    run: str | None = None
    producer: str | None = None


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A catalog file as read back (plain data: reads skip the ORM for speed)."""

    id: int
    path: str
    size_bytes: int
    md5: str
    dataset_id: str | None
    dataset_type: str | None
    data_id_json: str | None
    data_id_key: str | None
    run: str | None
    producer: str | None
    created_at: datetime

    @property
    def data_id(self) -> dict[str, Any] | None:
        """The data id, decoded on access (look-ups of 100,000 files skip the JSON)."""
        return None if self.data_id_json is None else json.loads(self.data_id_json)


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A replica as read back."""

    id: int
    file_id: int
    endpoint_id: int
    state: str
    on_tape: bool
    pinned_until: datetime | None
    last_access: datetime
    verified_at: datetime | None
    created_at: datetime
    verified_mtime_ns: int | None = None
    verified_size: int | None = None

    def verified_as(self, mtime_ns: int, size: int) -> bool:
        """Whether the md5 was checked when the file had this mtime and size."""
        return (
            self.verified_at is not None
            and self.verified_mtime_ns == mtime_ns
            and self.verified_size == size
        )


_FILE_COLUMNS = [
    type_coerce(FileRow.__table__.c.data_id, Text).label("data_id_json")
    if f == "data_id_json"
    else FileRow.__table__.c[f]
    for f in FileInfo.__slots__
]
_REPLICA_COLUMNS = [ReplicaRow.__table__.c[f] for f in ReplicaInfo.__slots__]
_N_FILE = len(_FILE_COLUMNS)


@dataclass(frozen=True)
class Placement:
    """A file and one of its replicas."""

    file: FileInfo
    replica: ReplicaInfo
    endpoint: str


class Catalog:
    """Repository over the backbone tables of the state database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # Every method takes an optional ``session``: given, the call joins the caller's
    # transaction (the caller commits or rolls back, and on SQLite no second
    # connection waits for the caller's write lock); without, it runs in its own.
    @contextmanager
    def _write(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with self.sessions.begin() as own:
                yield own

    @contextmanager
    def _read(self, session: Session | None) -> Iterator[Session]:
        if session is not None:
            yield session
        else:
            with self.sessions() as own:
                yield own

    # -- endpoints --------------------------------------------------------------
    def add_endpoint(
        self,
        name: str,
        kind: str,
        root: str,
        settings: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
    ) -> EndpointRow:
        """Define an endpoint; the same definition again is a no-op, a different one an error."""
        from skybatch.errors import InputError

        joined = session is not None
        with self._write(session) as session:
            row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
            wanted = {"kind": kind, "root": root, "settings": dict(settings or {})}
            if row is not None:
                have = {"kind": row.kind, "root": row.root, "settings": row.settings}
                if have != wanted:
                    raise InputError(
                        f"endpoint {name!r} already exists with a different definition",
                        where=name,
                        hint=f"it is {have}; remove it first or use another name",
                    )
            else:
                row = EndpointRow(name=name, **wanted)
                session.add(row)
                session.flush()
            if not joined:  # usable after its own session closed
                session.expunge(row)
            return row

    def endpoints(self, *, session: Session | None = None) -> list[EndpointRow]:
        with self._read(session) as session:
            return list(session.scalars(select(EndpointRow).order_by(EndpointRow.name)))

    def endpoint_row(self, name: str, *, session: Session | None = None) -> EndpointRow:
        with self._read(session) as session:
            row = session.scalar(select(EndpointRow).where(EndpointRow.name == name))
            if row is None:
                known = ", ".join(e.name for e in self.endpoints(session=session)) or "none"
                raise UnknownEndpointError(
                    f"no endpoint named {name!r}",
                    where=name,
                    hint=f"known endpoints: {known}; add one with `skybatch backbone endpoint add`",
                )
            return row

    # -- files ------------------------------------------------------------------
    def register(
        self,
        records: Sequence[FileRecord],
        endpoint: str,
        state: ReplicaState = ReplicaState.ONLINE,
        on_tape: bool = False,
        *,
        verified: Mapping[str, tuple[int, int]] | None = None,
        session: Session | None = None,
    ) -> dict[str, int]:
        """Register files with a replica on ``endpoint``; returns path → file id.

        Idempotent: a path already registered with the same size and md5 keeps its row
        (its replica on ``endpoint`` is set to ``state``); with a different size or md5
        the whole batch is refused (ChecksumMismatchError) and nothing is written.
        ``verified``: path → ``(mtime_ns, size)`` of replicas whose md5 the caller has
        just checked (as :meth:`set_verified` records, in the same statements).
        """
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        now = utcnow()
        with self._write(session) as session:
            existing = self._by_column(session, FileRow.path, [r.path for r in records])
            for record in records:
                old = existing.get(record.path)
                if old is not None and (old.size_bytes, old.md5) != (
                    record.size_bytes,
                    record.md5,
                ):
                    raise ChecksumMismatchError(
                        f"{record.path} is already registered with other content",
                        path=record.path,
                        expected=(old.size_bytes, old.md5),
                        actual=(record.size_bytes, record.md5),
                        where=record.path,
                        hint="a file never changes once registered: write a new path",
                    )
            new = [r for r in records if r.path not in existing]
            ids = {path: info.id for path, info in existing.items()}
            for chunk in _chunks(new):
                # RETURNING (SQLite >= 3.35, PostgreSQL): the new ids without a
                # second look-up, in the executemany's one round trip.
                inserted = session.execute(
                    insert(FileRow).returning(
                        FileRow.path, FileRow.id, sort_by_parameter_order=True
                    ),
                    [
                        {
                            "path": r.path,
                            "size_bytes": r.size_bytes,
                            "md5": r.md5,
                            "dataset_id": r.dataset_id,
                            "dataset_type": r.dataset_type,
                            "data_id": dict(r.data_id) if r.data_id is not None else None,
                            "data_id_key": data_id_key(r.data_id) if r.data_id else None,
                            "run": r.run,
                            "producer": r.producer,
                            "created_at": now,
                        }
                        for r in chunk
                    ],
                )
                ids.update((path, file_id) for path, file_id in inserted)
            by_id = {ids[path]: stat for path, stat in (verified or {}).items() if path in ids}
            self._upsert_replicas(
                session,
                list(ids.values()),
                endpoint_id,
                state,
                on_tape,
                now,
                new={ids[r.path] for r in new},
                verified=by_id,
            )
        return {r.path: ids[r.path] for r in records}

    def _upsert_replicas(
        self,
        session: Session,
        file_ids: Sequence[int],
        endpoint_id: int,
        state: ReplicaState,
        on_tape: bool | None,
        now: datetime,
        *,
        new: set[int] | frozenset[int] = frozenset(),
        verified: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        """Replicas of ``file_ids`` on the endpoint set to ``state`` (created when
        missing). ``new``: files registered in this transaction (they have no replica
        yet: not looked up). ``verified``: file id → ``(mtime_ns, size)`` just checked."""
        verified = verified or {}
        have: set[int] = set()
        for chunk in _chunks([i for i in file_ids if i not in new]):
            have.update(
                session.scalars(
                    select(ReplicaRow.file_id).where(
                        ReplicaRow.endpoint_id == endpoint_id, ReplicaRow.file_id.in_(chunk)
                    )
                )
            )
        # A replica that changes state is not known to be the file last verified.
        values: dict[str, Any] = {
            "state": state.value,
            "verified_mtime_ns": None,
            "verified_size": None,
        }
        if on_tape is not None:
            values["on_tape"] = on_tape
        if state is ReplicaState.ONLINE:
            values["verified_at"] = now
        for chunk in _chunks([i for i in file_ids if i in have]):
            session.execute(
                update(ReplicaRow)
                .where(ReplicaRow.endpoint_id == endpoint_id, ReplicaRow.file_id.in_(chunk))
                .values(**values)
            )
        if verified.keys() & have:
            self.set_verified_ids(
                endpoint_id,
                [(i, *verified[i]) for i in file_ids if i in have and i in verified],
                session=session,
            )
        missing = [i for i in file_ids if i not in have]
        for chunk in _chunks(missing):
            session.connection().execute(
                insert(_REPLICAS),
                [
                    {
                        "file_id": i,
                        "endpoint_id": endpoint_id,
                        "state": state.value,
                        "on_tape": bool(on_tape),
                        "last_access": now,
                        "created_at": now,
                        "verified_at": now if state is ReplicaState.ONLINE else None,
                        "verified_mtime_ns": verified[i][0] if i in verified else None,
                        "verified_size": verified[i][1] if i in verified else None,
                    }
                    for i in chunk
                ],
            )

    def set_replicas(
        self,
        file_ids: Sequence[int],
        endpoint: str,
        state: ReplicaState,
        on_tape: bool | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        """Create or update the replicas of ``file_ids`` on ``endpoint`` (one transaction)."""
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        with self._write(session) as session:
            self._upsert_replicas(session, file_ids, endpoint_id, state, on_tape, utcnow())

    def set_verified(
        self,
        endpoint: str,
        checked: Sequence[tuple[int, int, int]],
        *,
        session: Session | None = None,
    ) -> None:
        """Record that replicas on ``endpoint`` matched their md5 just now.

        ``checked`` holds ``(file_id, mtime_ns, size)``: what ``os.stat`` said of the
        file when it was read; a reader may trust the replica unread while both match.
        """
        if not checked:
            return
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        self.set_verified_ids(endpoint_id, checked, session=session)

    def set_verified_ids(
        self,
        endpoint_id: int,
        checked: Sequence[tuple[int, int, int]],
        *,
        session: Session | None = None,
    ) -> None:
        """:meth:`set_verified` by endpoint id."""
        statement = (
            update(ReplicaRow)
            .where(
                ReplicaRow.endpoint_id == bindparam("e_id"),
                ReplicaRow.file_id == bindparam("f_id"),
            )
            .values(
                verified_at=bindparam("at"),
                verified_mtime_ns=bindparam("mtime_ns"),
                verified_size=bindparam("size"),
            )
        )
        now = utcnow()
        rows = [
            {"e_id": endpoint_id, "f_id": f, "at": now, "mtime_ns": m, "size": s}
            for f, m, s in checked
        ]
        with self._write(session) as session:
            for chunk in _chunks(rows):
                session.connection().execute(statement, list(chunk))

    def drop_replicas(
        self, file_ids: Sequence[int], endpoint: str, *, session: Session | None = None
    ) -> None:
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        with self._write(session) as session:
            for chunk in _chunks(file_ids):
                session.execute(
                    delete(ReplicaRow).where(
                        ReplicaRow.endpoint_id == endpoint_id, ReplicaRow.file_id.in_(chunk)
                    )
                )

    @staticmethod
    def _by_column(session: Session, column: Any, values: Sequence[Any]) -> dict[Any, FileInfo]:
        out: dict[Any, FileInfo] = {}
        unique = list(dict.fromkeys(values))
        key = column.key
        connection = session.connection()
        postgres = connection.dialect.name == "postgresql"
        statement = _files_where_in(column, postgres)
        for chunk in _chunks(unique, 50_000 if postgres else CHUNK):
            rows = connection.execute(statement, {"values": list(chunk)})
            for row in rows:
                info = FileInfo(*row)
                out[getattr(info, key)] = info
        return out

    def files_by_dataset_ids(
        self, dataset_ids: Sequence[str], *, session: Session | None = None
    ) -> dict[str, FileInfo]:
        with self._read(session) as session:
            return self._by_column(session, FileRow.dataset_id, [str(d) for d in dataset_ids])

    def file_ids_by_dataset_ids(
        self, dataset_ids: Sequence[str], *, session: Session | None = None
    ) -> dict[str, int]:
        """dataset id → file id of the registered ones among ``dataset_ids`` (only the
        ids: the provenance edges of a job need no more)."""
        out: dict[str, int] = {}
        with self._read(session) as session:
            for chunk in _chunks(list(dict.fromkeys(str(d) for d in dataset_ids))):
                rows = session.execute(
                    select(FileRow.dataset_id, FileRow.id).where(FileRow.dataset_id.in_(chunk))
                )
                out.update((str(d), int(i)) for d, i in rows)
        return out

    def files_by_paths(
        self, paths: Sequence[str], *, session: Session | None = None
    ) -> dict[str, FileInfo]:
        with self._read(session) as session:
            return self._by_column(session, FileRow.path, paths)

    def files_by_ids(
        self, ids: Sequence[int], *, session: Session | None = None
    ) -> dict[int, FileInfo]:
        with self._read(session) as session:
            return self._by_column(session, FileRow.id, ids)

    def files(
        self,
        *,
        run: str | None = None,
        dataset_type: str | None = None,
        data_id: Mapping[str, Any] | None = None,
        path_prefix: str | None = None,
        session: Session | None = None,
    ) -> list[FileInfo]:
        """Files matching every given criterion (all files when none is given)."""
        query = select(*_FILE_COLUMNS)
        if run is not None:
            query = query.where(FileRow.run == run)
        if dataset_type is not None:
            query = query.where(FileRow.dataset_type == dataset_type)
        if data_id is not None:
            query = query.where(FileRow.data_id_key == data_id_key(data_id))
        if path_prefix is not None:
            query = query.where(FileRow.path.startswith(path_prefix, autoescape=True))
        with self._read(session) as session:
            rows = session.connection().execute(query.order_by(FileRow.path))
            return [FileInfo(*row) for row in rows]

    # -- replicas ---------------------------------------------------------------
    def placements(
        self,
        file_ids: Sequence[int],
        endpoint: str | None = None,
        *,
        session: Session | None = None,
    ) -> list[Placement]:
        """Every replica of the given files (on one endpoint if given)."""
        out: list[Placement] = []
        with self._read(session) as session:
            for chunk in _chunks(list(dict.fromkeys(file_ids))):
                query = (
                    select(*_FILE_COLUMNS, *_REPLICA_COLUMNS, EndpointRow.name)
                    .join(ReplicaRow, ReplicaRow.file_id == FileRow.id)
                    .join(EndpointRow, EndpointRow.id == ReplicaRow.endpoint_id)
                    .where(FileRow.id.in_(chunk))
                )
                if endpoint is not None:
                    query = query.where(EndpointRow.name == endpoint)
                out.extend(_placement(row) for row in session.connection().execute(query))
        return out

    def files_with_replica(
        self, paths: Sequence[str], endpoint: str, *, session: Session | None = None
    ) -> dict[str, tuple[FileInfo, ReplicaInfo | None]]:
        """path → (file, its replica on ``endpoint`` or None), for the registered ones
        among ``paths``: one query (what a job's stage-in asks of its inputs)."""
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        statement = _files_with_replica()
        out: dict[str, tuple[FileInfo, ReplicaInfo | None]] = {}
        with self._read(session) as session:
            connection = session.connection()
            for chunk in _chunks(list(dict.fromkeys(paths))):
                rows = connection.execute(statement, {"paths": list(chunk), "e_id": endpoint_id})
                for row in rows:
                    info = FileInfo(*row[:_N_FILE])
                    replica = None if row[_N_FILE] is None else ReplicaInfo(*row[_N_FILE:])
                    out[info.path] = (info, replica)
        return out

    def replicas_on(
        self,
        endpoint: str,
        states: Iterable[ReplicaState] | None = None,
        *,
        session: Session | None = None,
    ) -> list[Placement]:
        """All replicas on an endpoint, least recently used first."""
        endpoint_row = self.endpoint_row(endpoint, session=session)
        query = (
            select(*_FILE_COLUMNS, *_REPLICA_COLUMNS, EndpointRow.name)
            .join(ReplicaRow, ReplicaRow.file_id == FileRow.id)
            .join(EndpointRow, EndpointRow.id == ReplicaRow.endpoint_id)
            .where(ReplicaRow.endpoint_id == endpoint_row.id)
        )
        if states is not None:
            query = query.where(ReplicaRow.state.in_([s.value for s in states]))
        with self._read(session) as session:
            rows = session.connection().execute(
                query.order_by(ReplicaRow.last_access, ReplicaRow.id)
            )
            return [_placement(row) for row in rows]

    def bytes_on(
        self, endpoint: str, states: Iterable[ReplicaState], *, session: Session | None = None
    ) -> int:
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        with self._read(session) as session:
            total = session.scalar(
                select(func.coalesce(func.sum(FileRow.size_bytes), 0))
                .join(ReplicaRow, ReplicaRow.file_id == FileRow.id)
                .where(
                    ReplicaRow.endpoint_id == endpoint_id,
                    ReplicaRow.state.in_([s.value for s in states]),
                )
            )
        return int(total or 0)

    def pin(
        self,
        file_ids: Sequence[int],
        endpoint: str,
        until: datetime | None,
        *,
        session: Session | None = None,
    ) -> None:
        """Pin replicas until ``until`` (None unpins); a pin only ever extends."""
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        with self._write(session) as session:
            for chunk in _chunks(file_ids):
                base = update(ReplicaRow).where(
                    ReplicaRow.endpoint_id == endpoint_id, ReplicaRow.file_id.in_(chunk)
                )
                if until is None:
                    session.execute(base.values(pinned_until=None))
                else:
                    session.execute(
                        base.where(
                            (ReplicaRow.pinned_until.is_(None)) | (ReplicaRow.pinned_until < until)
                        ).values(pinned_until=until)
                    )

    def touch(
        self, file_ids: Sequence[int], endpoint: str, *, session: Session | None = None
    ) -> None:
        """Record an access (LRU order of site caches)."""
        endpoint_id = self.endpoint_row(endpoint, session=session).id
        now = utcnow()
        with self._write(session) as session:
            for chunk in _chunks(file_ids):
                session.execute(
                    update(ReplicaRow)
                    .where(ReplicaRow.endpoint_id == endpoint_id, ReplicaRow.file_id.in_(chunk))
                    .values(last_access=now)
                )

    # -- provenance -------------------------------------------------------------
    def add_activity(
        self,
        kind: str,
        name: str,
        info: Mapping[str, Any] | None = None,
        *,
        finished: bool = False,
        session: Session | None = None,
    ) -> int:
        """A new activity; ``finished``: it is over already (its end is now)."""
        now = utcnow()
        with self._write(session) as session:
            statement = insert(_ACTIVITIES).returning(_ACTIVITIES.c.id)
            values = {"kind": kind, "name": name, "info": dict(info or {}), "started_at": now}
            if finished:
                values["finished_at"] = now
            return int(session.connection().execute(statement, values).scalar_one())

    def finish_activity(
        self,
        activity_id: int,
        info: Mapping[str, Any] | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        with self._write(session) as session:
            row = session.get(Activity, activity_id)
            if row is not None:
                row.finished_at = utcnow()
                if info:
                    row.info = {**row.info, **info}

    def add_edges(
        self,
        relation: EdgeRelation,
        file_ids: Sequence[int],
        *,
        activity_id: int | None = None,
        other_file_id: int | None = None,
        session: Session | None = None,
    ) -> None:
        """Link files to an activity (used, wasGeneratedBy) or to a file (wasDerivedFrom)."""
        now = utcnow()
        with self._write(session) as session:
            for chunk in _chunks(file_ids):
                session.connection().execute(
                    insert(_EDGES),
                    [
                        {
                            "relation": relation.value,
                            "file_id": f,
                            "activity_id": activity_id,
                            "other_file_id": other_file_id,
                            "created_at": now,
                        }
                        for f in chunk
                    ],
                )

    def provenance(
        self, file_id: int, *, session: Session | None = None
    ) -> list[tuple[str, Activity | None, FileRow | None]]:
        """Edges of one file: (relation, activity, other file)."""
        with self._read(session) as session:
            edges = session.scalars(
                select(ProvenanceEdge).where(ProvenanceEdge.file_id == file_id)
            ).all()
            out = []
            for e in edges:
                activity = session.get(Activity, e.activity_id) if e.activity_id else None
                other = session.get(FileRow, e.other_file_id) if e.other_file_id else None
                out.append((e.relation, activity, other))
            return out

    # -- stage requests ---------------------------------------------------------
    def open_request(
        self,
        kind: str,
        target: str,
        file_ids: Sequence[int],
        n_bytes: int,
        source: str | None = None,
        priority: int = 0,
        *,
        session: Session | None = None,
    ) -> int:
        target_id = self.endpoint_row(target, session=session).id
        source_id = self.endpoint_row(source, session=session).id if source else None
        with self._write(session) as session:
            request = StageRequest(
                kind=kind,
                source_endpoint_id=source_id,
                target_endpoint_id=target_id,
                priority=priority,
                state=RequestState.RUNNING.value,
                n_files=len(file_ids),
                n_bytes=n_bytes,
                started_at=utcnow(),
            )
            session.add(request)
            session.flush()
            for chunk in _chunks(list(dict.fromkeys(file_ids))):
                session.execute(
                    insert(StageRequestFile),
                    [{"request_id": request.id, "file_id": f, "state": "queued"} for f in chunk],
                )
            return request.id

    def close_request(
        self,
        request_id: int,
        state: RequestState,
        message: str = "",
        *,
        session: Session | None = None,
    ) -> None:
        with self._write(session) as session:
            request = session.get(StageRequest, request_id)
            if request is None:
                return
            request.state = state.value
            request.finished_at = utcnow()
            request.message = message or None
            session.execute(
                update(StageRequestFile)
                .where(StageRequestFile.request_id == request_id)
                .values(state=state.value)
            )


def _placement(row: Sequence[Any]) -> Placement:
    return Placement(FileInfo(*row[:_N_FILE]), ReplicaInfo(*row[_N_FILE:-1]), str(row[-1]))
