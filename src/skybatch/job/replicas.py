"""What the catalog knows of a job's inputs, and what stage-in learned (seed step 11.1).

Stage-in never lets a job read a site-cache replica nobody verified: it asks the
catalog (the job's ``db_url``) for each input's size and md5 and for when its site
replica was last verified, with the file's ``(mtime_ns, size)`` then. A replica whose
file still has that mtime and size is trusted unread (verified once per modification);
any other is checksummed first. What stage-in finds goes back to the catalog in one
transaction: replicas verified now (with their mtime and size), and replicas found
corrupt (marked ``corrupt``, so later jobs go to the archive and the next pre-stage
replaces them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from skybatch.backbone.models import ReplicaState

from .spec import JobSpec

__all__ = ["KnownInput", "known_inputs", "record_checks"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownInput:
    """An input file as the catalog knows it, with its replica on the job's site cache."""

    file_id: int
    size_bytes: int
    md5: str
    site_state: str | None  # None: no replica on the site cache in the catalog
    verified: tuple[int, int] | None  # (mtime_ns, size) at the replica's last md5 check


def known_inputs(spec: JobSpec) -> dict[str, KnownInput]:
    """Logical path → what the catalog knows, for the inputs it knows (none without db_url)."""
    if not spec.db_url or not spec.inputs:
        return {}
    from .stageout import catalog_reads

    paths = list(dict.fromkeys(item.path for item in spec.inputs))
    with catalog_reads(spec.db_url) as catalog:
        if spec.site_endpoint:
            found = catalog.files_with_replica(paths, spec.site_endpoint)
        else:
            found = {path: (f, None) for path, f in catalog.files_by_paths(paths).items()}
    out: dict[str, KnownInput] = {}
    for path, (f, replica) in found.items():
        verified = None
        if (
            replica is not None
            and replica.verified_mtime_ns is not None
            and replica.verified_size is not None
        ):
            verified = (replica.verified_mtime_ns, replica.verified_size)
        out[path] = KnownInput(
            f.id, f.size_bytes, f.md5, replica.state if replica else None, verified
        )
    return out


def record_checks(
    spec: JobSpec, verified: Sequence[tuple[int, int, int]], corrupt: Sequence[int]
) -> None:
    """Record site replicas verified now ``(file_id, mtime_ns, size)`` and corrupt ones.

    A failure to record is logged, not raised: the job read only verified bytes either
    way, and the next reader checks again.
    """
    if not spec.db_url or not spec.site_endpoint or not (verified or corrupt):
        return
    from .stageout import catalog_transaction

    try:
        with catalog_transaction(spec.db_url) as catalog:
            catalog.set_verified(spec.site_endpoint, verified)
            if corrupt:
                catalog.set_replicas(list(corrupt), spec.site_endpoint, ReplicaState.CORRUPT)
    except Exception as exc:
        _log.warning("could not record the input checks in the catalog: %s", exc)
