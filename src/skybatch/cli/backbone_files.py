"""Shared pieces of ``skybatch backbone`` and its file-selecting commands.

The helpers (file selection, byte sizes, tables, JSON reports) are used by
:mod:`skybatch.cli.backbone` too. Like every CLI module this one imports only click
at load time; the backbone library (SQLAlchemy) is imported inside the commands.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import InputError

if TYPE_CHECKING:
    from skybatch.backbone.catalog import FileInfo
    from skybatch.backbone.service import Backbone
    from skybatch.read.models import ReadModel

__all__ = [
    "FILE_COMMANDS",
    "ByteSize",
    "Selection",
    "check_endpoints",
    "counted",
    "emit",
    "emit_model",
    "endpoint_option",
    "format_bytes",
    "json_option",
    "open_backbone",
    "priority_option",
    "report_lines",
    "select",
    "selection_options",
    "size_of",
    "table",
    "timestamp",
    "transfer_pairs",
]

JSON_SCHEMA_VERSION = 1
"""``schema_version`` of every ``--json`` document printed by ``skybatch backbone``."""

WORKERS_KEY = "skybatch.backbone.workers"
"""Key in ``click.Context.meta`` for ``skybatch backbone --workers``."""

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


# -- numbers, tables, reports ------------------------------------------------------------
def format_bytes(n: int) -> str:
    """``1536`` → ``"1.5 KiB"`` (binary units; exact bytes below 1 KiB)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class ByteSize(click.ParamType):
    """A byte count: ``1048576``, ``10GiB``, ``500MB``, ``1.5T`` (bare K/M/G/T are binary)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE_RE.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a size such as 1048576, 64KiB, 10GiB or 500MB", param, ctx)
        number, prefix, binary, byte = match.groups()
        power = "kmgtp".find(prefix.lower()) + 1 if prefix else 0
        if binary and not prefix:
            self.fail(f"{value!r} is not a size such as 64KiB", param, ctx)
        base = 1000 if (prefix and byte and not binary) else 1024
        return int(float(number) * base**power)


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; naive values from SQLite are UTC (as every skybatch timestamp)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain aligned text table (never truncated, so paths stay copyable)."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def emit(document: Mapping[str, Any], as_json: bool, human: Iterable[str]) -> None:
    """Print ``document`` as versioned JSON (``--json``) or the ``human`` lines."""
    if as_json:
        payload = {"schema_version": JSON_SCHEMA_VERSION, **document}
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        for line in human:
            click.echo(line)


def emit_model(data: ReadModel, as_json: bool, human: Iterable[str]) -> None:
    """Print a read model's JSON (``--json``: what the service returns) or the lines."""
    if as_json:
        from skybatch.read.models import to_json

        click.echo(to_json(data))
    else:
        for line in human:
            click.echo(line)


def report_lines(title: str, pairs: Sequence[tuple[str, object]]) -> list[str]:
    """``title`` and indented ``key: value`` lines, values aligned."""
    width = max(len(key) for key, _ in pairs) + 1
    return [title, *(f"  {key + ':':<{width}} {value}" for key, value in pairs)]


def counted(count: int, n_bytes: int | None = None) -> str:
    """``1,234`` or ``1,234 (5.0 MiB)``."""
    return f"{count:,}" + ("" if n_bytes is None else f" ({format_bytes(n_bytes)})")


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON document instead of text."
)
"""Add ``--json`` (parameter ``as_json``)."""


def endpoint_option(help: str, *, required: bool = True) -> Callable[[F], F]:
    """Add ``--endpoint NAME`` (parameter ``endpoint``)."""
    return click.option("--endpoint", required=required, metavar="NAME", help=help)


priority_option = click.option(
    "--priority", type=values.PRIORITY, default=0, show_default=True, help="Request priority."
)


# -- the backbone and file selection -----------------------------------------------------
def open_backbone(cli: CliContext) -> Backbone:
    """The Data Backbone of this installation (state database from the settings)."""
    from skybatch.backbone.service import Backbone

    ctx = click.get_current_context(silent=True)
    workers = ctx.meta.get(WORKERS_KEY, 2) if ctx is not None else 2
    return Backbone.from_settings(cli.settings, workers=workers)


