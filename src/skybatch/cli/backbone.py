"""``skybatch backbone``: thin commands over the Data Backbone (:mod:`skybatch.backbone`).

Shared helpers and the commands that read or move files: :mod:`skybatch.cli.backbone_files`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import click

from skybatch.cli import backbone_files as bf
from skybatch.cli import values
from skybatch.cli.backbone_export import export_refcat
from skybatch.cli.backbone_provenance import provenance_cmd
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import InputError

if TYPE_CHECKING:
    from skybatch.backbone.endpoints.base import Endpoint

__all__ = ["backbone"]


@click.group()
@click.option(
    "--workers",
    type=values.POSITIVE,
    default=2,
    show_default=True,
    help="Parallel transfers and checksums per command.",
)
@click.pass_context
def backbone(ctx: click.Context, workers: int) -> None:
    """Data Backbone: file catalog, archive with tape tier, site caches, verified staging.

    Files are known by logical paths relative to each endpoint's root (for the
    archive: the Butler datastore path). Every copy is written under a temporary
    name, checked against the catalog's size and md5, then renamed into place.

    \b
    Typical session:
      skybatch backbone endpoint add archive --kind archive --root /data/repo
      skybatch backbone endpoint add archive --kind archive --root s3://survey/repo
      skybatch backbone endpoint add site:ncsa --kind site --root /scratch/cache --quota 10TiB
      skybatch backbone register-butler /data/repo --collections DemoCam/raw/all
      skybatch backbone replicate --to site:ncsa --run DemoCam/raw/all
    """
    ctx.meta[bf.WORKERS_KEY] = workers


for _command in bf.FILE_COMMANDS:
    backbone.add_command(_command)
backbone.add_command(export_refcat)
backbone.add_command(provenance_cmd)


# -- endpoints ---------------------------------------------------------------------------
@backbone.group("endpoint")
def endpoint_group() -> None:
    """Define and list endpoints: the archive (disk + tape) and site caches."""


@endpoint_group.command("add")
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(["archive", "site"]), required=True, help="Endpoint kind."
)
@click.option(
    "--root",
    required=True,
    metavar="DIR|URI",
    help="Root directory (created); the archive's is the Butler datastore root, which "
    "may be in an S3 bucket (s3://bucket/prefix).",
)
@click.option("--quota", type=bf.ByteSize(), help="site: cache size, e.g. 10GiB. [default: none]")
@click.option(
    "--shared-fs/--no-shared-fs",
    default=None,
    help="site: compute nodes see the root at the same path. [default: yes]",
)
@click.option(
    "--tape-mount-time-s",
    type=values.SECONDS,
    metavar="X",
    help="archive: seconds per tape mount (emulated tape). [default: 0]",
)
@click.option(
    "--tape-volume-capacity",
    type=bf.ByteSize(),
    help="archive: bytes per tape volume, e.g. 1GiB. [default: 1GiB]",
)
@pass_cli_context
def endpoint_add(
    cli: CliContext,
    name: str,
    kind: str,
    root: str,
    quota: int | None,
    shared_fs: bool | None,
    tape_mount_time_s: float | None,
    tape_volume_capacity: int | None,
) -> None:
    """Define endpoint NAME of a kind at a root directory.

    Site caches are named site:<site>. Defining the same endpoint again is a no-op;
    a different definition under an existing name is refused.

    \b
    Examples:
      skybatch backbone endpoint add archive --kind archive --root /data/repo
      skybatch backbone endpoint add archive --kind archive --root s3://survey/repo
      skybatch backbone endpoint add site:ncsa --kind site --root /scratch/cache --quota 10TiB
    """
    # option → (settings field, value) per kind (SiteSettings, ArchiveSettings.tape)
    by_kind: dict[str, dict[str, tuple[str, Any]]] = {
        "site": {"--quota": ("quota_bytes", quota), "--shared-fs": ("shared_fs", shared_fs)},
        "archive": {
            "--tape-mount-time-s": ("mount_time_s", tape_mount_time_s),
            "--tape-volume-capacity": ("volume_capacity_bytes", tape_volume_capacity),
        },
    }
    for other, options in by_kind.items():
        for option, (_, value) in options.items():
            if other != kind and value is not None:
                raise InputError(
                    f"{option} applies to {other} endpoints, not to kind {kind!r}",
                    where=option,
                    hint=f"drop {option}; see `skybatch backbone endpoint add --help`",
                )
    given = {field: value for field, value in by_kind[kind].values() if value is not None}
    settings = given if kind == "site" else ({"tape": given} if given else {})
    from skybatch.backbone.endpoints.objectstore import is_object_store

    if not is_object_store(root):
        root = str(Path(root).expanduser().resolve())
    ep = bf.open_backbone(cli).add_endpoint(name, kind, root, settings)
    text = _settings_text(settings)
    click.echo(f"endpoint {name}: {kind} at {ep.location}" + (f" ({text})" if text else ""))


def _settings_text(settings: Mapping[str, Any], prefix: str = "") -> str:
    """``quota_bytes=10.0 GiB, tape.mount_time_s=0``: settings for people."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            parts.append(_settings_text(value, f"{prefix}{key}."))
        elif key.endswith("_bytes") and isinstance(value, int):
            parts.append(f"{prefix}{key}={bf.format_bytes(value)}")
        else:
            parts.append(f"{prefix}{key}={value}")
    return ", ".join(p for p in parts if p)


