"""``skybatch backbone provenance``: where a catalog file came from and what used it
(seed steps 11-12: the provenance the job wrapper and the ingest recorded)."""

from __future__ import annotations

import click

from skybatch.cli import backbone_files as bf
from skybatch.cli.context import CliContext, pass_cli_context

__all__ = ["provenance_cmd"]


@click.command("provenance")
@click.argument("file", metavar="PATH|ID")
@bf.json_option
@pass_cli_context
def provenance_cmd(cli: CliContext, file: str, as_json: bool) -> None:
    """What wrote the catalog file PATH (or file id ID), from which inputs and
    calibrations, what read it, and what it was derived from.

    \b
    Example: skybatch backbone provenance DemoCam/runs/.../deepCoadd_....fits --json
    """
    from skybatch.read.backbone import file_provenance

    key: int | str = int(file) if file.isdigit() else file
    with bf.open_backbone(cli).catalog.sessions() as session:
        data = file_provenance(session, key)
    f = data.file
    lines = [f"{f.path}: {bf.format_bytes(f.size_bytes)}, md5 {f.md5}"]
    if f.dataset_type:
        lines.append(f"  dataset: {f.dataset_type} {f.data_id or {}} in run {f.run}")
    for a in data.generated_by:
        task = a.info.get("task_label")
        lines.append(f"  written by {a.kind} {a.name}" + (f" ({task})" if task else ""))
    if data.inputs:
        lines.append(f"  from {len(data.inputs)} input file(s):")
        lines.extend(f"    {i.dataset_type or '-'} {i.path}" for i in data.inputs)
    for a in data.used_by:
        task = a.info.get("task_label")
        lines.append(f"  read by {a.kind} {a.name}" + (f" ({task})" if task else ""))
    lines.extend(f"  derived from {d.path}" for d in data.derived_from)
    bf.emit_model(data, as_json, lines)
