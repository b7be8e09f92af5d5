"""``skybatch serve``: the operations service over HTTP (seed step 2; issue 14, item 2).

Binds to 127.0.0.1 by default. Any other address is refused unless at least one
active token exists (``skybatch token create``): every /api request then needs one,
and an address others can reach must not be served before anyone could be let in.
"""

from __future__ import annotations

import ipaddress

import click

from skybatch.cli import values
from skybatch.cli.context import CliContext, pass_cli_context
from skybatch.errors import InputError

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=values.PORT, default=8080, show_default=True, help="TCP port.")
@click.option(
    "--with-manager",
    is_flag=True,
    help="Also run the campaign manager in this process (else `skybatch manager run` "
    "runs beside it).",
)
@click.option(
    "--poll-s",
    type=values.finite(0.1, max=86400.0),
    default=10.0,
    show_default=True,
    help="With --with-manager: seconds between manager passes.",
)
@pass_cli_context
def serve(cli: CliContext, host: str, port: int, with_manager: bool, poll_s: float) -> None:
    """Serve the REST API over the state database (OpenAPI docs at /docs).

    Every /api and /metrics request needs a bearer token (`skybatch token create`);
    /healthz needs none. `skybatch manager run` runs the campaigns beside it, or
    --with-manager in the same process.

    \b
    Example:
      skybatch token create --name alice --role operator
      skybatch serve --port 8080
    """
    from skybatch.auth.tokens import has_tokens
    from skybatch.db.state import open_state_db

    sessions = open_state_db(cli.settings)
    if not is_loopback(host):
        with sessions() as session:
            if not has_tokens(session):
                raise InputError(
                    f"refusing to listen on {host}: no active token exists, so nobody "
                    "could use the service and an open port would be served to everyone "
                    "who finds it",
                    where="--host",
                    hint="create a token first (`skybatch token create --name N --role "
                    "admin`) or listen on 127.0.0.1",
                )
    import uvicorn

    from skybatch.service.app import create_app

    runner = None
    if with_manager:
        from skybatch.service.manager import ManagerThread

        runner = ManagerThread(cli.settings, poll_s=poll_s)
    app = create_app(cli.settings, sessions=sessions, manager=runner)
    click.echo(f"serving skybatch on http://{host}:{port} (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")