@dataclass(frozen=True)
class Selection:
    """Which catalog files a command acts on (the shared selection options)."""

    paths: tuple[str, ...] = ()
    dataset_ids: tuple[str, ...] = ()
    run: str | None = None
    dataset_type: str | None = None
    prefix: str | None = None

    def is_empty(self) -> bool:
        return not (self.paths or self.dataset_ids or self.run or self.dataset_type or self.prefix)

    def describe(self) -> str:
        parts = [f"{len(self.paths)} path(s)"] if self.paths else []
        parts += [f"{len(self.dataset_ids)} dataset id(s)"] if self.dataset_ids else []
        for option, value in (
            ("--run", self.run),
            ("--dataset-type", self.dataset_type),
            ("--prefix", self.prefix),
        ):
            if value:
                parts.append(f"{option} {value!r}")
        return ", ".join(parts)


SELECT_HINT = (
    "select files with logical PATH arguments, --dataset-id, --run, --dataset-type or "
    "--prefix, e.g. `skybatch backbone locate --run DemoCam/raw/all`"
)


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared selection options; the command receives ``selection: Selection``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        paths: tuple[str, ...],
        dataset_ids: tuple[str, ...],
        run: str | None,
        dataset_type: str | None,
        prefix: str | None,
        **kwargs: Any,
    ) -> Any:
        selection = Selection(paths, dataset_ids, run, dataset_type, prefix)
        return func(*args, selection=selection, **kwargs)

    options = [
        click.argument("paths", nargs=-1, metavar="[PATH]..."),
        click.option(
            "--dataset-id",
            "dataset_ids",
            multiple=True,
            metavar="UUID",
            help="Butler dataset id (repeatable).",
        ),
        click.option("--run", metavar="RUN", help="Every file of this Butler run (collection)."),
        click.option("--dataset-type", metavar="TYPE", help="Every file of this dataset type."),
        click.option(
            "--prefix", metavar="PREFIX", help="Every file whose logical path starts with PREFIX."
        ),
    ]
    result: Callable[..., Any] = wrapper
    for option in reversed(options):
        result = option(result)
    return result


def select(backbone: Backbone, selection: Selection) -> list[FileInfo]:
    """The catalog files of ``selection``; InputError when it is empty or matches nothing."""
    if selection.is_empty():
        raise InputError("no files selected", where="command line", hint=SELECT_HINT)
    files = backbone.select_files(
        paths=selection.paths,
        dataset_ids=selection.dataset_ids,
        run=selection.run,
        dataset_type=selection.dataset_type,
        path_prefix=selection.prefix,
    )
    if not files:
        raise InputError(
            f"no catalog files match {selection.describe()}",
            where="command line",
            hint="see the runs and dataset types with `skybatch backbone usage --by run`",
        )
    return files


def size_of(files: Sequence[FileInfo]) -> str:
    return f"{len(files):,} file(s), {format_bytes(sum(f.size_bytes for f in files))}"


# -- commands ------------------------------------------------------------------------------
@click.command("locate")
@selection_options
@json_option
@pass_cli_context
def locate_cmd(cli: CliContext, selection: Selection, as_json: bool) -> None:
    """Show files with size, md5 and every replica (endpoint, state, tape, pin).

    \b
    Examples:
      skybatch backbone locate raw/r1/f00.fits
      skybatch backbone locate --run DemoCam/raw/all --json
    """
    from skybatch.read.backbone import locate

    backbone = open_backbone(cli)
    files = select(backbone, selection)
    with backbone.catalog.sessions() as session:
        data = locate(session, [f.id for f in files])
    rows: list[list[object]] = []
    for f in data.files:
        for i, r in enumerate(f.replicas or [None]):
            first = [f.path, format_bytes(f.size_bytes), f.md5] if i == 0 else ["", "", ""]
            if r is None:
                rows.append([*first, "(no replica)", None, "", None])
            else:
                tape = "yes" if r.on_tape else "no"
                rows.append([*first, r.endpoint, r.state, tape, timestamp(r.pinned_until)])
    headers = ["PATH", "SIZE", "MD5", "ENDPOINT", "STATE", "TAPE", "PINNED UNTIL"]
    emit_model(data, as_json, [table(headers, rows), size_of(files)])