@endpoint_group.command("list")
@bf.json_option
@pass_cli_context
def endpoint_list(cli: CliContext, as_json: bool) -> None:
    """List endpoints with their settings and the files and bytes they hold.

    \b
    Example: skybatch backbone endpoint list --json
    """
    from skybatch.read.backbone import list_endpoints

    bb = bf.open_backbone(cli)
    with bb.catalog.sessions() as session:
        data = list_endpoints(session)
    rows = []
    for e in data.endpoints:
        online = e.replicas.get("online")
        nearline = e.replicas.get("nearline")
        files = bf.counted(online.files if online else 0) + (
            f" (+{nearline.files:,} nearline)" if nearline and nearline.files else ""
        )
        size = bf.format_bytes(online.bytes if online else 0)
        rows.append([e.name, e.kind, files, size, e.root, _settings_text(e.settings)])
    headers = ["NAME", "KIND", "ONLINE FILES", "SIZE", "ROOT", "SETTINGS"]
    human = [bf.table(headers, rows)] if rows else ["no endpoints yet: add one with `endpoint add`"]
    bf.emit_model(data, as_json, human)


# -- registration ------------------------------------------------------------------------
def _logical(ep: Endpoint, path: str) -> str:
    """A logical path; an absolute local path under the endpoint root is converted."""
    base = ep.location.rstrip("/") + "/"
    if not ep.capabilities.local_files and path.startswith(base):  # an object's URI
        return path[len(base) :]
    if not Path(path).is_absolute():
        return path
    try:
        if not ep.capabilities.local_files:
            raise ValueError(path)
        return Path(path).resolve().relative_to(ep.root.resolve()).as_posix()
    except ValueError:
        raise InputError(
            f"{path} is not under the root of endpoint {ep.name} ({ep.location})",
            where=path,
            hint="give logical paths relative to the endpoint root",
        ) from None


