"""Feeds: checking a signed delivery (for receivers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


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


COMMANDS = [feeds]