@click.command("release")
@selection_options
@endpoint_option("Archive endpoint. [default: the archive]", required=False)
@json_option
@pass_cli_context
def release_cmd(cli: CliContext, selection: Selection, endpoint: str | None, as_json: bool) -> None:
    """Write files to tape and drop their disk copies on the archive (they become nearline).

    Files that are not online on the archive are skipped.

    \b
    Example: skybatch backbone release --run DemoCam/raw/all
    """
    from skybatch.backbone.staging import release_to_tape

    backbone = open_backbone(cli)
    name = endpoint or backbone.archive_name()
    backbone.tape_endpoint(name)
    files = select(backbone, selection)
    released = release_to_tape(backbone, files, name)
    document = {"endpoint": name, "selected": len(files), "released": released}
    emit(document, as_json, [f"released {released:,} of {size_of(files)} to tape on {name}"])


@click.command("recall")
@selection_options
@endpoint_option("Archive endpoint. [default: the archive]", required=False)
@priority_option
@json_option
@pass_cli_context
def recall_cmd(
    cli: CliContext, selection: Selection, endpoint: str | None, priority: int, as_json: bool
) -> None:
    """Bring nearline files back online on the archive, reading each tape volume once.

    \b
    Example: skybatch backbone recall --dataset-type raw --run DemoCam/raw/all
    """
    from skybatch.backbone.staging import recall
    from skybatch.progress import rich_bars

    backbone = open_backbone(cli)
    name = endpoint or backbone.archive_name()
    backbone.tape_endpoint(name)
    files = select(backbone, selection)
    report = recall(backbone, files, name, rich_bars(), priority=priority)
    pairs: list[tuple[str, object]] = [
        ("files recalled", counted(report.files, report.bytes)),
        ("already online", counted(report.already_online)),
        ("tape volumes", report.volumes),
        ("mounts", report.mounts),
        ("seeks", report.seeks),
    ]
    emit({"endpoint": name, **asdict(report)}, as_json, report_lines(f"recall on {name}", pairs))


def transfer_pairs(report: Any) -> list[tuple[str, object]]:
    """Human lines of a ReplicateReport."""
    return [
        ("files copied", counted(report.files, report.bytes)),
        ("already there", counted(report.already_there)),
        ("linked", counted(report.linked)),
        ("recalled from tape", counted(report.recalled)),
        ("evicted", counted(report.evicted, report.evicted_bytes)),
    ]


@click.command("replicate")
@selection_options
@click.option("--to", "target", required=True, metavar="ENDPOINT", help="Target endpoint.")
@click.option(
    "--from",
    "source",
    metavar="ENDPOINT",
    help="Copy only from this endpoint. [default: any online replica, the archive first]",
)
@click.option(
    "--mode",
    type=click.Choice(["copy", "hardlink", "symlink", "auto"]),
    default="copy",
    show_default=True,
    help="copy; hardlink/symlink on the same host; auto = hard link if possible, else copy.",
)
@click.option(
    "--pin-hours",
    type=values.HOURS,
    metavar="H",
    help="Pin the replicas on the target for H hours (not evicted meanwhile).",
)
@priority_option
@json_option
@pass_cli_context
def replicate_cmd(
    cli: CliContext,
    selection: Selection,
    target: str,
    source: str | None,
    mode: str,
    pin_hours: float | None,
    priority: int,
    as_json: bool,
) -> None:
    """Put verified replicas of files on another endpoint (e.g. a site cache).

    Nearline files are recalled from tape first; a site cache evicts its least
    recently used unpinned replicas to make room, and refuses (exit 5, nothing
    copied) when it cannot.

    \b
    Example: skybatch backbone replicate --to site:ncsa --run DemoCam/raw/all --pin-hours 48
    """
    from skybatch.backbone.replication import replicate
    from skybatch.backbone.transfer import TransferMode
    from skybatch.progress import rich_bars

    backbone = open_backbone(cli)
    check_endpoints(backbone, target, source)
    files = select(backbone, selection)
    until = datetime.now(UTC) + timedelta(hours=pin_hours) if pin_hours else None
    report = replicate(
        backbone,
        files,
        target,
        source=source,
        mode=TransferMode(mode),
        pin_until=until,
        progress=rich_bars(),
        priority=priority,
    )
    pairs = transfer_pairs(report) + ([("pinned until", timestamp(until))] if until else [])
    document = {**asdict(report), "pinned_until": timestamp(until)}
    emit(document, as_json, report_lines(f"replicate → {target}", pairs))