@backbone.command("register")
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@bf.endpoint_option("Endpoint holding the files.")
@click.option(
    "--from-dir",
    metavar="SUBDIR",
    help="Also register every file under this sub-directory of the endpoint ('.' = all).",
)
@click.option("--run", metavar="RUN", help="Run (collection) of the new files.")
@click.option("--dataset-type", metavar="TYPE", help="Dataset type of the new files.")
@bf.json_option
@pass_cli_context
def register_cmd(
    cli: CliContext,
    paths: tuple[str, ...],
    endpoint: str,
    from_dir: str | None,
    run: str | None,
    dataset_type: str | None,
    as_json: bool,
) -> None:
    """Register files already on an endpoint (size and md5 are read once).

    PATHs are logical paths relative to the endpoint root. Files already in the
    catalog keep their entry and get a replica on the endpoint.

    \b
    Examples:
      skybatch backbone register --endpoint archive --run calib/flats flats/f1.fits
      skybatch backbone register --endpoint site:ncsa --run out/r3 --from-dir out/r3
    """
    from skybatch.backbone.maintenance import register_paths
    from skybatch.progress import rich_bars

    bb = bf.open_backbone(cli)
    ep = bb.endpoint(endpoint)
    wanted = [_logical(ep, p) for p in paths]
    if from_dir is not None:
        prefix = PurePosixPath(from_dir).as_posix().strip("/")
        prefix = "" if prefix == "." else prefix + "/"
        found = list(ep.iter_files(prefix))
        if not found:
            raise InputError(
                f"no files under {from_dir!r} on endpoint {endpoint}",
                where=f"{ep.location.rstrip('/')}/{prefix}",
                hint="--from-dir is a directory relative to the endpoint root",
            )
        wanted += found
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        raise InputError(
            "no files to register",
            where="command line",
            hint="give logical PATHs or --from-dir SUBDIR",
        )
    known = bb.catalog.files_by_paths(wanted)
    ids = register_paths(
        bb, endpoint, wanted, run=run, dataset_type=dataset_type, progress=rich_bars()
    )
    total = sum(f.size_bytes for f in bb.catalog.files_by_ids(list(ids.values())).values())
    new = len(ids) - len(known)
    line = (
        f"registered {bf.counted(len(ids))} file(s) ({bf.format_bytes(total)}) on {endpoint}: "
        f"{new:,} new, {len(known):,} already known"
    )
    document = {"endpoint": endpoint, "registered": len(ids), "new": new, "bytes": total}
    bf.emit(document, as_json, [line])


@backbone.command("register-butler")
@click.argument("repo")
@click.option(
    "--collections",
    multiple=True,
    required=True,
    metavar="COLLECTION",
    help="Collection to register (repeatable; glob patterns allowed).",
)
@click.option(
    "--dataset-type",
    "dataset_types",
    multiple=True,
    metavar="TYPE",
    help="Only these dataset types (repeatable). [default: all]",
)
@bf.endpoint_option("Endpoint at the datastore root. [default: the archive]", required=False)
@bf.json_option
@pass_cli_context
def register_butler_cmd(
    cli: CliContext,
    repo: str,
    collections: tuple[str, ...],
    dataset_types: tuple[str, ...],
    endpoint: str | None,
    as_json: bool,
) -> None:
    """Register the files of Butler datasets in REPO with their dataset ids and data ids.

    The endpoint's root must be the Butler datastore root. Datasets already in the
    catalog are skipped without being read again.

    \b
    Example: skybatch backbone register-butler /data/repo --collections DemoCam/raw/all
    """
    from skybatch.backbone.butler import register_butler
    from skybatch.progress import rich_bars
    from skybatch.repository import resolve_repository

    repo = str(resolve_repository(repo, where="REPO").location)
    bb = bf.open_backbone(cli)
    name = endpoint or bb.archive_name()
    bb.endpoint(name)
    types = list(dataset_types) or "*"
    report = register_butler(
        bb, repo, list(collections), endpoint=name, dataset_types=types, progress=rich_bars()
    )
    pairs: list[tuple[str, object]] = [
        ("datasets", bf.counted(report.datasets)),
        ("newly registered", f"{bf.counted(report.registered)} file(s)"),
        ("already known", bf.counted(report.already_known)),
        ("bytes", bf.format_bytes(report.bytes)),
    ]
    bf.emit(
        {"endpoint": name, **asdict(report)}, as_json, bf.report_lines(f"register {repo}", pairs)
    )


