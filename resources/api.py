"""Credentials of API pull sources.

One ``ApiCredentials`` instance is bound per api source, under the key
``api_<source>``, with ``token=dg.EnvVar(<the source's token_env>)``: Dagster then stores
only the variable's name in run records and reads the value when the run starts
(RELIABILITY.md rule 10: a token given as literal run config was stored).
"""

from __future__ import annotations

import dagster as dg


class ApiCredentials(dg.ConfigurableResource):
    """The bearer token of one API source (never logged, never in metadata)."""

    token: str | None = None


def resource_key(source_name: str) -> str:
    return f"api_{source_name}"