def check_endpoints(backbone: Backbone, *names: str | None) -> None:
    """UnknownEndpointError (listing the known ones) for a name that is not defined."""
    for name in names:
        if name is not None:
            backbone.endpoint(name)


@click.command("verify")
@selection_options
@endpoint_option("Endpoint to verify.")
@click.option(
    "--repair/--no-repair",
    default=True,
    show_default=True,
    help="Rewrite bad replicas from another online replica or from tape.",
)
@json_option
@pass_cli_context
def verify_cmd(
    cli: CliContext, selection: Selection, endpoint: str, repair: bool, as_json: bool
) -> None:
    """Re-checksum online replicas on an endpoint; mark and repair corrupt or missing ones.

    Without a selection every online replica on the endpoint is checked. Exits with
    status 5 while a (selected) replica there is corrupt or missing: found now and not
    repaired, or marked by an earlier verify (rewrite those with `replicate --to`).

    \b
    Examples:
      skybatch backbone verify --endpoint site:ncsa
      skybatch backbone verify --endpoint archive --run DemoCam/raw/all --no-repair
    """
    from skybatch.backbone.errors import BackboneError
    from skybatch.backbone.maintenance import verify
    from skybatch.backbone.models import ReplicaState
    from skybatch.progress import rich_bars

    backbone = open_backbone(cli)
    backbone.endpoint(endpoint)
    files = None if selection.is_empty() else select(backbone, selection)
    report = verify(backbone, endpoint, files, repair=repair, progress=rich_bars())
    # The catalog is the truth: whatever is still marked corrupt or missing.
    selected = None if files is None else {f.id for f in files}
    states = [ReplicaState.CORRUPT, ReplicaState.MISSING]
    bad = [
        p.file.path
        for p in backbone.catalog.replicas_on(endpoint, states)
        if selected is None or p.file.id in selected
    ]
    reasons = {path: report.unrepaired.get(path) or "not repaired (--no-repair)" for path in bad}
    pairs: list[tuple[str, object]] = [
        ("checked", counted(report.checked, report.bytes)),
        ("corrupt", counted(len(report.corrupt))),
        ("missing", counted(len(report.missing))),
        ("repaired", counted(len(report.repaired))),
        ("still bad", counted(len(bad))),
    ]
    lines = report_lines(f"verify {endpoint}", pairs)
    lines += [f"  bad: {path}: {reason}" for path, reason in reasons.items()]
    emit({**asdict(report), "still_bad": reasons}, as_json, lines)
    if bad:
        raise BackboneError(
            f"{len(bad)} replica(s) on {endpoint} are corrupt or missing, e.g. {bad[0]}",
            where=f"{endpoint}:{bad[0]}",
            hint=f"rewrite them from another replica with `skybatch backbone replicate --to "
            f"{endpoint} PATH...`; see where copies are with `skybatch backbone locate PATH...`",
        )


FILE_COMMANDS: tuple[click.Command, ...] = (
    locate_cmd,
    release_cmd,
    recall_cmd,
    replicate_cmd,
    verify_cmd,
)
"""The commands of this module, added to the ``skybatch backbone`` group."""
