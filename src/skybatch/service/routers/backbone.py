"""``/api/backbone`` and ``/api/files``: the Data Backbone's endpoints and usage, where
files are and a file's provenance (viewer; seed steps 6-8, 11 and 14)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from skybatch.read import backbone as reads
from skybatch.read.dashboard import BackboneStorage, backbone_storage
from skybatch.read.models import EndpointList, EndpointUsage, FileLocations, FileProvenance

from ..deps import SessionDep, Viewer

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["backbone"])


@router.get("/backbone/endpoints", response_model=EndpointList)
def endpoints(session: SessionDep, _: Viewer) -> EndpointList:
    """The endpoints with the replicas they hold per replica state."""
    return reads.list_endpoints(session)


@router.get("/backbone/usage", response_model=EndpointUsage)
def usage(
    session: SessionDep,
    _: Viewer,
    by: Literal["endpoint", "run", "dataset_type"] = "endpoint",
) -> EndpointUsage:
    """Files and bytes per endpoint and replica state (and run or dataset type)."""
    return reads.endpoint_usage(session, by)


@router.get("/backbone/storage", response_model=BackboneStorage)
def storage(session: SessionDep, _: Viewer) -> BackboneStorage:
    """Per endpoint: online, cached, pinned, nearline and staging replicas, and the files
    waiting on an unfinished tape recall to it."""
    return backbone_storage(session)


@router.get("/files", response_model=FileLocations)
def locate(
    session: SessionDep,
    _: Viewer,
    ids: Annotated[list[int], Query(alias="id", description="file ids; repeat for several")],
) -> FileLocations:
    """The files with every replica (`skybatch backbone locate`)."""
    return reads.locate(session, ids)


@router.get("/files/provenance", response_model=FileProvenance)
def provenance_by_path(
    session: SessionDep, _: Viewer, path: Annotated[str, Query(description="catalog path")]
) -> FileProvenance:
    """What wrote the file at ``path``, from which inputs and calibrations; what read it."""
    return reads.file_provenance(session, path)


@router.get("/files/{file_id}/provenance", response_model=FileProvenance)
def provenance(file_id: int, session: SessionDep, _: Viewer) -> FileProvenance:
    """What wrote the file, from which inputs and calibrations; what read it."""
    return reads.file_provenance(session, file_id)
