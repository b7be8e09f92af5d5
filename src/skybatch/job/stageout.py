"""Stage-out (seed step 11, last part): outputs to their endpoint, then the catalog.

Each output is copied from the job datastore to the same logical path on the site
cache (``stage_out="site"``) or the archive (``"archive"``) with the backbone's
two-phase write: temporary name, size + md5 compared with what the job measured,
rename. The endpoint is synced once, and only then, when the spec names a state
database, are the files registered in the backbone catalog with their Butler identity
and producer ``job:<name>``, and provenance recorded: one activity per executed quantum,
``wasGeneratedBy`` edges from its outputs and ``used`` edges from those of its inputs
the catalog knows. Registration is idempotent for identical files, so a job whose
stage-out is re-run does not duplicate anything.

All of a job's catalog writes are one transaction (the state database is shared with
the driver and the other workers: one commit, one short write lock): the files are
registered together with their provenance, or nothing is. In a warm worker (see
:mod:`skybatch.job.cache`) the database engine and the endpoint ids are kept between
jobs as well.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from skybatch.backbone.catalog import Catalog, FileRecord
from skybatch.backbone.endpoints.base import Endpoint
from skybatch.backbone.endpoints.objectstore import ObjectStoreEndpoint, is_object_store
from skybatch.backbone.endpoints.posix import PosixEndpoint
from skybatch.backbone.errors import BackboneError
from skybatch.backbone.models import EdgeRelation, EndpointRow
from skybatch.backbone.transfer import write_verified

from .cache import on_clear, process_cache_enabled
from .errors import JobSpecError, StageOutError, SupersededError
from .execute import ExecutedQuantum
from .spec import JobSpec, OutputFileReport
from .stats import PhaseClock

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

__all__ = [
    "StageOutResult",
    "catalog_reads",
    "catalog_transaction",
    "check_current_attempt",
    "stage_out",
    "target_of",
]

_log = logging.getLogger(__name__)


@dataclass
class StageOutResult:
    endpoint: str
    files: int = 0
    bytes: int = 0
    file_ids: dict[str, int] = field(default_factory=dict)  # logical path -> catalog id
    activities: dict[str, int] = field(default_factory=dict)  # quantum id -> activity id


def target_of(spec: JobSpec) -> tuple[str, Path | str]:
    """(endpoint name, root on this host, or the URI of an archive in an object store)
    that outputs go to; JobSpecError if unset."""
    if spec.stage_out == "archive":
        if not spec.archive_root:
            raise JobSpecError(
                "stage_out is 'archive' but archive_root is empty",
                where="archive_root",
                hint="set archive_root to the central archive (Butler datastore) root",
            )
        if is_object_store(spec.archive_root):
            return spec.archive_endpoint, spec.archive_root
        return spec.archive_endpoint, Path(spec.archive_root)
    if not spec.site_root:
        raise JobSpecError(
            "stage_out is 'site' but no site_root is given",
            where="site_root",
            hint="set site_root, or stage_out='archive' on sites without a shared filesystem",
        )
    if spec.db_url and not spec.site_endpoint:
        raise JobSpecError(
            "stage_out is 'site' with a db_url but no site_endpoint to register the files on",
            where="site_endpoint",
            hint="set site_endpoint to the backbone name of the site cache (e.g. site:local)",
        )
    return spec.site_endpoint or "site", Path(spec.site_root)


def stage_out(
    spec: JobSpec,
    datastore: Path,
    outputs: list[OutputFileReport],
    executed: list[ExecutedQuantum],
    clock: PhaseClock | None = None,
) -> StageOutResult:
    """Copy ``outputs`` to their endpoint, verified; register them when ``spec.db_url`` is set.

    Sets ``file_id`` on each registered output. ``clock`` gets the seconds of
    ``stage_out`` (copies and sync) and ``catalog`` (registration).
    """
    clock = clock or PhaseClock()
    with clock.phase("stage_out"):
        if spec.db_url and spec.job_id is not None:
            with catalog_reads(spec.db_url) as catalog, catalog.sessions() as session:
                check_current_attempt(spec, session)
        result = _copy_out(spec, datastore, outputs)
    if spec.db_url:
        with clock.phase("catalog"):
            _register(spec, target_of(spec)[1], result.endpoint, outputs, executed, result)
    return result


def _copy_out(spec: JobSpec, datastore: Path, outputs: list[OutputFileReport]) -> StageOutResult:
    """Verified copies of ``outputs`` on the target endpoint, synced once."""
    name, root = target_of(spec)
    endpoint: Endpoint
    if isinstance(root, str):  # the archive in an object store: spooled, then one PUT each
        endpoint = ObjectStoreEndpoint(name, root, spool_dir=datastore.parent / "spool")
    elif not root.is_dir():
        raise StageOutError(
            f"the stage-out directory {root} of {name} does not exist on this host",
            where=str(root),
            hint="check that the shared filesystem is mounted on this node",
        )
    else:
        endpoint = PosixEndpoint(name, root)
    result = StageOutResult(endpoint=name)
    for output in outputs:
        try:
            write_verified(
                datastore / output.path,
                endpoint,
                output.path,
                (output.size_bytes, output.md5),
                durable=False,
                write_once=spec.stage_out == "archive",  # the archive never replaces a file
            )
        except (BackboneError, OSError) as exc:
            reason = exc.message if isinstance(exc, BackboneError) else str(exc)
            raise StageOutError(
                f"cannot copy output {output.path} ({output.dataset_type}) to {name}: {reason}",
                where=f"{name}:{output.path}",
                hint="check free space and permissions on the target, then retry the job",
            ) from exc
        result.files += 1
        result.bytes += output.size_bytes
    if outputs:
        endpoint.sync()  # durable before the catalog says the files exist
    _log.info("staged out %d file(s), %d bytes, to %s", result.files, result.bytes, name)
    return result


def _stat(root: Path | str, output: OutputFileReport) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of an output's staged file (None: not a local file)."""
    if isinstance(root, str):
        return None
    try:
        info = os.stat(root / output.path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _register(
    spec: JobSpec,
    root: Path | str,
    endpoint: str,
    outputs: list[OutputFileReport],
    executed: list[ExecutedQuantum],
    result: StageOutResult,
) -> None:
    from skybatch.db.engine import database_errors

    assert spec.db_url is not None
    try:
        with (
            database_errors(spec.db_url, "register job outputs in"),
            _one_transaction(spec.db_url) as catalog,
        ):
            if spec.job_id is not None:
                with catalog.sessions() as session:
                    check_current_attempt(spec, session, claim=True)
            records = [_record(spec, o) for o in outputs]
            # Written and md5-checked just now: readers trust them while unchanged.
            verified = {o.path: v for o in outputs if (v := _stat(root, o))}
            file_ids = catalog.register(records, endpoint, verified=verified) if records else {}
            for output in outputs:
                output.file_id = file_ids.get(output.path)
            activities: dict[str, int] = {}
            for item in executed:
                if item.report.status != "skipped":
                    activities[str(item.quantum_id)] = _quantum_provenance(
                        catalog, spec, item, outputs
                    )
    except BaseException:
        for output in outputs:  # rolled back: the report must not claim catalog ids
            output.file_id = None
        raise
    result.file_ids, result.activities = file_ids, activities
    _log.info(
        "registered %d file(s) on %s and %d quantum activities",
        len(result.file_ids),
        endpoint,
        len(result.activities),
    )


def check_current_attempt(spec: JobSpec, session: Session, *, claim: bool = False) -> None:
    """Raise :class:`SupersededError` unless ``spec.attempt`` is the current attempt of
    job ``spec.job_id`` and that job is submitted or running. The scheduler commits an
    attempt before the engine gets it (:mod:`skybatch.run.scheduler`), so the attempt
    running now always passes, and one that outlived its driver (retried since by a
    restart) or whose job was cancelled does not. ``claim``: check with a conditional
    update, in the caller's write transaction, so the check and the registration that
    follows are one atomic step."""
    from sqlalchemy import select

    from skybatch.db.models import utcnow
    from skybatch.run.models import JobRow

    check, claim_it = _attempt_statements()
    values = {"b_id": spec.job_id, "b_attempt": spec.attempt}
    connection = session.connection()
    if claim:
        current = connection.execute(claim_it, {**values, "now": utcnow()})
        ok = getattr(current, "rowcount", 0) == 1
    else:
        ok = connection.execute(check, values).first() is not None
    if not ok:
        row = session.execute(
            select(JobRow.attempts, JobRow.state).where(JobRow.id == spec.job_id)
        ).first()
        now = f"attempt {row[0]} is {row[1]}" if row else "the job is gone from the database"
        raise SupersededError(
            f"job {spec.job} attempt {spec.attempt} is no longer current ({now}): "
            "its outputs are not staged out",
            where=f"job {spec.job} attempt {spec.attempt}",
            hint="nothing to do: the job's current attempt writes them "
            "(this one outlived a killed driver, or the job was cancelled)",
        )


_ATTEMPT_STATEMENTS: list[Any] = []


def _attempt_statements() -> tuple[Any, Any]:
    """The current-attempt check (a select) and claim (an update), built once."""
    if not _ATTEMPT_STATEMENTS:
        from sqlalchemy import Table, bindparam, select, update

        from skybatch.engines.base import JobState
        from skybatch.run.models import JobRow

        jobs = cast(Table, JobRow.__table__)
        live = [JobState.SUBMITTED.value, JobState.RUNNING.value]
        where = (
            jobs.c.id == bindparam("b_id"),
            jobs.c.attempts == bindparam("b_attempt"),
            jobs.c.state.in_(live),
        )
        _ATTEMPT_STATEMENTS.append(select(jobs.c.id).where(*where))
        _ATTEMPT_STATEMENTS.append(update(jobs).where(*where).values(updated_at=bindparam("now")))
    return _ATTEMPT_STATEMENTS[0], _ATTEMPT_STATEMENTS[1]


class _SessionInTransaction:
    """Stands in for a Catalog's sessionmaker: every session it opens, with or without
    ``begin()``, is the one session of an enclosing transaction, which commits or rolls
    back as a whole when that transaction ends."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def __call__(self) -> nullcontext[Session]:
        return nullcontext(self._session)

    def begin(self) -> nullcontext[Session]:
        return nullcontext(self._session)


class _JobCatalog(Catalog):
    """The catalog as a job uses it: endpoint ids come from a per-process cache when
    the caches are on (endpoints are only ever added, never renamed or removed)."""

    def __init__(self, sessions: Any, db_url: str) -> None:
        super().__init__(sessions)
        self._db_url = db_url

    def endpoint_row(self, name: str, *, session: Session | None = None) -> EndpointRow:
        if not process_cache_enabled():
            return super().endpoint_row(name, session=session)
        key = (self._db_url, name)
        row = _endpoint_rows.get(key)
        if row is None:
            found = super().endpoint_row(name, session=session)
            # A plain (transient) copy: the cache must hold no session's object.
            row = EndpointRow(
                id=found.id,
                name=found.name,
                kind=found.kind,
                root=found.root,
                settings=dict(found.settings),
                created_at=found.created_at,
            )
            _endpoint_rows[key] = row
        return row


#: Per-process caches (warm workers): database engines by URL, endpoint rows by
#: (database URL, endpoint name).
_engines: dict[str, Engine] = {}
_endpoint_rows: dict[tuple[str, str], EndpointRow] = {}
_MAX_ENGINES = 4


def catalog_transaction(db_url: str) -> AbstractContextManager[Catalog]:
    """A catalog whose every call runs in one transaction (see :func:`_one_transaction`),
    with the job's per-process database engine cache; for the other in-job phases."""
    return _one_transaction(db_url)


def catalog_reads(db_url: str) -> AbstractContextManager[Catalog]:
    """A catalog for reads only, in one session that takes no write lock (SQLite's
    ``BEGIN IMMEDIATE`` of a write transaction would make a job's lookups wait for the
    other jobs' and the driver's writes, which a WAL database lets readers skip)."""
    return _one_transaction(db_url, write=False)


def _engine(db_url: str, cached: bool) -> Engine:
    """The job's engine on ``db_url`` (the process's one when the caches are on)."""
    from skybatch.db.engine import make_engine

    engine = _engines.get(db_url) if cached else None
    if engine is None:
        # A SQLite connection is a file handle, with no server that may have dropped
        # it: no ping before every transaction.
        engine = make_engine(db_url, pool_pre_ping=not db_url.startswith("sqlite"))
        if cached:
            if len(_engines) >= _MAX_ENGINES:
                _forget_engines()
            _engines[db_url] = engine
    return engine


@contextmanager
def _one_transaction(db_url: str, write: bool = True) -> Iterator[Catalog]:
    """A catalog whose every call runs in one transaction, committed when the block ends
    (``write=False``: one session, rolled back at the end, without the write lock)."""
    from skybatch.db.engine import session_factory

    cached = process_cache_enabled()
    engine = _engine(db_url, cached)
    try:
        sessions = session_factory(engine)
        with sessions.begin() if write else sessions() as session:
            yield _JobCatalog(cast(Any, _SessionInTransaction(session)), db_url)
    except BaseException:
        if cached:  # start the next job afresh: no connection or id that may be stale
            _engines.pop(db_url, None)
            engine.dispose()
            for key in [k for k in _endpoint_rows if k[0] == db_url]:
                del _endpoint_rows[key]
        raise
    finally:
        if not cached:
            engine.dispose()


def _forget_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _endpoint_rows.clear()


on_clear(_forget_engines)


def _record(spec: JobSpec, output: OutputFileReport) -> FileRecord:
    # A component file of a disassembled composite ("type.component": dataset type
    # names have no other dots) shares its parent's dataset id, which is unique in the
    # catalog: it is registered by path and type only, as skybatch.backbone.butler does.
    component = "." in output.dataset_type
    return FileRecord(
        path=output.path,
        size_bytes=output.size_bytes,
        md5=output.md5,
        dataset_id=None if component else output.dataset_id,
        dataset_type=output.dataset_type,
        data_id=output.data_id,
        run=output.run,
        producer=f"job:{spec.job}",
    )


def _quantum_provenance(
    catalog: Catalog, spec: JobSpec, item: ExecutedQuantum, outputs: list[OutputFileReport]
) -> int:
    """One activity for the quantum, with its wasGeneratedBy and used edges."""
    report = item.report
    info: dict[str, Any] = {
        "task_label": report.task_label,
        "data_id": report.data_id,
        "job": spec.job,
        "attempt": spec.attempt,
        "run": spec.run,
        "status": report.status,
        "stats": report.stats.model_dump(mode="json") if report.stats else None,
    }
    if report.error:
        info["error"] = report.error
    activity = catalog.add_activity("quantum", str(item.quantum_id), info, finished=True)
    generated = [
        o.file_id for o in outputs if o.generated_by == report.quantum_id and o.file_id is not None
    ]
    if generated:
        catalog.add_edges(EdgeRelation.WAS_GENERATED_BY, generated, activity_id=activity)
    used_ids: set[uuid.UUID]
    if item.provenance is not None:
        used_ids = set(item.provenance.actual_inputs)
    else:
        used_ids = {ref.id for refs in item.quantum.inputs.values() for ref in refs}
    known = catalog.file_ids_by_dataset_ids([str(i) for i in sorted(used_ids)])
    if known:
        catalog.add_edges(EdgeRelation.USED, list(known.values()), activity_id=activity)
    return activity
