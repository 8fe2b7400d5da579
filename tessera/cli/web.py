"""The analyst's web page: ``tessera web`` serves search, the contact card and analytics."""

from __future__ import annotations

import os

import click

from tessera.cli.common import setup_env


@click.command("web", short_help="Serve the read-only web page (search, contact card, analytics).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to bind; anything but a loopback address needs a token")
@click.option("--port", default=8080, show_default=True, type=int, help="port to listen on")
@click.option("--token-env", default="TESSERA_WEB_TOKEN", show_default=True,
              help="environment variable holding the sign-in token (the HTTP Basic password); "
                   "the token is never taken on the command line, where `ps` would show it")
@click.pass_context
def web(ctx: click.Context, host: str, port: int, token_env: str) -> int:
    """Serve the warehouse read-only to a browser until Ctrl-C.

    Each page opens the warehouse read-only and closes it before answering, so the daily
    job can always write; while a run writes, pages answer 503 and say so.
    """
    setup_env(ctx)
    from tessera.settings.paths import tessera_paths
    from tessera.web.app import serve

    token = os.environ.get(token_env) or None
    try:
        serve(tessera_paths()["warehouse"], host=host, port=port, token=token)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return 0


COMMANDS = [web]
