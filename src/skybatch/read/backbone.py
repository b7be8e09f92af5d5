"""Data Backbone reads (seed steps 6-8, 11, 14): endpoints, usage, a file's provenance.

Every function takes a session on the state database (the backbone catalog's tables
live there) and returns read models (:mod:`skybatch.read.models`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, cast

from sqlalchemy import func, null, select
from sqlalchemy.orm import Session

from skybatch.backbone.models import Activity as ActivityRow
from skybatch.backbone.models import EdgeRelation, EndpointRow, FileRow, ProvenanceEdge, ReplicaRow
from skybatch.errors import InputError, NotFoundError

from .models import (
    Activity,
    Endpoint,
    EndpointList,
    EndpointUsage,
    FileEntry,
    FileLocation,
    FileLocations,
    FileProvenance,
    Replica,
    ReplicaCount,
    UsageRow,
)

__all__ = ["USAGE_GROUPS", "endpoint_usage", "file_provenance", "list_endpoints", "locate"]

#: What ``endpoint_usage`` groups by besides endpoint and replica state.
USAGE_GROUPS: dict[str, Any] = {
    "endpoint": None,
    "run": FileRow.run,
    "dataset_type": FileRow.dataset_type,
}


def endpoint_usage(session: Session, by: str = "endpoint") -> EndpointUsage:
    """Files and bytes per endpoint and replica state, and per run or dataset type.

    Raises:
        InputError: ``by`` is not one of :data:`USAGE_GROUPS`.
    """
    if by not in USAGE_GROUPS:
        raise InputError(
            f"cannot group usage by {by!r}",
            where="--by",
            hint=f"use one of: {', '.join(USAGE_GROUPS)}",
        )
    extra = USAGE_GROUPS[by]
    key = extra if extra is not None else null()
    group: list[Any] = [EndpointRow.name, ReplicaRow.state]
    if extra is not None:
        group.insert(1, extra)
    query = (
        select(
            EndpointRow.name,
            key,
            ReplicaRow.state,
            func.count(FileRow.id),
            func.coalesce(func.sum(FileRow.size_bytes), 0),
        )
        .join(ReplicaRow, ReplicaRow.file_id == FileRow.id)
        .join(EndpointRow, EndpointRow.id == ReplicaRow.endpoint_id)
        .group_by(*group)
        .order_by(*group)
    )
    rows = [
        UsageRow(endpoint=e, key=k, state=s, files=int(n), bytes=int(b))
        for e, k, s, n, b in session.execute(query)
    ]
    return EndpointUsage(by=cast(Literal["endpoint", "run", "dataset_type"], by), rows=rows)


def list_endpoints(session: Session) -> EndpointList:
    """Every endpoint, by name, with its files and bytes per replica state."""
    held: dict[str, dict[str, ReplicaCount]] = {}
    for row in endpoint_usage(session).rows:
        held.setdefault(row.endpoint, {})[row.state] = ReplicaCount(
            files=row.files, bytes=row.bytes
        )
    return EndpointList(
        endpoints=[
            Endpoint(
                name=e.name,
                kind=e.kind,
                root=e.root,
                settings=e.settings,
                created_at=e.created_at,
                replicas=held.get(e.name, {}),
            )
            for e in session.scalars(select(EndpointRow).order_by(EndpointRow.name))
        ]
    )


def _file(row: FileRow) -> FileEntry:
    return FileEntry(
        id=row.id,
        path=row.path,
        size_bytes=row.size_bytes,
        md5=row.md5,
        dataset_id=row.dataset_id,
        dataset_type=row.dataset_type,
        data_id=row.data_id,
        run=row.run,
        producer=row.producer,
        created_at=row.created_at,
    )


def locate(session: Session, file_ids: Sequence[int]) -> FileLocations:
    """The files (in the given order) with their replicas, by endpoint name."""
    from skybatch.backbone.catalog import CHUNK

    unique = list(dict.fromkeys(file_ids))
    files: dict[int, FileRow] = {}
    replicas: dict[int, list[Replica]] = {i: [] for i in unique}
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        rows = session.scalars(select(FileRow).where(FileRow.id.in_(chunk)))
        files.update((f.id, f) for f in rows)
        for replica, endpoint in session.execute(
            select(ReplicaRow, EndpointRow.name)
            .join(EndpointRow, EndpointRow.id == ReplicaRow.endpoint_id)
            .where(ReplicaRow.file_id.in_(chunk))
            .order_by(EndpointRow.name)
        ):
            replicas[replica.file_id].append(
                Replica(
                    endpoint=endpoint,
                    state=replica.state,
                    on_tape=replica.on_tape,
                    pinned_until=replica.pinned_until,
                    last_access=replica.last_access,
                    verified_at=replica.verified_at,
                )
            )
    return FileLocations(
        files=[
            FileLocation(**_file(files[i]).model_dump(), replicas=replicas[i])
            for i in unique
            if i in files
        ]
    )


def _activity(row: ActivityRow) -> Activity:
    return Activity(
        id=row.id,
        kind=row.kind,
        name=row.name,
        info=row.info,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def file_provenance(session: Session, file: int | str) -> FileProvenance:
    """What wrote the file (by id or path) from which inputs (calibrations included),
    what read it, and what it was derived from.

    Raises:
        NotFoundError: the catalog has no such file.
    """
    column = FileRow.id if isinstance(file, int) else FileRow.path
    row = session.scalar(select(FileRow).where(column == file))
    if row is None:
        raise NotFoundError(
            f"no file {file!r} in the backbone catalog",
            where=str(file),
            hint="find files with `skybatch backbone locate`",
        )
    edges = session.execute(
        select(ProvenanceEdge.relation, ActivityRow, FileRow)
        .outerjoin(ActivityRow, ActivityRow.id == ProvenanceEdge.activity_id)
        .outerjoin(FileRow, FileRow.id == ProvenanceEdge.other_file_id)
        .where(ProvenanceEdge.file_id == row.id)
        .order_by(ProvenanceEdge.id)
    ).all()
    generated_by, used_by, derived_from = [], [], []
    for relation, activity, other in edges:
        if relation == EdgeRelation.WAS_GENERATED_BY and activity is not None:
            generated_by.append(_activity(activity))
        elif relation == EdgeRelation.USED and activity is not None:
            used_by.append(_activity(activity))
        elif other is not None:
            derived_from.append(_file(other))
    used = select(ProvenanceEdge.file_id).where(
        ProvenanceEdge.relation == EdgeRelation.USED.value,
        ProvenanceEdge.activity_id.in_([a.id for a in generated_by]),
    )
    inputs = session.scalars(
        select(FileRow).where(FileRow.id.in_(used)).order_by(FileRow.path)
    ).all()
    return FileProvenance(
        file=_file(row),
        generated_by=generated_by,
        inputs=[_file(f) for f in inputs],
        used_by=used_by,
        derived_from=derived_from,
    )
