"""``skybatch token``: bearer tokens of the operations service (seed step 2; issue 14,
item 3): create (the secret is printed once, only its hash is stored), list, revoke."""

from __future__ import annotations

import json

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context

__all__ = ["token"]


@click.group()
def token() -> None:
    """Bearer tokens for `skybatch serve`: viewer reads, operator acts, admin manages."""


@token.command()
@click.option("--name", required=True, help="Who uses it; the actor of its actions.")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin"]),
    required=True,
    help="viewer reads; operator also acts on campaigns; admin also manages tokens.",
)
@click.option(
    "--expires",
    "expires_days",
    type=values.POSITIVE,
    default=None,
    metavar="DAYS",
    help="Valid this many days. [default: no expiry]",
)
@pass_cli_context
def create(cli: CliContext, name: str, role: str, expires_days: int | None) -> None:
    """Create a token and print its secret (shown this once; only its hash is kept).

    \b
    Example:
      skybatch token create --name alice --role operator --expires 90
    """
    from skybatch.auth.tokens import create_token
    from skybatch.db.state import open_state_db

    with open_state_db(cli.settings).begin() as session:
        created = create_token(session, name, role, expires_days)
    click.echo(created.token)
    expiry = f"until {created.expires:%Y-%m-%d %H:%M} UTC" if created.expires else "no expiry"
    click.echo(f"token {name!r} ({role}, {expiry}): keep it, it is not shown again", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli_context
def list_cmd(cli: CliContext, as_json: bool) -> None:
    """List the tokens: name, role, created, expires, revoked, last used (no secrets)."""
    from skybatch.auth.tokens import list_tokens
    from skybatch.db.state import open_state_db

    with open_state_db(cli.settings)() as session:
        rows = list_tokens(session)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    if not rows:
        click.echo("no tokens (`skybatch token create --name N --role R` makes one)")
        return

    def when(value: object) -> str:
        return "-" if value is None else f"{value:%Y-%m-%d %H:%M}"

    click.echo(f"{'name':<24} {'role':<9} {'status':<8} {'created':<16} {'expires':<16} last used")
    for r in rows:
        state = "active" if r.active else ("revoked" if r.revoked else "expired")
        click.echo(
            f"{r.name:<24} {r.role:<9} {state:<8} {when(r.created):<16} "
            f"{when(r.expires):<16} {when(r.last_used)}"
        )


@token.command()
@click.argument("name")
@pass_cli_context
def revoke(cli: CliContext, name: str) -> None:
    """Revoke the token NAME: its next request is refused (401)."""
    from skybatch.auth.tokens import revoke_token
    from skybatch.db.state import open_state_db

    with open_state_db(cli.settings).begin() as session:
        revoke_token(session, name)
    click.echo(f"token {name!r} revoked")
