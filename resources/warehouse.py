"""The warehouse resource: dagster-duckdb's DuckDBResource, offline settings applied.

dagster-duckdb-polars fails at run time on duckdb 2.0, so assets run SQL through a
plain DuckDBResource connection. The extension auto-install/auto-load settings are
switched off because Tessera must work with no internet access.
"""

from __future__ import annotations

from dagster_duckdb import DuckDBResource

from tessera.warehouse import OFFLINE_SETTINGS


def warehouse_resource(path: str, memory_limit: str | None = None) -> DuckDBResource:
    config = dict(OFFLINE_SETTINGS)
    if memory_limit:
        config["memory_limit"] = memory_limit
    return DuckDBResource(database=path, connection_config=config)
