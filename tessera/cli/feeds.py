"""Feeds: a registry's compatible export, and checking a signed delivery (for receivers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tessera.cli.common import warehouse_and_deployment

REGISTRIES = ["b2c_users", "b2b_companies", "b2b_company_users", "potential_companies"]


@click.group("feeds", short_help="Export feeds and their HTTP delivery.")
def feeds() -> None:
    """Export feeds and their HTTP delivery."""


@feeds.command("verify", short_help="Check a received delivery's signature.")
@click.argument("body", type=click.Path(dir_okay=False, exists=True))
@click.option("--id", "msg_id", required=True, help="the webhook-id header received")
@click.option("--timestamp", required=True, help="the webhook-timestamp header received")
@click.option("--signature", required=True, help="the webhook-signature header received")
@click.option("--secret-env", required=True,
              help="environment variable holding the shared secret (never on the command line)")
@click.option("--tolerance", default=300, show_default=True, type=int,
              help="seconds a timestamp may be away from now")
def verify_cmd(body: str, msg_id: str, timestamp: str, signature: str, secret_env: str,
               tolerance: int) -> int:
    """Verify a delivery: BODY is the raw request body as received (byte for byte).

    Exits 0 and prints the message id when the signature holds; exits 1 and says why
    (bad signature, timestamp too old or too new, missing header) otherwise.
    """
    from tessera.feeds.delivery import SignatureError, verify

    secret = os.environ.get(secret_env)
    if not secret:
        print(f"environment variable {secret_env} is not set", file=sys.stderr)
        return 2
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    try:
        verify(secret, headers, Path(body).read_bytes(), tolerance_s=tolerance)
    except SignatureError as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 1
    print(f"verified {msg_id}")
    return 0


@feeds.command("export-compatible", short_help="A registry's export that re-imports unchanged.")
@click.argument("registry", type=click.Choice(REGISTRIES), metavar="REGISTRY")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the .csv file to write")
@click.option("--source-name", default=None, help="name of the csv source printed for sources.yaml "
              "(default: <registry>_restore)")
@click.option("--node", help="node of that source (default: the first of tree.priority)")
@click.pass_context
def export_compatible_cmd(ctx: click.Context, registry: str, out: str, source_name: str | None,
                          node: str | None) -> int:
    """Write the "compatible" export of REGISTRY (b2c_users, b2b_companies,
    b2b_company_users, potential_companies): its golden records in the layout of its
    import, and print the sources.yaml entry that reads the file back unchanged."""
    from tessera.feeds.compatible import (compatible_export, compatible_source,
                                          compatible_source_yaml)

    con, deployment, _paths = warehouse_and_deployment(ctx)
    try:
        stats = compatible_export(con, deployment, registry, Path(out))
    finally:
        con.close()
    print(f"{registry}: {stats.rows} records -> {out} (sha256 {stats.sha256})")
    name = source_name or f"{registry}_restore"
    src = compatible_source(deployment, registry, name, node or deployment.tree.priority[0],
                            f"{name}/*.csv")
    print("\nto load it back, add this source to sources.yaml and drop the file into "
          f"<landing>/{name}/:\n")
    print(compatible_source_yaml(src), end="")
    return 0


COMMANDS = [feeds]
