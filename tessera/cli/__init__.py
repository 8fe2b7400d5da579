"""The tessera command line (click); ``main(argv) -> int`` is the console script's entry."""

from tessera.cli.app import cli, main

__all__ = ["cli", "main"]