# -- reports and upkeep --------------------------------------------------------------------
@backbone.command("usage")
@click.option(
    "--by",
    "group_by",
    type=click.Choice(["endpoint", "run", "dataset_type"]),
    default="endpoint",
    show_default=True,
    help="Grouping besides endpoint and replica state.",
)
@bf.json_option
@pass_cli_context
def usage_cmd(cli: CliContext, group_by: str, as_json: bool) -> None:
    """Files and bytes per endpoint and replica state, optionally per run or dataset type.

    \b
    Example: skybatch backbone usage --by run --json
    """
    from skybatch.read.backbone import endpoint_usage

    with bf.open_backbone(cli).catalog.sessions() as session:
        data = endpoint_usage(session, group_by)
    keys = ["endpoint", *([group_by] if group_by != "endpoint" else []), "state"]
    headers = [k.upper().replace("_", " ") for k in keys] + ["FILES", "SIZE"]
    body = [
        [
            row.endpoint,
            *([row.key] if group_by != "endpoint" else []),
            row.state,
            bf.counted(row.files),
            bf.format_bytes(row.bytes),
        ]
        for row in data.rows
    ]
    human = [bf.table(headers, body)] if data.rows else ["no replicas in the catalog yet"]
    bf.emit_model(data, as_json, human)


@backbone.command("recover")
@bf.endpoint_option("Endpoint to settle.")
@bf.json_option
@pass_cli_context
def recover_cmd(cli: CliContext, endpoint: str, as_json: bool) -> None:
    """Settle what a crashed transfer left on an endpoint.

    Replicas still marked staging become online if their file is complete and
    verifies, and are rolled back otherwise; partial copies are removed. Run it only
    while no transfer into the endpoint is running.

    \b
    Example: skybatch backbone recover --endpoint site:ncsa
    """
    from skybatch.backbone.maintenance import recover

    bb = bf.open_backbone(cli)
    bb.endpoint(endpoint)
    report = recover(bb, endpoint)
    pairs: list[tuple[str, object]] = [
        ("completed", bf.counted(report.completed)),
        ("rolled back", bf.counted(report.rolled_back)),
        ("partial copies removed", bf.counted(report.temp_files_removed)),
    ]
    bf.emit(asdict(report), as_json, bf.report_lines(f"recover {endpoint}", pairs))


@backbone.command("stage-back")
@click.option("--site", required=True, metavar="ENDPOINT", help="Site cache holding the run.")
@click.option("--run", required=True, metavar="RUN", help="Run whose files to stage back.")
@click.option("--to", "target", metavar="ENDPOINT", help="Target. [default: the archive]")
@bf.json_option
@pass_cli_context
def stage_back_cmd(cli: CliContext, site: str, run: str, target: str | None, as_json: bool) -> None:
    """Copy a run's online files from a site cache to the archive, verified.

    \b
    Example: skybatch backbone stage-back --site site:ncsa --run u/operator/step1/20250101T000000Z
    """
    from skybatch.backbone.replication import stage_back
    from skybatch.progress import rich_bars

    bb = bf.open_backbone(cli)
    bf.check_endpoints(bb, site, target)
    report = stage_back(bb, site, run, target, progress=rich_bars())
    pairs = bf.transfer_pairs(report)
    bf.emit(asdict(report), as_json, bf.report_lines(f"stage-back {site} → {report.target}", pairs))


