"""The analyst's web page (``tessera web``), and the same search and card in a terminal
(``tessera search``, ``tessera card``): all read-only, through one short read-only session."""

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

    Pages read the snapshot the daily job publishes at its end, so they answer while a
    run writes; before the first publication they read the warehouse (503 while it writes).
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


def _print_table(table) -> None:
    from tessera.web.queries import show

    click.echo(f"\n{table.title}")
    if table.note:
        click.echo(f"  ({table.note})")
    if not table.rows:
        click.echo(f"  {table.empty}")
        return
    cells = [list(table.columns)] + [[show(v).replace("\n", " ") for v in r] for r in table.rows]
    widths = [min(40, max(len(row[i]) for row in cells)) for i in range(len(table.columns))]
    for n, row in enumerate(cells):
        click.echo("  " + " | ".join(c[:40].ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  " + "-+-".join("-" * w for w in widths))


def _reader(ctx: click.Context):
    setup_env(ctx)
    from tessera.settings.paths import tessera_paths
    from tessera.web.snapshot import reader

    return reader(tessera_paths()["warehouse"])


@click.command("search", short_help="Find contacts by name, e-mail, phone, birth year or id.")
@click.argument("words", nargs=-1, required=True)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000),
              help="at most this many contacts, in registry order (surname and name, else e-mail)")
@click.pass_context
def search(ctx: click.Context, words: tuple[str, ...], limit: int) -> int:
    """Contacts matching every one of WORDS (accent- and case-insensitive).

    WORDS are names, e-mails, a birth year, 4+ phone digits or a customer id:
    "tessera search rossi 1980".
    """
    from tessera.engine import WarehouseUnavailable
    from tessera.web import queries

    try:
        with _reader(ctx) as engine:
            table = queries.search(engine, " ".join(words), limit=limit)
    except WarehouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    _print_table(table)
    return 0 if table.rows else 1


@click.command("card", short_help="Print a contact's card (by customer id or e-mail).")
@click.argument("key")
@click.option("--tab", "tabs", multiple=True, default=("profile",), show_default=True,
              help="tab(s) to print, repeatable: profile, identifiers, consents, orders, timeline, "
                   "visits, messages, notes, companies, segments, scores, stages, rfm, predictions, "
                   "recommendations, or all")
@click.pass_context
def card(ctx: click.Context, key: str, tabs: tuple[str, ...]) -> int:
    """Print the card of the customer with id or e-mail KEY, tab by tab."""
    from tessera.engine import WarehouseUnavailable
    from tessera.web import queries

    chosen = [k for k, _ in queries.TABS] if "all" in tabs else list(dict.fromkeys(tabs))
    unknown = sorted(set(chosen) - queries.TAB_KEYS)
    if unknown:
        raise click.BadParameter(f"unknown tab {unknown[0]!r}", param_hint="--tab")
    try:
        with _reader(ctx) as engine:
            cid = queries.find_customer(engine, key)
            row = queries.card(engine, cid) if cid is not None else None
            if row is None:
                raise click.ClickException("no contact card for this id or e-mail")
            sections = [(tab, queries.card_tab(engine, tab, row)) for tab in chosen]
    except WarehouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"contact {row['customer_id']}: {queries.show(row.get('first_name'))} "
               f"{queries.show(row.get('last_name'))}")
    labels = dict(queries.TABS)
    for tab, tables in sections:
        click.echo(f"\n== {labels[tab]} ==")
        for table in tables:
            _print_table(table)
    return 0


COMMANDS = [web, search, card]
