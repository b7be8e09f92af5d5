"""``skybatch campaign``: check campaign files and print their schema.

The campaign models (pydantic, LSST middleware) are imported inside the commands so
that ``skybatch --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path

import click

from skybatch.errors import InputError

__all__ = ["campaign"]


@click.group()
def campaign() -> None:
    """Campaigns: pipelines, inputs, calibrations and steps, in one YAML file."""


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check the campaign FILE without running anything or touching any database.

    Reads FILE with its includes and ${VAR} substitutions and reports every problem
    as FILE:LINE:COLUMN: FIELD: what is wrong. What to do (exit status 2).

    \b
    Example:
      skybatch campaign validate campaigns/demo.yaml
    """
    from skybatch.campaign.load import load_campaign

    loaded = load_campaign(file)
    names = ", ".join(step.name for step in loaded.steps)
    count = len(loaded.steps)
    click.echo(
        f"{file}: valid campaign {loaded.name} with {count} step{'s' if count != 1 else ''} "
        f"({names})"
    )


@campaign.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the schema to this file instead of standard output.",
)
def schema(output: Path | None) -> None:
    """Print the JSON schema of campaign files (for editors and validators).

    \b
    Example (refresh the schema shipped with skybatch):
      skybatch campaign schema --output src/skybatch/campaign/campaign.schema.json
    """
    from skybatch.campaign.schema import schema_text

    text = schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    partial = output.with_name(f".{output.name}.skybatch-part")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(
            f"cannot write the schema to {output}: {exc.strerror or exc}",
            where=str(output),
            hint="give a writable file path with --output",
        ) from None
    click.echo(f"wrote the campaign schema to {output}")