@backbone.command("evict")
@bf.selection_options
@bf.endpoint_option("Endpoint to evict from.")
@click.option("--all", "evict_all", is_flag=True, help="Every replica on the endpoint.")
@click.option("--force", is_flag=True, help="Evict pinned replicas too.")
@bf.json_option
@pass_cli_context
def evict_cmd(
    cli: CliContext,
    selection: bf.Selection,
    endpoint: str,
    evict_all: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Drop replicas from a site cache (or the archive's disk front if they are on tape).

    The last online copy of a file is never evicted (use `delete`); pinned replicas
    are kept unless --force.

    \b
    Examples:
      skybatch backbone evict --endpoint site:ncsa --run DemoCam/raw/all
      skybatch backbone evict --endpoint site:ncsa --all
    """
    from skybatch.backbone.maintenance import evict
    from skybatch.backbone.models import ReplicaState

    bb = bf.open_backbone(cli)
    bb.endpoint(endpoint)
    if evict_all and not selection.is_empty():
        raise InputError("--all cannot be combined with a selection", where="--all")
    if evict_all:
        files = [p.file for p in bb.catalog.replicas_on(endpoint, [ReplicaState.ONLINE])]
    else:
        files = bf.select(bb, selection)
    report = evict(bb, endpoint, files, force=force)
    pairs: list[tuple[str, object]] = [
        ("evicted", bf.counted(report.evicted, report.bytes)),
        ("kept, pinned", bf.counted(report.skipped_pinned)),
        ("kept, last copy", bf.counted(report.skipped_last_copy)),
    ]
    bf.emit(asdict(report), as_json, bf.report_lines(f"evict from {endpoint}", pairs))


@backbone.command("delete")
@bf.selection_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@bf.json_option
@pass_cli_context
def delete_cmd(cli: CliContext, selection: bf.Selection, yes: bool, as_json: bool) -> None:
    """Delete files everywhere (every replica, tape copies too) and forget them.

    \b
    Example: skybatch backbone delete --run scratch/tests --yes
    """
    from skybatch.backbone.maintenance import delete

    bb = bf.open_backbone(cli)
    files = bf.select(bb, selection)
    if not yes:
        question = f"Delete {bf.size_of(files)} from every endpoint, tape included?"
        click.confirm(question, abort=True, err=True)
    deleted = delete(bb, files)
    bf.emit({"deleted": deleted}, as_json, [f"deleted {bf.size_of(files)}"])


@backbone.command("pin")
@bf.selection_options
@bf.endpoint_option("Endpoint of the replicas.")
@click.option(
    "--hours",
    required=True,
    type=values.HOURS,
    metavar="H",
    help="Pin for H hours from now (an existing longer pin is kept).",
)
@bf.json_option
@pass_cli_context
def pin_cmd(
    cli: CliContext, selection: bf.Selection, endpoint: str, hours: float, as_json: bool
) -> None:
    """Keep replicas on an endpoint for a while: eviction skips them.

    \b
    Example: skybatch backbone pin --endpoint site:ncsa --run DemoCam/raw/all --hours 72
    """
    _pin(cli, selection, endpoint, datetime.now(UTC) + timedelta(hours=hours), as_json)


@backbone.command("unpin")
@bf.selection_options
@bf.endpoint_option("Endpoint of the replicas.")
@bf.json_option
@pass_cli_context
def unpin_cmd(cli: CliContext, selection: bf.Selection, endpoint: str, as_json: bool) -> None:
    """Remove the pins of replicas on an endpoint (they may be evicted again).

    \b
    Example: skybatch backbone unpin --endpoint site:ncsa --run DemoCam/raw/all
    """
    _pin(cli, selection, endpoint, None, as_json)


def _pin(
    cli: CliContext, selection: bf.Selection, endpoint: str, until: datetime | None, as_json: bool
) -> None:
    bb = bf.open_backbone(cli)
    bb.endpoint(endpoint)
    files = bf.select(bb, selection)
    ids = sorted({p.file.id for p in bb.catalog.placements([f.id for f in files], endpoint)})
    if not ids:
        raise InputError(
            f"none of the {len(files):,} selected file(s) has a replica on {endpoint}",
            where=endpoint,
            hint=f"put them there first with `skybatch backbone replicate --to {endpoint}`",
        )
    bb.catalog.pin(ids, endpoint, until)
    what = f"pinned until {bf.timestamp(until)}" if until else "unpinned"
    document = {"endpoint": endpoint, "replicas": len(ids), "pinned_until": bf.timestamp(until)}
    bf.emit(document, as_json, [f"{what}: {len(ids):,} replica(s) on {endpoint}"])
