"""The tessera command line."""

from tessera.cli.main import main

__all__ = ["main"]
